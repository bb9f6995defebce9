"""Driver jobs for test_cluster.py, run in their own process on the test cluster:
``python cluster_jobs.py JOB ARGS`` with JOB one of ``probe FILE``, ``s3 PREFIX``, ``barrier``,
``local_store DATA FOLDER``, ``score MODEL ROWS OUTPUT``, ``fault PREFIX`` or
``all FILE PREFIX DATA MODEL ROWS OUTPUT``. Each prints one JSON object as its last line.

The session comes from deepspark's one builder, so ``DEEPSPARK_SPARK_MASTER`` picks the cluster.
"""

import json
import os
import socket
import sys
import time

EXECUTOR_CLASS = "org.apache.spark.executor.CoarseGrainedExecutorBackend"


def where_am_i() -> dict:
    """Where this Python process runs: host, pid, executor JVM, mount namespace, folder."""
    return {
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
        "executor_pid": _executor_pid(),
        "mount_namespace": os.readlink("/proc/self/ns/mnt"),
        "cwd": os.getcwd(),
    }


def _executor_pid() -> int | None:
    """The executor JVM above this Python worker (worker -> daemon -> executor)."""
    pid = os.getpid()
    while pid > 1:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            if EXECUTOR_CLASS.encode() in handle.read():
                return pid
        with open(f"/proc/{pid}/stat") as handle:
            pid = int(handle.read().rsplit(")", 1)[1].split()[1])
    return None


def start(executors: int = 2, timeout: float = 60):
    """The session, once ``executors`` executors have registered (so tasks spread over them)."""
    from deepspark.spark import get_session

    spark = get_session(app_name="deepspark-cluster-test")
    deadline = time.monotonic() + timeout
    while spark.sparkContext._jsc.sc().getExecutorMemoryStatus().size() - 1 < executors:
        if time.monotonic() > deadline:
            raise TimeoutError(f"fewer than {executors} executors registered in {timeout} s")
        time.sleep(0.1)
    return spark


def probe(driver_file: str) -> dict:
    """Tasks report where they ran and whether they can see ``driver_file``."""
    spark = start()

    def report(rows):
        yield {**where_am_i(), "sees_driver_file": os.path.exists(driver_file)}

    tasks = spark.sparkContext.parallelize(range(4), 4).mapPartitions(report).collect()
    return {"driver": {**where_am_i(), "sees_driver_file": os.path.exists(driver_file)},
            "tasks": tasks}  # fmt: skip


