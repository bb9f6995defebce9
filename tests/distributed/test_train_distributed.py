"""``deepspark train --workers 2``: the real CLI, real worker processes, a real MLflow store, on
the default backend (JAX).

A worker killed mid-run makes the launcher restart the job from rank 0's last checkpoint, in the
same MLflow run, losing no completed epoch; the JSON says how it ran; the driver writes the
TensorBoard files and registers the model. Warmup runs too (on JAX the
rate changes mid-epoch, outside Keras' compiled step)."""

import json
import logging
import os
import re
import signal
import subprocess
import sys

import mlflow
import pytest

import deepspark
from tests.conftest import make_table
from tests.distributed.checks import worker_pids
from tests.integration.test_resume import wait_for_epoch
from tests.training.test_tensorboard import assert_logged_to_run, assert_same_curves

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

EPOCHS = 5
# MobileNet (v1) at width 0.25 without weights: a pretrained-style base with BatchNorm whose
# graph is about half MobileNetV2's, so each worker of each phase compiles it faster.
TINY_BASE = {"base": "mobilenet", "weights": "none", "base_options": {"alpha": 0.25}}


def test_killed_worker_restarts_from_last_checkpoint(workdir):
    data = workdir / "table.csv"
    make_table(rows=400).to_csv(data, index=False)
    command = [sys.executable, "-m", "deepspark", "train", "--data", str(data), "--target", "y"]
    command += ["--hidden", "32,32", "--epochs", str(EPOCHS), "--batch-size", "16"]
    command += ["--patience", "100", "--no-reduce-lr", "--workers", "2", "--warmup-epochs", "2"]
    command += ["--tensorboard", "tb", "--register", "houses", "--alias", "champion", "--json"]
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
    # Per-rank progress on stderr (distributed/progress.py).
    assert "rank 1 connected (2 ranks" in stderr and "rank 1: first batch done" in stderr
    assert "rank 0: epoch 1/" in stderr
    run = mlflow.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["deepspark.world_size"] == "2"
    client = mlflow.MlflowClient()
    for name in ("train_loss", "val_loss"):
        steps = sorted(metric.step for metric in client.get_metric_history(run_id, name))
        assert steps == list(range(EPOCHS)), name  # every epoch exactly once, none lost
    assert len(mlflow.search_runs(experiment_names=["deepspark"])) == 1
    # The driver writes the TensorBoard files (rank 0 may not see the folder) and registers.
    assert_same_curves(workdir / "tb", run_id)
    assert_logged_to_run(workdir / "tb", run_id)
    assert result["registered"]["model_uri"] == "models:/houses/1"
    assert deepspark.load_model("models:/houses@champion").metadata["run_id"] == run_id


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


