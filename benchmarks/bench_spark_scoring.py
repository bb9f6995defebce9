"""Spark batch scoring per Keras backend: deepspark on Arrow (its Arrow UDF, Spark 4.1+) and
through its pandas UDF vs mlflow.pyfunc.spark_udf vs one core in process.

Same model (deepspark's default MLP trained briefly on California housing), same cached
DataFrame (California columns resampled to --rows rows), one run on one machine. Each Spark
path is timed writing to Spark's ``noop`` sink, so every row is scored and nothing is stored,
after a warm-up that runs one full-size batch per core at once (every Python worker loads the
model and compiles its batch shapes before a timed run; the figures until issue 9 warmed
MLflow's UDF with a ``limit()``, which left a worker cold and counted its model load against
MLflow). deepspark's two paths, timed in alternation (a busy machine then slows both alike),
and the two no-work baselines (an empty pandas UDF, an empty Arrow UDF: Spark's own cost per
row on each route): best of two passes; MLflow's: one pass.

Keras picks its backend once per process, so each Keras backend (``jax``, ``torch``) runs in its
own child process with ``KERAS_BACKEND`` set in its environment: it trains its model, starts its
own Spark session (whose Python workers inherit the backend) and measures every figure, so each
ratio is measured within one run. The one-core in-process limit is measured in a further process
pinned to one CPU (CPU affinity), so it is one core whatever threads the backend starts.

Goals (issue 19), per backend, for the Arrow path (``deepspark.spark.predict``'s default):
ratio_vs_mlflow_spark_udf >= 3.0 and fraction_of_limit >= 0.5, where fraction_of_limit =
deepspark rows/s / (one-core in-process rows/s x Spark cores used). The pandas UDF path's
figures stand beside them (``pandas_udf_*``; 0.145 of the limit before the Arrow path).
The default run (the default ``jax`` backend, 150k rows) takes under 4 minutes on 2 cores;
``--backends jax,torch`` measures both. Prints one JSON object with --json: ``backends`` holds
each backend's figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
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
BACKENDS = ("jax", "torch")
DEFAULT_BACKENDS = ("jax",)
GOAL_RATIO_VS_MLFLOW = 3.0
GOAL_FRACTION_OF_LIMIT = 0.5
IN_PROCESS_ROWS = 200_000


def sample_frame(data: str, rows: int) -> pd.DataFrame:
    """The California feature columns resampled to ``rows`` rows (the same rows every time)."""
    source = pd.read_csv(data).drop(columns=[TARGET])
    return source.sample(n=rows, replace=True, random_state=0).reset_index(drop=True)


def backend_worker(args) -> dict:
    """Every figure for this process's Keras backend."""
    with tempfile.TemporaryDirectory() as scratch:
        os.chdir(scratch)
        os.environ["DEEPSPARK_CHECKPOINT_DIR"] = str(Path(scratch) / "checkpoints")
        os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{scratch}/mlflow.db")
        import deepspark
        from deepspark._backend import backend_name

        started = time.perf_counter()
        model_uri = args.model or deepspark.train(args.data, TARGET, epochs=args.epochs).model_uri
        train_seconds = time.perf_counter() - started
        clock = time.perf_counter()
        in_process = in_process_one_core(args, model_uri)
        in_process_seconds = time.perf_counter() - clock
        figures = measure(model_uri, sample_frame(args.data, args.rows), cores=args.cores)
    arrow_rate = figures["deepspark_arrow_rows_per_s"]
    pandas_rate = figures["deepspark_udf_rows_per_s"]
    mlflow_rate = figures["mlflow_spark_udf_rows_per_s"]
    limit = in_process["rows_per_s"] * args.cores
    return {
        "keras_backend": backend_name(),
        **figures,
        "in_process_one_core_rows_per_s": round(in_process["rows_per_s"]),
        "in_process_one_core_seconds_per_million": round(1e6 / in_process["rows_per_s"], 2),
        "in_process_cpu": in_process["cpu"],
        "ratio_vs_mlflow_spark_udf": round(arrow_rate / mlflow_rate, 3),
        "fraction_of_limit": round(arrow_rate / limit, 3),
        "arrow_vs_pandas_udf": round(arrow_rate / pandas_rate, 3),
        "pandas_udf_ratio_vs_mlflow_spark_udf": round(pandas_rate / mlflow_rate, 3),
        "pandas_udf_fraction_of_limit": round(pandas_rate / limit, 3),
        "goal_ratio_met": arrow_rate / mlflow_rate >= GOAL_RATIO_VS_MLFLOW,
        "goal_fraction_met": arrow_rate / limit >= GOAL_FRACTION_OF_LIMIT,
        "train_seconds": round(train_seconds, 1),
        "in_process_seconds": round(in_process_seconds, 1),
    }


