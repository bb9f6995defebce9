"""DL 07 - Horovod + Petastorm: distributed training streamed from Parquet.

The course writes the table to Parquet with Spark and lets Petastorm stream it to each Horovod
worker. deepspark's store plays Petastorm's part: a table larger than ``max_memory_mb`` is read
in Arrow batches, encoded once into Parquet shards in the store (one file per split and rank,
a manifest written last, reused by later runs), and each rank streams its own shard (row groups
shuffled each epoch, a shuffle buffer, background prefetch, the same number of steps on every
rank). Here a tiny memory budget forces that path on a small table.

Command line equivalent::

    deepspark train --data houses_parquet/ --target median_house_value --workers 2 \
        --store lab-output/dl07/store --max-memory 1 --json

Run: ``python examples/dl07_horovod_petastorm.py [--tiny] [--data PATH] [--output DIR]``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TARGET = "median_house_value"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="DL 07: distributed training from Parquet.")
    parser.add_argument("--tiny", action="store_true", help="a few hundred rows, 2 epochs")
    parser.add_argument("--data", default=str(SHARED_DATA / "california_housing.csv"))
    parser.add_argument("--output", default="lab-output/dl07")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--launcher", default="local", choices=["local", "spark", "horovod"])
    args = parser.parse_args(argv)

    import pandas as pd

    import deepspark
    from deepspark.spark import get_session

    output = Path(args.output).resolve()
    frame = pd.read_csv(args.data)
    if args.tiny:
        frame = frame.sample(400, random_state=0)

    # Spark writes the Parquet files (on a cluster: s3://..., read where they are).
    spark = get_session()
    parquet = output / "houses_parquet"
    spark.createDataFrame(frame).repartition(2).write.mode("overwrite").parquet(str(parquet))

    result = deepspark.train(
        str(parquet),
        TARGET,
        model="mlp",
        hidden=(32, 16),
        epochs=2 if args.tiny else 20,
        batch_size=32,
        workers=args.workers,
        launcher=args.launcher,
        store=str(output / "store"),
        max_memory_mb=0.01 if args.tiny else 1,  # below the table's size: stream it
        run_name="dl07-streamed",
    )
    shards = sorted(str(path) for path in (output / "store").rglob("*.parquet"))
    figures = {
        "lab": "DL07",
        "run_id": result.run_id,
        "model_uri": result.model_uri,
        "world_size": result.world_size,
        "rows": result.rows,
        "parquet": str(parquet),
        "store_shards": len(shards),
        "test_rmse": result.metrics["test_rmse"],
    }
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
