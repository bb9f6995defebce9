"""Spark batch scoring: deepspark UDF vs mlflow.pyfunc.spark_udf vs one core in-process.

Same model (deepspark's default MLP trained briefly on California housing), same cached
DataFrame (California columns resampled to --rows rows), one run on one machine. Each Spark
path is timed writing to Spark's ``noop`` sink, so every row is scored and nothing is stored.

Goals (issue 3): ratio_vs_mlflow_spark_udf >= 2.0 and fraction_of_limit >= 0.7, where
fraction_of_limit = deepspark rows/s / (one-core in-process rows/s x Spark cores used).
Prints one JSON object with --json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

DEFAULT_DATA = (
    Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "california_housing.csv"
)
TARGET = "median_house_value"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=str(DEFAULT_DATA.resolve()))
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--cores", type=int, default=2, help="Spark master local[N]")
    parser.add_argument("--epochs", type=int, default=3, help="training epochs (speed only)")
    parser.add_argument("--model", help="score this model URI instead of training one")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        os.chdir(scratch)
        os.environ["DEEPSPARK_CHECKPOINT_DIR"] = str(Path(scratch) / "checkpoints")
        os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{scratch}/mlflow.db")
        import deepspark

        model_uri = args.model or deepspark.train(args.data, TARGET, epochs=args.epochs).model_uri
        source = pd.read_csv(args.data).drop(columns=[TARGET])
        frame = source.sample(n=args.rows, replace=True, random_state=0).reset_index(drop=True)
        figures = measure(model_uri, frame, cores=args.cores)
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key}: {value}", file=sys.stdout)


def measure(model_uri: str, frame, *, cores: int) -> dict:
    import mlflow
    import torch
    from pyspark.sql import functions as F

    import deepspark
    from deepspark.spark import get_session, predict

    in_process = in_process_rows_per_second(deepspark.load_model(model_uri), frame, torch)
    spark = get_session(f"local[{cores}]", config={"spark.driver.memory": "6g"})
    df = spark.createDataFrame(frame).repartition(cores * 4).cache()
    rows = df.count()
    features = list(frame.columns)

    deepspark_scored = predict(df, model_uri).select("prediction")
    deepspark_scored.write.format("noop").mode("overwrite").save()  # warm: ship + load once
    deepspark_seconds = timed_noop(deepspark_scored)

    mlflow_udf = mlflow.pyfunc.spark_udf(
        spark, model_uri, env_manager="local", result_type="double"
    )
    mlflow_scored = df.select(mlflow_udf(F.struct(*features)).alias("prediction"))
    mlflow_scored.limit(1000).write.format("noop").mode("overwrite").save()  # warm
    mlflow_seconds = timed_noop(mlflow_scored)

    # Where the time goes: Spark + Arrow + pandas for the same columns, with a UDF doing no work.
    empty_udf_seconds = timed_noop(df.select(empty_udf(features)))

    deepspark_rate = rows / deepspark_seconds
    mlflow_rate = rows / mlflow_seconds
    return {
        "benchmark": "spark_scoring",
        "rows": rows,
        "spark_cores": cores,
        "deepspark_udf_rows_per_s": round(deepspark_rate),
        "mlflow_spark_udf_rows_per_s": round(mlflow_rate),
        "in_process_one_core_rows_per_s": round(in_process),
        "ratio_vs_mlflow_spark_udf": round(deepspark_rate / mlflow_rate, 3),
        "fraction_of_limit": round(deepspark_rate / (in_process * cores), 3),
        "deepspark_seconds": round(deepspark_seconds, 2),
        "mlflow_seconds": round(mlflow_seconds, 2),
        "empty_udf_seconds": round(empty_udf_seconds, 2),
        "in_process_one_core_seconds_per_million": round(1e6 / in_process, 2),
        "goal_ratio_met": deepspark_rate / mlflow_rate >= 2.0,
        "goal_fraction_met": deepspark_rate / (in_process * cores) >= 0.7,
        "cpu_count": os.cpu_count(),
    }


def in_process_rows_per_second(model, frame, torch) -> float:
    """pandas in, predictions out, on one thread: the per-core limit Spark could reach."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model.predict(frame.head(10_000))  # warm
        started = time.perf_counter()
        model.predict(frame)
        return len(frame) / (time.perf_counter() - started)
    finally:
        torch.set_num_threads(threads)


def empty_udf(columns):
    """A pandas UDF on the same columns that returns zeros: Spark's own cost per row."""
    from pyspark.sql import functions as F

    def zeros(batches: Iterator[tuple[pd.Series, ...]]) -> Iterator[pd.Series]:
        for batch in batches:
            yield pd.Series(np.zeros(len(batch[0])))

    return F.pandas_udf(zeros, "double")(*columns)


def timed_noop(scored) -> float:
    started = time.perf_counter()
    scored.write.format("noop").mode("overwrite").save()
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
