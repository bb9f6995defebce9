"""``deepspark train --workers 2``: the real CLI, real worker processes, a real MLflow store, on
the default backend (JAX).

A worker killed mid-run makes the launcher restart the job from rank 0's last checkpoint, in the
same MLflow run, losing no completed epoch; the JSON says how it ran. Warmup runs too (on JAX the
rate changes mid-epoch, outside Keras' compiled step)."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from tests.conftest import make_table
from tests.integration.test_resume import wait_for_epoch

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

EPOCHS = 5


def worker_pids(parent: int) -> dict[int, int]:
    """rank -> pid of the launcher's worker processes under ``parent``."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            command = (proc / "cmdline").read_bytes()
            parent_pid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = (proc / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if parent_pid == parent and b"deepspark.distributed._entry" in command:
            rank = next(int(item[5:]) for item in environ if item.startswith(b"RANK="))
            found[rank] = int(proc.name)
    return found


def test_killed_worker_restarts_from_last_checkpoint(workdir):
    data = workdir / "table.csv"
    make_table(rows=400).to_csv(data, index=False)
    command = [sys.executable, "-m", "deepspark", "train", "--data", str(data), "--target", "y"]
    command += ["--hidden", "32,32", "--epochs", str(EPOCHS), "--batch-size", "16"]
    command += ["--patience", "100", "--no-reduce-lr", "--workers", "2", "--warmup-epochs", "2"]
    command += ["--json"]
    process = subprocess.Popen(
        command, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    run_id, _ = wait_for_epoch(workdir, process, 1)
    pids = worker_pids(process.pid)
    assert set(pids) == {0, 1}, pids
    os.kill(pids[1], signal.SIGKILL)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-3000:]
    result = json.loads(stdout)
    assert (result["world_size"], result["launcher"], result["restarts"]) == (2, "local", 1)
    assert result["run_id"] == run_id
    assert result["epochs_completed"] == EPOCHS
    assert "restart 1 of 2" in stderr
    run = mlflow.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["deepspark.world_size"] == "2"
    client = mlflow.MlflowClient()
    for name in ("train_loss", "val_loss"):
        steps = sorted(metric.step for metric in client.get_metric_history(run_id, name))
        assert steps == list(range(EPOCHS)), name  # every epoch exactly once, none lost
    assert len(mlflow.search_runs(experiment_names=["deepspark"])) == 1


def test_invalid_launcher_backend_is_a_usage_error(workdir, regression_csv):
    """The old --backend spelling still works: a deprecation line, then the usage error."""
    from tests.conftest import run_cli

    done = run_cli(
        "train",
        "--data",
        str(regression_csv),
        "--target",
        "y",
        "--workers",
        "2",
        "--backend",
        "horovod",
        cwd=workdir,
    )
    assert done.returncode == 2
    assert "--backend is deprecated" in done.stderr
    assert "Received: collectives='horovod'" in done.stderr and "Traceback" not in done.stderr


def test_image_models_train_on_two_workers_from_shards_of_image_references(workdir):
    import deepspark
    from deepspark.distributed.shards import IMAGE_SOURCES, ShardSet, read_shard
    from tests.image_data import pattern_folder

    folder = pattern_folder(workdir / "patterns", per_class=20, size=16)
    result = deepspark.train(
        str(folder), workers=2, filters=(8, 16), epochs=3, batch_size=8, patience=100
    )
    assert result.world_size == 2 and result.epochs_completed == 3 and result.bad_images == 1
    import pandas as pd

    model = deepspark.load_model(result.model_uri)
    scored = model.predict(pd.DataFrame({"path": [str(folder / "vertical" / "001.png")]}))
    assert scored["error"].isna().all()
    # Each rank's shard holds image references (paths), not decoded pixels.
    shard_dirs = list((workdir / ".deepspark" / "shards").glob("*-w2"))
    assert len(shard_dirs) == 1
    inputs, targets = read_shard(ShardSet(shard_dirs[0], 2), "train", 1)
    assert set(inputs) == {IMAGE_SOURCES}
    assert str(inputs[IMAGE_SOURCES][0]).endswith((".png", ".jpg"))
    assert len(targets) == len(inputs[IMAGE_SOURCES])
