"""DL 09L - SHAP for CNNs: which pixels made the network say "7"?

The course lab trains a CNN on MNIST and explains it with SHAP. Offline, scikit-learn's 8x8
digits (1,797 images, shipped with the package) stand in for MNIST (``--download`` fetches MNIST
with ``keras.datasets.mnist.load_data()``). The digits are written as PNG files in one folder per
class, ``deepspark.train`` fits its CNN on the folder, and ``deepspark.explain(method="shap")``
runs SHAP's partition explainer with an image masker; every image gets an overlay, the raw
attributions (``.npy``) and its additivity error.

Command line equivalent::

    deepspark train --data digits/ --model cnn --image-size 32 --json
    deepspark explain --model models:/m-... --data digits/ --method shap --rows 8 --output shap/

Run: ``python examples/dl09l_shap_cnn.py [--tiny] [--data FOLDER] [--download]``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def write_digits(folder: Path, *, per_class: int | None, download: bool) -> Path:
    """Digits as grayscale PNGs in ``folder/<digit>/``: MNIST when downloading, else sklearn's."""
    import numpy as np
    from PIL import Image

    if download:
        import keras

        (images, labels), _ = keras.datasets.mnist.load_data()
    else:
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = (digits.images * (255.0 / 16.0)).astype(np.uint8)  # 0..16 -> 0..255
        labels = digits.target
    counts: dict[int, int] = {}
    for image, label in zip(images, labels, strict=True):
        label = int(label)
        if per_class is not None and counts.get(label, 0) >= per_class:
            continue
        counts[label] = counts.get(label, 0) + 1
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / str(label) / f"{counts[label]:05d}.png")
    return folder


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="DL 09L: SHAP on a CNN's pixels.")
    parser.add_argument("--tiny", action="store_true", help="20 images per digit, 1 epoch")
    parser.add_argument("--data", help="an image folder with one subfolder per class")
    parser.add_argument("--output", default="lab-output/dl09l")
    parser.add_argument("--download", action="store_true", help="MNIST instead of sklearn digits")
    args = parser.parse_args(argv)

    import deepspark

    output = Path(args.output)
    data = (
        Path(args.data)
        if args.data
        else write_digits(
            output / "digits", per_class=20 if args.tiny else None, download=args.download
        )
    )
    result = deepspark.train(
        str(data),
        "label",
        model="cnn",
        image_size=16 if args.tiny else 32,
        filters=(8, 16) if args.tiny else (32, 64),
        epochs=1 if args.tiny else 20,
        batch_size=32,
        run_name="dl09l-digits-cnn",
    )
    explanation = deepspark.explain(
        result.model_uri,
        str(data),
        method="shap",
        rows=2 if args.tiny else 8,
        background=4 if args.tiny else 50,
        options={"max_evals": 64 if args.tiny else 500},
        output=output / "shap",
        overwrite=True,
    )
    overlays = sorted(str(path) for path in (output / "shap" / "overlays").glob("*.png"))
    figures = {
        "lab": "DL09L",
        "run_id": result.run_id,
        "model_uri": result.model_uri,
        "test_accuracy": result.metrics.get("test_accuracy"),
        "explained_images": explanation.summary["rows"],
        "max_additivity_error": explanation.summary["max_additivity_error"],
        "overlays": overlays,
        "output": str(output / "shap"),
    }
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
