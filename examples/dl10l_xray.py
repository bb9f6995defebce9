"""DL 10L - The X-ray lab: binary image classification with class weights.

The course classifies chest X-rays (pneumonia vs normal; about three pneumonia images for every
normal one) and weights the classes so that the rare one counts as much. The Kaggle chest X-ray
data needs a download and an account, so offline this lab generates grayscale "X-rays": soft
noise with two darker lung fields, and for "pneumonia" a few bright, blurry opacities in them,
three pneumonia images for each normal one. Give your own folder (``chest_xray/`` with
``train/``, ``val/``, ``test/`` and ``NORMAL`` / ``PNEUMONIA`` inside) with ``--data``.

Command line equivalent::

    deepspark train --data chest_xray/ --model cnn --image-size 64 --class-weight balanced --json

Run: ``python examples/dl10l_xray.py [--tiny] [--data FOLDER]``; prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def fake_xray(rng, size: int, pneumonia: bool):
    """A grayscale image: noise, two darker lung fields and, for pneumonia, bright opacities."""
    import numpy as np

    rows, cols = np.mgrid[0:size, 0:size] / size
    image = 0.55 + 0.08 * rng.standard_normal((size, size))
    for centre in (0.3, 0.7):  # the two lungs: darker ellipses
        lung = ((cols - centre) / 0.16) ** 2 + ((rows - 0.5) / 0.32) ** 2 < 1
        image[lung] -= 0.3
    if pneumonia:
        for _ in range(rng.integers(2, 5)):
            y, x = rng.uniform(0.25, 0.75), rng.choice([0.3, 0.7]) + rng.uniform(-0.08, 0.08)
            image += 0.45 * np.exp(-(((rows - y) ** 2 + (cols - x) ** 2) / (2 * 0.06**2)))
    return (image.clip(0, 1) * 255).astype("uint8")


def write_xrays(folder: Path, *, normal: int, size: int, seed: int = 0) -> Path:
    """``folder/{train,val,test}/{NORMAL,PNEUMONIA}/*.png``, three pneumonia per normal image."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, share in (("train", 0.7), ("val", 0.15), ("test", 0.15)):
        for label, count in (("NORMAL", normal), ("PNEUMONIA", 3 * normal)):
            destination = folder / split / label
            destination.mkdir(parents=True, exist_ok=True)
            for index in range(max(2, round(count * share))):
                image = fake_xray(rng, size, pneumonia=label == "PNEUMONIA")
                Image.fromarray(image, mode="L").save(destination / f"{index:05d}.png")
    return folder


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="DL 10L: X-ray classification, class weights.")
    parser.add_argument("--tiny", action="store_true", help="160 images of 32 px, 2 epochs")
    parser.add_argument("--data", help="a chest_xray folder (train/val/test, NORMAL/PNEUMONIA)")
    parser.add_argument("--output", default="lab-output/dl10l")
    args = parser.parse_args(argv)

    import deepspark

    size = 32 if args.tiny else 64
    data = (
        Path(args.data)
        if args.data
        else write_xrays(Path(args.output) / "xrays", normal=40 if args.tiny else 400, size=size)
    )
    counts = {
        label: len(list(data.glob(f"train/{label}/*")))
        for label in sorted(path.name for path in (data / "train").iterdir())
    }
    result = deepspark.train(
        str(data),
        "label",
        model="cnn",
        image_size=size,
        filters=(8, 16) if args.tiny else (32, 64, 128),
        class_weight="balanced",  # each class weighs rows / (classes x its count)
        epochs=2 if args.tiny else 30,
        batch_size=32,
        run_name="dl10l-xray",
    )
    figures = {
        "lab": "DL10L",
        "run_id": result.run_id,
        "model_uri": result.model_uri,
        "task": result.task,
        "train_counts": counts,
        "rows": result.rows,
        "test_accuracy": result.metrics.get("test_accuracy"),
        "test_auc": result.metrics.get("test_auc"),
    }
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
