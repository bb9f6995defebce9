"""Driver jobs for test_harness.py, run in their own process on the test cluster:
``python cluster_jobs.py JOB ARGS`` with JOB one of ``probe FILE``, ``s3 PREFIX``, ``barrier``,
``fault PREFIX`` or ``all FILE PREFIX``. Each prints one JSON object as its last line.

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


def all_jobs(driver_file: str, prefix: str) -> dict:
    """probe, s3, barrier and fault in one application: one driver start-up instead of four."""
    return {
        "probe": probe(driver_file),
        "s3": s3(prefix),
        "barrier": barrier(),
        "fault": fault(prefix),
    }


if __name__ == "__main__":
    from pyspark.sql import SparkSession

    job = {"probe": probe, "s3": s3, "barrier": barrier, "fault": fault, "all": all_jobs}[
        sys.argv[1]
    ]
    document = job(*sys.argv[2:])
    SparkSession.getActiveSession().stop()
    print(json.dumps(document))