def measure(model_uri: str, frame, *, cores: int) -> dict:
    import mlflow
    from pyspark.sql import functions as F

    from deepspark.spark import get_session, predict, spark_model

    stages = {}
    clock = time.perf_counter()
    spark = get_session(f"local[{cores}]", config={"spark.driver.memory": "6g"})
    stages["session"], clock = time.perf_counter() - clock, time.perf_counter()
    df = spark.createDataFrame(frame).repartition(cores * 4).cache()
    rows = df.count()
    stages["cache"], clock = time.perf_counter() - clock, time.perf_counter()
    features = list(frame.columns)
    # Warm-ups run one full Arrow batch per core at once, so that every Python worker has
    # loaded the model and compiled its batch shapes before a timed run (a limit() runs one
    # task and leaves the other workers cold).
    tiny = spark.createDataFrame(frame.head(cores * 10_000)).repartition(cores)

    resolved = spark_model(spark, model_uri)  # resolved and shipped once for both paths
    arrow_scored = predict(df, resolved).select("prediction")
    pandas_scored = predict(df, resolved, arrow=False).select("prediction")
    predict(tiny, resolved).write.format("noop").mode("overwrite").save()
    predict(tiny, resolved, arrow=False).write.format("noop").mode("overwrite").save()
    stages["deepspark_warm"] = time.perf_counter() - clock
    arrow_seconds, pandas_seconds = [], []
    for _ in range(2):
        arrow_seconds.append(timed_noop(arrow_scored))
        pandas_seconds.append(timed_noop(pandas_scored))

    clock = time.perf_counter()
    mlflow_udf = mlflow.pyfunc.spark_udf(
        spark, model_uri, env_manager="local", result_type="double"
    )
    tiny.select(mlflow_udf(F.struct(*features))).write.format("noop").mode("overwrite").save()
    stages["mlflow_warm"] = time.perf_counter() - clock
    mlflow_seconds = timed_noop(df.select(mlflow_udf(F.struct(*features)).alias("prediction")))

    # Where the time goes: Spark + Arrow + pandas for the same columns, with a UDF doing no work.
    empty_udf_seconds = min(timed_noop(df.select(empty_udf(features))) for _ in range(2))
    empty_arrow_seconds = min(timed_noop(df.select(empty_arrow_udf(features))) for _ in range(2))
    spark.stop()
    return {
        "rows": rows,
        "spark_cores": cores,
        "deepspark_arrow_rows_per_s": round(rows / min(arrow_seconds)),
        "deepspark_udf_rows_per_s": round(rows / min(pandas_seconds)),
        "mlflow_spark_udf_rows_per_s": round(rows / mlflow_seconds),
        "empty_udf_rows_per_s": round(rows / empty_udf_seconds),
        "empty_arrow_udf_rows_per_s": round(rows / empty_arrow_seconds),
        "arrow_seconds": [round(seconds, 2) for seconds in arrow_seconds],
        "pandas_udf_seconds": [round(seconds, 2) for seconds in pandas_seconds],
        "mlflow_seconds": round(mlflow_seconds, 2),
        "empty_udf_seconds": round(empty_udf_seconds, 2),
        "empty_arrow_udf_seconds": round(empty_arrow_seconds, 2),
        "setup_seconds": {name: round(value, 1) for name, value in stages.items()},
    }


def in_process_one_core(args, model_uri: str) -> dict:
    """pandas in, predictions out, in a process pinned to one CPU: the per-core limit Spark
    could reach (measured apart, so the Spark session's processes do not inherit the pinning)."""
    cpu = min(os.sched_getaffinity(0))
    command = [
        sys.executable,
        __file__,
        "--in-process-worker",
        f"--model={model_uri}",
        f"--data={args.data}",
        f"--rows={min(args.rows, IN_PROCESS_ROWS)}",
    ]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=args.timeout,
        check=False,
        preexec_fn=lambda: os.sched_setaffinity(0, {cpu}),
    )
    if done.returncode != 0:
        raise RuntimeError(f"in-process measurement failed: {done.stderr.strip()[-2000:]}")
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "cpu": cpu}


