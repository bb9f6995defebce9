"""``deepspark train --workers 2 --launcher spark`` on the multi-host harness: executors that
cannot see the driver's folder, data and store on S3 (moto).

- A table streamed from an ``s3://`` Parquet folder into a store on S3 trains on two executors;
  killing one executor mid-run restarts the ranks from the checkpoint in the store, losing no
  completed epoch, and the driver's MLflow run (a sqlite file the executors cannot see) gets
  every epoch exactly once.
- The same run with a driver-local store fails before any work with one line naming --store.
"""

from __future__ import annotations

import json
import time

import mlflow
import pytest

from tests.conftest import make_table

pytestmark = [pytest.mark.spark, pytest.mark.slow, pytest.mark.distributed]

EPOCHS = 4


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


def test_training_from_s3_survives_a_killed_executor(spark_cluster, s3_bucket, workdir):
    data = _upload_table(s3_bucket)
    env = {"DEEPSPARK_CHECKPOINT_DIR": "", "MLFLOW_TRACKING_URI": f"sqlite:///{workdir}/mlflow.db"}
    args = _train_args(data, f"{s3_bucket.uri}/store")
    with (workdir / "stdout").open("w") as stdout, (workdir / "stderr").open("w") as stderr:
        driver = spark_cluster.start_driver(args, workdir, env=env, stdout=stdout, stderr=stderr)
    try:
        deadline = time.monotonic() + 300
        while _checkpointed_epoch(s3_bucket, "store") < 1:
            assert driver.poll() is None and time.monotonic() < deadline, (
                workdir / "stderr"
            ).read_text()[-3000:] + spark_cluster.logs()
            time.sleep(0.2)
        spark_cluster.kill_executor(1)
        driver.wait(timeout=400)
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


def test_a_driver_local_store_fails_fast_naming_store(spark_cluster, s3_bucket, workdir):
    data = _upload_table(s3_bucket, rows=200)
    env = {"DEEPSPARK_CHECKPOINT_DIR": "", "MLFLOW_TRACKING_URI": f"sqlite:///{workdir}/mlflow.db"}
    started = time.monotonic()
    done = spark_cluster.run_driver(
        _train_args(data, str(workdir / "store")), workdir, env=env, timeout=240
    )
    assert done.returncode == 2, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("deepspark:")]
    assert len(lines) == 1 and "--store" in lines[0] and "not visible" in lines[0], done.stderr
    assert "Traceback" not in done.stderr
    assert time.monotonic() - started < 120
    written = [path for path in (workdir / "store").rglob("*") if path.is_file()]
    assert written == []  # no work was done, nothing half-written