def s3(prefix: str) -> dict:
    """The driver writes a table to ``prefix``; each task reads it and writes its own part."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    spark = start()
    pq.write_table(pa.table({"value": list(range(10))}), f"{prefix}/input.parquet")

    def copy(index, rows):
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        table = pq.read_table(f"{prefix}/input.parquet")
        part = table.append_column("part", pa.array([index] * table.num_rows))
        pq.write_table(part, f"{prefix}/parts/part-{index}.parquet")
        yield {**where_am_i(), "part": index, "sum": pc.sum(table["value"]).as_py()}

    tasks = spark.sparkContext.parallelize(range(2), 2).mapPartitionsWithIndex(copy).collect()
    parts = pq.read_table(f"{prefix}/parts/")
    return {"tasks": tasks, "rows": parts.num_rows, "parts": sorted(set(parts["part"].to_pylist()))}


def barrier() -> dict:
    """A barrier stage of 2 tasks (as deepspark's launcher runs) exchanging their pids."""
    spark = start()

    def gang(rows):
        from pyspark import BarrierTaskContext

        context = BarrierTaskContext.get()
        context.barrier()
        pids = context.allGather(str(os.getpid()))
        yield {**where_am_i(), "rank": context.partitionId(), "gathered": sorted(pids)}

    rdd = spark.sparkContext.parallelize(range(2), 2)
    return {"tasks": rdd.barrier().mapPartitions(gang).collect()}


def score(model_dir: str, rows: str, output: str) -> dict:
    """Score the driver's rows with the model in ``model_dir`` (a folder only the driver sees:
    the model must ship to the executors), write the predictions to ``output`` on the driver,
    and report each executor Python worker's model loads."""
    import pandas as pd
    from pyspark.sql.functions import pandas_udf
    from pyspark.sql.types import StringType

    from deepspark.spark import predict

    spark = start()
    frame = spark.createDataFrame(pd.read_parquet(rows)).repartition(4)
    scored = predict(frame, model_dir, batch_rows=100).select("row", "prediction").toPandas()
    scored.to_parquet(output, index=False)

    @pandas_udf(StringType())
    def worker_report(ids: pd.Series) -> pd.Series:
        from deepspark.spark.udf import worker_loads

        report = json.dumps({**where_am_i(), "loads": worker_loads()})
        return pd.Series([report] * len(ids))

    reports = spark.range(0, 40, numPartitions=8).select(worker_report("id")).toPandas()
    return {"workers": [json.loads(text) for text in reports.iloc[:, 0].unique()]}


def local_store(data: str, folder: str) -> dict:
    """``deepspark train --workers 2 --launcher spark`` through the CLI's own entry point, in
    this driver (so on its cluster session), with the store in ``FOLDER/store``, a folder only
    the driver sees: its exit code, stdout, stderr and seconds."""
    import contextlib
    import io

    from deepspark.cli.main import main

    start()
    os.environ["DEEPSPARK_CHECKPOINT_DIR"] = ""
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder}/mlflow.db"
    args = [
        "train", "--data", data, "--target", "y", "--model", "mlp", "--hidden", "32,32",
        "--epochs", "3", "--batch-size", "32", "--workers", "2", "--launcher", "spark",
        "--store", f"{folder}/store", "--max-memory", "0.01", "--json",
    ]  # fmt: skip
    stdout, stderr = io.StringIO(), io.StringIO()
    began = time.monotonic()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            main(args)
            code = 0
        except SystemExit as done:
            code = done.code
    seconds = time.monotonic() - began
    return {"exit_code": code, "stdout": stdout.getvalue(), "stderr": stderr.getvalue(),
            "seconds": seconds}  # fmt: skip


def fault(prefix: str, timeout: float = 120) -> dict:
    """Two tasks that mark ``PREFIX/fault/started-<task>-<attempt>`` and then wait for
    ``PREFIX/fault/release``, so a test can kill an executor under one of them while both run;
    the lost task is retried and the job still finishes."""
    spark = start()

    def wait(index, rows):
        import pyarrow.fs as pafs
        from pyspark import TaskContext

        attempt = TaskContext.get().attemptNumber()
        filesystem, root = pafs.FileSystem.from_uri(f"{prefix}/fault")
        with filesystem.open_output_stream(f"{root}/started-{index}-{attempt}") as stream:
            stream.write(str(os.getpid()).encode())
        deadline = time.monotonic() + timeout
        while filesystem.get_file_info(f"{root}/release").type == pafs.FileType.NotFound:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nobody wrote {prefix}/fault/release in {timeout} s")
            time.sleep(0.1)
        yield {**where_am_i(), "task": index, "attempt": attempt}

    tasks = spark.sparkContext.parallelize(range(2), 2).mapPartitionsWithIndex(wait).collect()
    return {"tasks": tasks}


def all_jobs(
    driver_file: str, prefix: str, data: str, model_dir: str, rows: str, output: str
) -> dict:
    """Every job in one application: one driver start-up (and one executor per worker) instead
    of six. The fault stage, which loses an executor, runs last."""
    return {
        "driver": where_am_i(),
        "probe": probe(driver_file),
        "s3": s3(prefix),
        "barrier": barrier(),
        "local_store": local_store(data, os.path.dirname(driver_file)),
        "score": score(model_dir, rows, output),
        "fault": fault(prefix),
    }


if __name__ == "__main__":
    from pyspark.sql import SparkSession

    jobs = {"probe": probe, "s3": s3, "barrier": barrier, "local_store": local_store,
            "score": score, "fault": fault, "all": all_jobs}  # fmt: skip
    job = jobs[sys.argv[1]]
    document = job(*sys.argv[2:])
    SparkSession.getActiveSession().stop()
    print(json.dumps(document))
