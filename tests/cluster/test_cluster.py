"""The multi-host harness and what runs on it, in one module so that one cluster (a master, two
workers whose executors cannot see the driver's folders, a moto S3 server) serves every test.

- The harness is real: executors run in separate processes and mount namespaces, cannot see the
  driver's folder, reach S3 and run barrier stages; a task lost with its executor is retried. A
  model in a driver-only folder ships to the executors and scores as pandas does, loaded once
  per Python worker. (The spark launcher's exactness: tests/distributed/test_spark_launcher.py.)
- ``deepspark train --workers 2 --launcher spark``: a table streamed from an ``s3://`` Parquet
  folder into a store on S3 trains on two executors; killing one executor mid-run restarts the
  ranks from the checkpoint in the store, losing no completed epoch, and the driver's MLflow run
  (a sqlite file the executors cannot see) gets every epoch exactly once. The same command with
  a driver-local store (run in the harness's driver) fails before any work with one line
  naming --store.
- An ``s3://`` image folder trains on two ranks: the shards hold the images' URIs (never a
  driver-local path) and each rank decodes its own rows from S3.
- The S3 fixtures serve pyarrow and deltalake with environment variables alone.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from tests.conftest import FAST, make_table
from tests.image_data import pattern_folder

JOBS = Path(__file__).with_name("cluster_jobs.py")
EPOCHS = 3  # the executor dies after the first; two remain to restart into


@pytest.fixture(scope="module")
def monkeypatch_module():
    """``monkeypatch`` for module-scoped fixtures."""
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def scoring_model(tmp_path_factory, mlflow_template) -> tuple[Path, Path]:
    """A regression model trained in this process, and the rows to score (with a ``row`` id),
    both in a folder only the driver sees."""
    import mlflow

    import deepspark
    from deepspark.tracking.model import resolve_model_dir

    folder = tmp_path_factory.mktemp("scoring-model")
    shutil.copy(mlflow_template, folder / "mlflow.db")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    frame = make_table(rows=300, seed=3)
    frame.to_csv(folder / "table.csv", index=False)
    previous, cwd = mlflow.get_tracking_uri(), Path.cwd()
    os.chdir(folder)  # MLflow puts the artifacts of a sqlite store under ./mlruns
    try:
        settings = {**FAST, "epochs": 2, "checkpoint_dir": str(folder / "checkpoints")}
        result = deepspark.train(str(folder / "table.csv"), "y", tracking_uri=uri, **settings)
        mlflow.set_tracking_uri(uri)
        model_dir = resolve_model_dir(result.model_uri)
    finally:
        os.chdir(cwd)
        mlflow.set_tracking_uri(previous)
    rows = folder / "rows.parquet"
    frame.drop(columns="y").assign(row=range(len(frame))).to_parquet(rows, index=False)
    return model_dir, rows


@pytest.fixture(scope="module")
def cluster_report(
    spark_cluster, s3_server, scoring_model, mlflow_template, tmp_path_factory, monkeypatch_module
) -> dict:
    """One driver run of cluster_jobs.py ``all`` (probe, s3, barrier, local_store, score,
    fault): a driver start-up and its executors cost 20-40 CPU-s, so the checks share one
    application. During the fault stage the executor under worker 0 is SIGKILLed."""
    folder = tmp_path_factory.mktemp("cluster-driver")
    driver_file = folder / "driver-only.txt"
    driver_file.write_text("only the driver sees this")
    shutil.copy(mlflow_template, folder / "mlflow.db")  # local_store's MLflow store
    bucket = s3_server.create_bucket()
    prefix = f"{bucket.uri}/job"
    for name, value in s3_server.env.items():
        monkeypatch_module.setenv(name, value)
    data = _upload_table(bucket, rows=200)
    model_dir, rows = scoring_model
    scored = folder / "scored.parquet"
    args = [str(JOBS), "all", str(driver_file), prefix, data, str(model_dir), str(rows)]
    args.append(str(scored))
    with (folder / "stdout").open("w") as stdout, (folder / "stderr").open("w") as stderr:
        driver = spark_cluster.start_driver(args, folder, stdout=stdout, stderr=stderr)
    try:
        killed = _kill_during_fault_stage(spark_cluster, s3_server, bucket.name, driver)
        driver.wait(timeout=400)
    finally:
        driver.kill()
        driver.wait()
    errors = [line for line in (folder / "stderr").read_text().splitlines() if line[:1] != "\t"]
    assert driver.returncode == 0, "\n".join(errors[-40:]) + "\n" + spark_cluster.logs()
    report = json.loads((folder / "stdout").read_text().strip().splitlines()[-1])
    yield {**report, "prefix": prefix, "killed_executor": killed, "scored": scored,
           "folder": folder}  # fmt: skip
    s3_server.delete_bucket(bucket.name)


def _kill_during_fault_stage(cluster, server, bucket: str, driver, timeout: float = 900) -> int:
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
        time.sleep(0.2)


# ---- the harness ---------------------------------------------------------------------------


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


@pytest.mark.spark
@pytest.mark.slow
@pytest.mark.distributed
def test_a_model_in_a_driver_folder_ships_and_scores_on_the_executors(
    cluster_report, scoring_model
):
    import numpy as np
    import pandas as pd

    import deepspark

    model_dir, rows = scoring_model
    driver, workers = cluster_report["driver"], cluster_report["score"]["workers"]

    assert {worker["executor_pid"] for worker in workers} == {
        task["executor_pid"] for task in cluster_report["probe"]["tasks"]
    }  # both executors, neither of them the driver
    assert driver["pid"] not in {worker["pid"] for worker in workers}
    loads = [count for worker in workers for count in worker["loads"].values()]
    assert loads and max(loads) == 1  # the model shipped, once per Python worker
    scored = pd.read_parquet(cluster_report["scored"]).sort_values("row")
    expected = deepspark.load_model(str(model_dir)).predict(pd.read_parquet(rows))["prediction"]
    np.testing.assert_allclose(scored["prediction"], expected, rtol=1e-6)


@pytest.mark.spark
@pytest.mark.slow
@pytest.mark.distributed
def test_a_driver_local_store_fails_fast_naming_store(cluster_report):
    done = cluster_report["local_store"]  # deepspark train's entry point, on the cluster

    assert done["exit_code"] == 2, done["stderr"][-3000:]
    lines = [line for line in done["stderr"].splitlines() if line.startswith("deepspark:")]
    assert len(lines) == 1 and "--store" in lines[0] and "not visible" in lines[0], done["stderr"]
    assert "Traceback" not in done["stderr"] and done["stdout"] == ""
    assert done["seconds"] < 120
    written = [path for path in (cluster_report["folder"] / "store").rglob("*") if path.is_file()]
    assert written == []  # no work was done, nothing half-written


# ---- deepspark train on the cluster --------------------------------------------------------


def _upload_table(bucket, rows: int = 800) -> str:
    """Two Parquet files under ``s3://bucket/houses/``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    frame = make_table(rows=rows)
    for part, chunk in enumerate((frame.iloc[: rows // 2], frame.iloc[rows // 2 :])):
        table = pa.Table.from_pandas(chunk, preserve_index=False)
        pq.write_table(table, f"{bucket.uri}/houses/part-{part}.parquet")
    return f"{bucket.uri}/houses/"


def _train_args(data: str, store: str) -> list[str]:
    return [
        "-m", "deepspark", "train", "--data", data, "--target", "y", "--model", "mlp",
        "--hidden", "32,32", "--epochs", str(EPOCHS), "--batch-size", "32", "--patience", "100",
        "--no-reduce-lr", "--workers", "2", "--launcher", "spark", "--store", store,
        "--max-memory", "0.01", "--json",
    ]  # fmt: skip


def _checkpointed_epoch(bucket, store_prefix: str) -> int:
    """The last epoch any run checkpointed in the store (-1: none yet)."""
    from pyarrow import fs

    filesystem, root = fs.FileSystem.from_uri(f"{bucket.uri}/{store_prefix}/checkpoints")
    selector = fs.FileSelector(root, recursive=True, allow_not_found=True)
    best = -1
    for info in filesystem.get_file_info(selector):
        if info.path.endswith("/state.json"):
            with filesystem.open_input_stream(info.path) as stream:
                text = stream.read()
            try:
                best = max(best, json.loads(text)["epoch"])
            except json.JSONDecodeError:
                # Replaced between the size lookup and the read (pyarrow reads the old size of
                # the new object): it is checked again on the next poll.
                continue
    return best


def _driver_env(workdir: Path) -> dict[str, str]:
    """A driver's MLflow store in its folder; the executors (which have deepspark installed)
    preload it in their Python daemon, so ranks fork from a Python worker as users' would."""
    return {
        "DEEPSPARK_CHECKPOINT_DIR": "",
        "MLFLOW_TRACKING_URI": f"sqlite:///{workdir}/mlflow.db",
        "DEEPSPARK_SPARK_PRELOAD": "1",
    }


@pytest.mark.spark
@pytest.mark.slow
@pytest.mark.distributed
def test_training_from_s3_survives_a_killed_executor(spark_cluster, s3_bucket, workdir):
    import mlflow

    data = _upload_table(s3_bucket)
    env = _driver_env(workdir)
    args = _train_args(data, f"{s3_bucket.uri}/store")
    with (workdir / "stdout").open("w") as stdout, (workdir / "stderr").open("w") as stderr:
        driver = spark_cluster.start_driver(args, workdir, env=env, stdout=stdout, stderr=stderr)
    try:
        deadline = time.monotonic() + 600
        while _checkpointed_epoch(s3_bucket, "store") < 0:
            assert driver.poll() is None and time.monotonic() < deadline, (
                workdir / "stderr"
            ).read_text()[-3000:] + spark_cluster.logs()
            time.sleep(0.2)
        spark_cluster.kill_executor(1)
        driver.wait(timeout=600)
    finally:
        driver.kill()
        driver.wait()
    stderr_text = (workdir / "stderr").read_text()
    assert driver.returncode == 0, stderr_text[-4000:]
    result = json.loads((workdir / "stdout").read_text())
    assert (result["world_size"], result["launcher"]) == (2, "spark")
    assert result["restarts"] >= 1 and result["epochs_completed"] == EPOCHS
    assert result["metrics"]["test_r2"] > 0.5  # it learned (from shards it never held)
    assert sum(result["rows"].values()) == 800
    client = mlflow.MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    for name in ("train_loss", "val_loss", "learning_rate"):
        steps = sorted(m.step for m in client.get_metric_history(result["run_id"], name))
        assert steps == list(range(EPOCHS)), name  # every epoch once, none lost
    assert client.get_run(result["run_id"]).info.status == "FINISHED"
    assert "streamed from Parquet" in stderr_text or "streamed from" in stderr_text


def _upload_images(bucket, folder) -> str:
    """The generated images under ``s3://bucket/images/<class>/``."""
    from pyarrow import fs

    filesystem, root = fs.FileSystem.from_uri(f"{bucket.uri}/images")
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            with filesystem.open_output_stream(f"{root}/{path.relative_to(folder)}") as stream:
                stream.write(path.read_bytes())
    return f"{bucket.uri}/images/"


def _shard_references(bucket) -> list[str]:
    """The image references of every shard in the store."""
    import pyarrow.parquet as pq
    from pyarrow import fs

    from deepspark.distributed.shards import IMAGE_SOURCES

    filesystem, root = fs.FileSystem.from_uri(f"{bucket.uri}/store/shards")
    selector = fs.FileSelector(root, recursive=True, allow_not_found=True)
    references = []
    for info in filesystem.get_file_info(selector):
        if info.path.endswith(".parquet"):
            table = pq.read_table(info.path, filesystem=filesystem, columns=[IMAGE_SOURCES])
            references += table.column(IMAGE_SOURCES).to_pylist()
    return references


@pytest.mark.spark
@pytest.mark.slow
@pytest.mark.distributed
def test_ranks_on_two_hosts_train_from_an_s3_image_folder(spark_cluster, s3_bucket, workdir):
    data = _upload_images(s3_bucket, pattern_folder(workdir / "images", per_class=16))
    args = [
        "-m", "deepspark", "train", "--data", data, "--image-size", "16", "--filters", "4,8",
        "--epochs", "2", "--batch-size", "8", "--workers", "2", "--launcher", "spark",
        "--store", f"{s3_bucket.uri}/store", "--json",
    ]  # fmt: skip
    env = _driver_env(workdir)
    done = spark_cluster.run_driver(args, workdir, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:] + spark_cluster.logs()
    result = json.loads(done.stdout)
    assert (result["world_size"], result["launcher"]) == (2, "spark")
    assert result["epochs_completed"] == 2 and result["model_uri"]
    references = _shard_references(s3_bucket)
    assert references and all(reference.startswith(data) for reference in references)


# ---- the S3 fixtures (no cluster) ----------------------------------------------------------


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
    assert s3_bucket.endpoint == s3_server.endpoint
    assert os.environ["AWS_ENDPOINT_URL"] == s3_server.endpoint
    assert s3_server.client().list_objects_v2(Bucket=s3_bucket.name)["KeyCount"] == 0
