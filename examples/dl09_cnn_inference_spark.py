"""DL 09 - CNN inference at scale: a pretrained ImageNet network classifies a folder on Spark.

The course loads MobileNetV2 with ImageNet weights, wraps it in a pandas UDF and scores image
files read with Spark's ``binaryFile`` source. ``deepspark.classify(..., spark=True)`` does
exactly that: the images are read and decoded on the executors (in whole waves of partitions),
the network is shipped once and loaded once per Python worker, and each image gets its top-k
ImageNet classes. The network's ``preprocess_input`` is inside the model.

Command line equivalent::

    deepspark classify --model mobilenet_v2 --weights imagenet --data photos/ --top 3 \
        --spark --output top3/

Offline, ``--weights`` is the shared MobileNetV2 file with its 1000-class top.

Run: ``python examples/dl09_cnn_inference_spark.py [--tiny] [--data FOLDER] [--download]``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
WEIGHTS = (
    SHARED_DATA / "images" / "weights" / "mobilenet_v2_1.0_224_imagenet_top_dequant.weights.h5"
)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="DL 09: ImageNet classification on Spark.")
    parser.add_argument("--tiny", action="store_true", help="the few shared photos, top 3")
    parser.add_argument("--data", default=str(SHARED_DATA / "images" / "photos"))
    parser.add_argument("--output", default="lab-output/dl09")
    parser.add_argument("--download", action="store_true", help="Keras' ImageNet weights (online)")
    args = parser.parse_args(argv)

    import pandas as pd

    import deepspark

    # Absolute: Spark resolves a relative path against its own working folder.
    output = Path(args.output).resolve() / "top3.parquet"
    deepspark.classify(
        args.data,
        model="mobilenet_v2",
        weights="imagenet" if args.download else str(WEIGHTS),
        top=3,
        spark=True,  # binaryFile on the executors, one model load per Python worker
        output=str(output),
        overwrite=True,
    )
    table = pd.read_parquet(output).sort_values("path")
    top1 = {
        Path(path).name: label for path, label in zip(table["path"], table["label_1"], strict=True)
    }
    figures = {
        "lab": "DL09",
        "output": str(output),
        "images": len(table),
        "errors": int(table["error"].notna().sum()),
        "top1": top1,
        "mean_top1_probability": float(table["probability_1"].mean()),
    }
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
