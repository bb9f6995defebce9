"""DL 10b - Data augmentation: random flips, rotations, zoom and contrast while training.

The course shows augmented copies of a few images, then trains with augmentation to fight
overfitting on a small image set. In deepspark, ``augment=True`` puts the augmentation layers
inside the model (active in training only; scoring sees the plain image). This lab draws a grid
of augmented copies with the same kind of Keras layers, then trains a CNN on CIFAR-10 photos with
and without augmentation.

Data: the shared CIFAR-10 JPEGs (``../shared/data/images/cifar10_test_jpg.tar.gz``, extracted
here), or ``keras.datasets.cifar10.load_data()`` with ``--download``.

Command line equivalent::

    deepspark train --data cifar10/ --model cnn --image-size 32 --augment --json

Run: ``python examples/dl10b_augmentation.py [--tiny] [--data FOLDER] [--download]``.
"""

from __future__ import annotations

import argparse
import json
import tarfile
from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
ARCHIVE = SHARED_DATA / "images" / "cifar10_test_jpg.tar.gz"
CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def extract_cifar(target: Path, classes: list[str], per_class: int | None) -> Path:
    """``target/<class>/NNNN.jpg`` for the chosen classes, from the shared archive."""
    counts: dict[str, int] = {}
    with tarfile.open(ARCHIVE) as archive:
        for member in archive:
            parts = Path(member.name).parts  # cifar10_test_jpg/test/<class>/NNNN.jpg
            if not member.isfile() or len(parts) != 4 or parts[2] not in classes:
                continue
            if per_class is not None and counts.get(parts[2], 0) >= per_class:
                continue
            counts[parts[2]] = counts.get(parts[2], 0) + 1
            destination = target / parts[2] / parts[3]
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_bytes(archive.extractfile(member).read())
    return target


def download_cifar(target: Path, classes: list[str], per_class: int | None) -> Path:
    import keras
    from PIL import Image

    (images, labels), _ = keras.datasets.cifar10.load_data()
    counts: dict[str, int] = {}
    for image, label in zip(images, labels.ravel(), strict=True):
        name = CIFAR10[int(label)]
        if name not in classes or (per_class is not None and counts.get(name, 0) >= per_class):
            continue
        counts[name] = counts.get(name, 0) + 1
        (target / name).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(target / name / f"{counts[name]:05d}.png")
    return target


def augmented_grid(folder: Path, path: Path, copies: int = 6) -> str:
    """One photo and ``copies`` random augmentations of it, side by side."""
    import keras
    import numpy as np
    from PIL import Image

    photo = np.asarray(Image.open(sorted(folder.rglob("*.*"))[0]).convert("RGB"), "float32")
    augment = keras.Sequential(
        [
            keras.layers.RandomFlip("horizontal", seed=0),
            keras.layers.RandomRotation(0.1, seed=1),
            keras.layers.RandomZoom(0.2, seed=2),
            keras.layers.RandomContrast(0.3, seed=3),
        ]
    )
    batch = np.repeat(photo[None], copies, axis=0)
    augmented = keras.ops.convert_to_numpy(augment(batch, training=True))
    row = np.concatenate([photo, *augmented], axis=1).clip(0, 255).astype("uint8")
    Image.fromarray(row).resize((row.shape[1] * 4, row.shape[0] * 4)).save(path)
    return str(path)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="DL 10b: data augmentation.")
    parser.add_argument("--tiny", action="store_true", help="2 classes x 40 photos, 1 epoch")
    parser.add_argument("--data", help="an image folder with one subfolder per class")
    parser.add_argument("--output", default="lab-output/dl10b")
    parser.add_argument("--download", action="store_true", help="CIFAR-10 from Keras (online)")
    args = parser.parse_args(argv)

    import deepspark

    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    classes = ["cat", "dog"] if args.tiny else CIFAR10
    per_class = 40 if args.tiny else None
    if args.data:
        data = Path(args.data)
    elif args.download:
        data = download_cifar(output / "cifar10", classes, per_class)
    else:
        data = extract_cifar(output / "cifar10", classes, per_class)
    grid = augmented_grid(data, output / "augmented.png")

    settings = {
        "model": "cnn",
        "image_size": 32,
        "filters": (8, 16) if args.tiny else (32, 64, 128),
        "epochs": 1 if args.tiny else 30,
        "batch_size": 32,
    }
    figures = {"lab": "DL10b", "augmented_grid": grid, "data": str(data)}
    # --tiny trains the augmented network only; full size compares it with the plain one.
    for augment in (True,) if args.tiny else (False, True):
        result = deepspark.train(
            str(data), "label", augment=augment, run_name=f"dl10b-augment-{augment}", **settings
        )
        name = "augmented" if augment else "plain"
        figures[name] = {
            "run_id": result.run_id,
            "val_accuracy": result.metrics.get("val_accuracy"),
            "test_accuracy": result.metrics.get("test_accuracy"),
        }
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
