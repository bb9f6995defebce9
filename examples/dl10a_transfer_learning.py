"""DL 10a - Transfer learning: an ImageNet MobileNetV2 learns ants vs bees.

The course freezes a pretrained MobileNetV2, trains a new head on a small photo folder, then
unfreezes the top of the base and fine-tunes it at a lower rate. ``deepspark.train(base=...)``
does both phases in one MLflow run: the base's ``preprocess_input`` is a layer inside the model,
its BatchNorm layers stay frozen (ImageNet statistics), fine-tuning starts from the head phase's
best weights, and the folder's own ``train/`` and ``val/`` splits are kept (a test split is
carved from ``val/`` when there is no ``test/``).

Command line equivalent::

    deepspark train --data ../shared/data/images/hymenoptera --base mobilenet_v2 \
        --weights ../shared/data/images/weights/mobilenet_v2_0.35_224_imagenet_no_top.weights.h5 \
        --base-option alpha=0.35 --image-size 160 --fine-tune-layers 30 --fine-tune-epochs 5

Run: ``python examples/dl10a_transfer_learning.py [--tiny] [--data FOLDER] [--download]``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
WEIGHTS = SHARED_DATA / "images" / "weights" / "mobilenet_v2_0.35_224_imagenet_no_top.weights.h5"


def small_copy(source: Path, target: Path, per_class: int) -> Path:
    """The first ``per_class`` JPEGs of each split and class, as links (nothing is copied)."""
    for split in ("train", "val"):
        for label_folder in sorted((source / split).iterdir()):
            destination = target / split / label_folder.name
            destination.mkdir(parents=True, exist_ok=True)
            for photo in sorted(label_folder.glob("*.jpg"))[:per_class]:
                link = destination / photo.name
                if not link.exists():
                    os.symlink(photo.resolve(), link)
    return target


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="DL 10a: transfer learning with MobileNetV2.")
    parser.add_argument("--tiny", action="store_true", help="12 photos per class, 32 px, 1 epoch")
    parser.add_argument("--data", default=str(SHARED_DATA / "images" / "hymenoptera"))
    parser.add_argument("--output", default="lab-output/dl10a")
    parser.add_argument("--download", action="store_true", help="Keras' ImageNet weights (online)")
    args = parser.parse_args(argv)

    import deepspark

    data = Path(args.data)
    if args.tiny:
        data = small_copy(data, Path(args.output) / "hymenoptera-small", per_class=12)
    result = deepspark.train(
        str(data),
        "label",
        base="mobilenet_v2",
        weights="imagenet" if args.download else str(WEIGHTS),
        base_options={"alpha": 0.35},
        image_size=32 if args.tiny else 160,
        epochs=1 if args.tiny else 20,  # head phase: the base frozen
        fine_tune_layers=10 if args.tiny else 30,  # then the top of the base unfrozen
        fine_tune_epochs=1 if args.tiny else 5,
        batch_size=16,
        run_name="dl10a-transfer",
    )
    figures = {
        "lab": "DL10a",
        "run_id": result.run_id,
        "model_uri": result.model_uri,
        "rows": result.rows,
        "epochs": result.epochs_completed,
        "best_epoch": result.best_epoch,
        "val_accuracy": result.metrics.get("val_accuracy"),
        "test_accuracy": result.metrics.get("test_accuracy"),
    }
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
