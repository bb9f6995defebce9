"""The multi-host harness is real: executors on the test cluster cannot see the driver's folder,
run in separate processes, reach the S3 server and run barrier stages; the S3 fixtures serve
pyarrow and deltalake with environment variables alone."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

JOBS = Path(__file__).with_name("cluster_jobs.py")


@pytest.fixture(scope="module")
def cluster_report(spark_cluster, s3_server, tmp_path_factory) -> dict:
    """One driver run of cluster_jobs.py ``all`` (probe, s3, barrier, fault): a driver start-up
    costs 10-30 s on this 2-core machine, so the checks share one application. During the
    fault stage the executor under worker 0 is SIGKILLed."""
    folder = tmp_path_factory.mktemp("cluster-driver")
    driver_file = folder / "driver-only.txt"
    driver_file.write_text("only the driver sees this")
    bucket = s3_server.create_bucket()
    prefix = f"{bucket.uri}/job"
    args = [str(JOBS), "all", str(driver_file), prefix]
    with (folder / "stdout").open("w") as stdout, (folder / "stderr").open("w") as stderr:
        driver = spark_cluster.start_driver(args, folder, stdout=stdout, stderr=stderr)
    try:
        killed = _kill_during_fault_stage(spark_cluster, s3_server, bucket.name, driver)
        driver.wait(timeout=180)
    finally:
        driver.kill()
        driver.wait()
    errors = [line for line in (folder / "stderr").read_text().splitlines() if line[:1] != "\t"]
    assert driver.returncode == 0, "\n".join(errors[-40:]) + "\n" + spark_cluster.logs()
    report = json.loads((folder / "stdout").read_text().strip().splitlines()[-1])
    yield {**report, "prefix": prefix, "killed_executor": killed}
    s3_server.delete_bucket(bucket.name)


def _kill_during_fault_stage(cluster, server, bucket: str, driver, timeout: float = 150) -> int:
    """Wait until both fault tasks have started (their S3 markers), kill worker 0's executor,
    then let the tasks finish (the release marker); the killed process id."""
    client = server.client()
    deadline = time.monotonic() + timeout
    while True:
        listing = client.list_objects_v2(Bucket=bucket, Prefix="job/fault/started-")
        if listing["KeyCount"] >= 2:
            killed = cluster.kill_executor(0)
            client.put_object(Bucket=bucket, Key="job/fault/release", Body=b"")
            return killed
        if driver.poll() is not None or time.monotonic() > deadline:
            return -1  # the assertion on the driver's exit shows why
        time.sleep(0.1)


@pytest.mark.spark
@pytest.mark.slow
def test_executors_cannot_see_the_driver_folder(spark_cluster, cluster_report):
    driver, tasks = cluster_report["probe"]["driver"], cluster_report["probe"]["tasks"]

    assert driver["sees_driver_file"]
    assert len(tasks) == 4 and not any(task["sees_driver_file"] for task in tasks)
    executors = {task["executor_pid"] for task in tasks}
    assert len(executors) == 2 and None not in executors and driver["pid"] not in executors
    namespaces = {task["mount_namespace"] for task in tasks}
    assert len(namespaces) == 2 and driver["mount_namespace"] not in namespaces
    worker_folders = {Path(task["cwd"]).parents[1] for task in tasks}
    assert worker_folders == {spark_cluster.root / f"worker-{n}" / "work" for n in (0, 1)}


@pytest.mark.spark
@pytest.mark.slow
def test_executors_read_and_write_s3(s3_server, cluster_report, monkeypatch):
    import pyarrow.parquet as pq

    report = cluster_report["s3"]

    assert len({task["executor_pid"] for task in report["tasks"]}) == 2
    assert [task["sum"] for task in report["tasks"]] == [45, 45]
    assert report["rows"] == 20 and report["parts"] == [0, 1]
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    parts = pq.read_table(f"{cluster_report['prefix']}/parts/")
    assert sorted(parts["value"].to_pylist()) == sorted(list(range(10)) * 2)


@pytest.mark.spark
@pytest.mark.slow
def test_a_barrier_stage_runs_on_two_executors(cluster_report):
    tasks = cluster_report["barrier"]["tasks"]

    assert sorted(task["rank"] for task in tasks) == [0, 1]
    assert len({task["executor_pid"] for task in tasks}) == 2
    pids = sorted(str(task["pid"]) for task in tasks)
    assert all(task["gathered"] == pids for task in tasks)


@pytest.mark.spark
@pytest.mark.slow
def test_a_task_lost_with_its_executor_is_retried(cluster_report):
    killed, tasks = cluster_report["killed_executor"], cluster_report["fault"]["tasks"]

    assert killed > 0
    assert sorted(task["task"] for task in tasks) == [0, 1]
    assert killed not in {task["executor_pid"] for task in tasks}
    assert max(task["attempt"] for task in tasks) == 1


def test_parquet_round_trip_through_pyarrow_on_s3(s3_bucket):
    import pyarrow as pa
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    filesystem, path = pafs.FileSystem.from_uri(f"{s3_bucket.uri}/tables/t.parquet")
    assert isinstance(filesystem, pafs.S3FileSystem) and filesystem.region == "us-east-1"
    assert path == f"{s3_bucket.name}/tables/t.parquet"

    table = pa.table({"x": [1.5, 2.5, None], "label": ["a", "b", "c"]})
    pq.write_table(table, f"{s3_bucket.uri}/tables/t.parquet")

    assert pq.read_table(f"{s3_bucket.uri}/tables/t.parquet").equals(table)
    assert filesystem.get_file_info(path).type == pafs.FileType.File


def test_deltalake_writes_and_reads_on_s3(s3_bucket):
    deltalake = pytest.importorskip("deltalake", reason="deltalake (the dev extra) is missing")
    import pyarrow as pa

    uri = f"{s3_bucket.uri}/delta/table"
    deltalake.write_deltalake(uri, pa.table({"x": [1, 2]}))
    deltalake.write_deltalake(uri, pa.table({"x": [3]}), mode="append")

    table = deltalake.DeltaTable(uri)
    assert table.version() == 1
    assert sorted(table.to_pyarrow_table()["x"].to_pylist()) == [1, 2, 3]


def test_each_bucket_is_fresh_and_the_environment_set(s3_bucket, s3_server):
    import os

    assert s3_bucket.endpoint == s3_server.endpoint
    assert os.environ["AWS_ENDPOINT_URL"] == s3_server.endpoint
    assert s3_server.client().list_objects_v2(Bucket=s3_bucket.name)["KeyCount"] == 0