def test_transfer_learning_runs_both_phases_on_two_workers_from_image_references(
    workdir, capfd, caplog
):
    """An image model on 2 workers: the shards hold image references (each rank decodes its
    own); both transfer-learning phases run distributed, the head phase on the frozen base's
    features that each rank computes once for its shard, the second from the driver's
    unfrozen, recompiled model at the fine-tuning rate; BatchNorm statistics stay put."""
    import keras
    import numpy as np
    import pandas as pd

    import deepspark
    from deepspark.distributed.shards import IMAGE_SOURCES, ShardSet, read_shard
    from tests.image_data import pattern_folder
    from tests.training.test_transfer import batch_norm_statistics

    class EpochMarks(keras.callbacks.Callback):  # a notebook's callback: sent by value
        def __init__(self, folder, rank_zero_only):
            super().__init__()
            self.folder, self.rank_zero_only = str(folder), rank_zero_only

        def on_epoch_end(self, epoch, logs=None):
            import os

            name = f"{os.getpid()}-{epoch}-{'val_loss' in (logs or {})}"
            open(os.path.join(self.folder, name), "w").close()

    marks = {flag: workdir / f"marks-{flag}" for flag in (True, False)}
    for folder in marks.values():
        folder.mkdir()
    folder = pattern_folder(workdir / "patterns", per_class=12, size=32)
    with caplog.at_level(logging.INFO, logger="deepspark"):  # the ranks log at this level too
        result = deepspark.train(
            str(folder), workers=2, epochs=1, fine_tune_layers=2, fine_tune_epochs=1,
            fine_tune_lr=1e-4, image_size=32, batch_size=8, patience=100, reduce_lr=False,
            lr=0.003, callbacks=[EpochMarks(marks[True], True), EpochMarks(marks[False], False)],
            **TINY_BASE,
        )  # fmt: skip
    # The head phase: each rank ran the frozen base once over its own rows, not every epoch.
    logged = capfd.readouterr().err
    for rank in (0, 1):
        assert re.search(rf"\[rank {rank}\] frozen base: features of \d+ images computed", logged)
    # User callbacks ran in both phases, with the epoch's logs: on every rank, or on rank 0 only.
    every_rank = sorted(path.name.split("-", 1)[1] for path in marks[False].iterdir())
    assert every_rank == ["0-True", "0-True", "1-True", "1-True"]
    assert sorted(path.name.split("-", 1)[1] for path in marks[True].iterdir()) == [
        "0-True", "1-True"
    ]  # fmt: skip
    assert result.world_size == 2 and result.epochs_completed == 2 and result.bad_images == 1
    client = mlflow.MlflowClient()
    rates = [m.value for m in client.get_metric_history(result.run_id, "learning_rate")]
    assert rates == pytest.approx([0.006, 2e-4])  # both x 2 workers (--scale-lr)
    assert sorted(m.step for m in client.get_metric_history(result.run_id, "val_loss")) == [0, 1]
    model = deepspark.load_model(result.model_uri)
    for statistics in batch_norm_statistics(model.keras_model):
        assert np.all((statistics == 0) | (statistics == 1))
    scored = model.predict(pd.DataFrame({"path": [str(folder / "vertical" / "001.png")]}))
    assert scored["error"].isna().all()
    # Each rank's shard holds image references (paths), not decoded pixels.
    shard_dirs = list((workdir / ".deepspark" / "store" / "shards").glob("*-w2"))
    assert len(shard_dirs) == 1
    inputs, targets = read_shard(ShardSet(shard_dirs[0], 2), "train", 1)
    assert set(inputs) == {IMAGE_SOURCES}
    assert str(inputs[IMAGE_SOURCES][0]).endswith((".png", ".jpg"))
    assert len(targets) == len(inputs[IMAGE_SOURCES])


def test_a_phase_resumes_only_its_own_checkpoint(tmp_path):
    """A restarted fine-tuning job resumes its own checkpoint; a fresh one starts from the
    state the head phase left (the head phase's checkpoint is not its to resume)."""
    from deepspark.distributed.worker import WorkerJob, _starting_state
    from deepspark.training.checkpoint import CheckpointStore

    store = CheckpointStore(tmp_path)
    (tmp_path / "state.json").write_text(json.dumps({"epoch": 1, "phase": "head"}))
    start = {"epoch": 1, "phase": "fine_tune", "fine_tune_from_epoch": 2}

    def job(phase, start_state=None):
        return WorkerJob(
            config={}, shards=None, initial_model=b"", checkpoint_dir=str(tmp_path),
            run_id="r", start_state=start_state,
            checkpoint_extras={"phase": phase} if phase else None,
        )  # fmt: skip

    assert _starting_state(job("head"), store) == ({"epoch": 1, "phase": "head"}, True)
    assert _starting_state(job("fine_tune", start), store) == (start, False)
    (tmp_path / "state.json").write_text(json.dumps({"epoch": 3, "phase": "fine_tune"}))
    assert _starting_state(job("fine_tune", start), store) == (
        {"epoch": 3, "phase": "fine_tune"}, True
    )  # fmt: skip
    (tmp_path / "state.json").write_text(json.dumps({"epoch": 4}))
    assert _starting_state(job(None), store) == ({"epoch": 4}, True)  # a run without phases