def in_process_worker(args) -> None:
    import deepspark
    from deepspark.runtime import set_threads

    set_threads(1)  # torch: one thread for one core; JAX: the pinning does it
    model = deepspark.load_model(args.model)
    frame = sample_frame(args.data, args.rows)
    model.predict(frame.head(10_000))  # warm
    started = time.perf_counter()
    model.predict(frame)
    print(json.dumps({"rows_per_s": len(frame) / (time.perf_counter() - started)}))


def empty_udf(columns):
    """A pandas UDF on the same columns that returns zeros: Spark's own cost per row."""
    from pyspark.sql import functions as F

    def zeros(batches: Iterator[tuple[pd.Series, ...]]) -> Iterator[pd.Series]:
        for batch in batches:
            yield pd.Series(np.zeros(len(batch[0])))

    return F.pandas_udf(zeros, "double")(*columns)


def empty_arrow_udf(columns):
    """An Arrow UDF on the same columns that returns zeros: Spark's own cost per row on the
    Arrow route."""
    import pyarrow as pa
    from pyspark.sql import functions as F

    def zeros(batches):
        for batch in batches:
            yield pa.array(np.zeros(len(batch[0])))

    # PySpark reads the UDF's kind from the hints (strings here would not resolve: pa is local).
    zeros.__annotations__ = {
        "batches": Iterator[tuple[pa.Array, ...]],
        "return": Iterator[pa.Array],
    }
    return F.arrow_udf(zeros, "double")(*columns)


def timed_noop(scored) -> float:
    started = time.perf_counter()
    scored.write.format("noop").mode("overwrite").save()
    return time.perf_counter() - started


def run_backend(backend: str, args) -> dict:
    """This script again with ``--worker-backend``, KERAS_BACKEND set; its last JSON line."""
    command = [
        sys.executable,
        __file__,
        "--worker-backend",
        backend,
        f"--data={args.data}",
        f"--rows={args.rows}",
        f"--cores={args.cores}",
        f"--epochs={args.epochs}",
        f"--timeout={args.timeout}",
        *([f"--model={args.model}"] if args.model else []),
    ]
    started = time.perf_counter()
    try:
        done = subprocess.run(
            command,
            env={**os.environ, "KERAS_BACKEND": backend},
            capture_output=True,
            text=True,
            timeout=args.timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {args.timeout:.0f} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"error": f"exit {done.returncode}: {done.stderr.strip()[-2000:]}"}
    return {**json.loads(lines[-1]), "child_seconds": round(time.perf_counter() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=str(DEFAULT_DATA.resolve()))
    parser.add_argument("--rows", type=int, default=150_000)
    parser.add_argument("--cores", type=int, default=2, help="Spark master local[N]")
    parser.add_argument("--epochs", type=int, default=3, help="training epochs (speed only)")
    parser.add_argument("--model", help="score this model URI instead of training one")
    parser.add_argument(
        "--backends", default=",".join(DEFAULT_BACKENDS), help=f"any of {','.join(BACKENDS)}"
    )
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds per backend")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--worker-backend", help=argparse.SUPPRESS)
    parser.add_argument("--in-process-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.in_process_worker:
        in_process_worker(args)
        return
    if args.worker_backend:
        print(json.dumps(backend_worker(args)))
        return
    started = time.perf_counter()
    load_at_start = os.getloadavg()[0]
    per_backend = {backend: run_backend(backend, args) for backend in args.backends.split(",")}
    figures = {
        "benchmark": "spark_scoring",
        "backends": per_backend,
        "goals_met": all(
            result.get("goal_ratio_met") and result.get("goal_fraction_met")
            for result in per_backend.values()
        ),
        "cpu_count": os.cpu_count(),
        "wall_seconds": round(time.perf_counter() - started, 1),
        # 1-minute load average at start and end: a busy machine (load above its cores) gives
        # slower, noisier figures.
        "load_average": [round(load_at_start, 2), round(os.getloadavg()[0], 2)],
    }
    if args.json:
        print(json.dumps(figures))
    else:
        print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
