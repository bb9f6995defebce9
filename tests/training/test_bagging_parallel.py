"""Bagged ensembles with ``workers``: members trained in parallel worker processes, on the local
launcher and as Spark barrier tasks; a worker killed mid-job restarts it without training again
the members already in the store."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from pathlib import Path

import numpy as np
import pytest

from deepspark.config import make_config
from deepspark.models.bagged import is_bagged, members_of
from deepspark.models.inference import predict_arrays
from deepspark.training.bagging import train_bagged
from deepspark.training.prepare import prepare_data
from tests.conftest import make_table
from tests.distributed.checks import worker_pids

pytestmark = pytest.mark.distributed

SETTINGS = {"bagging": 2, "hidden": (8,), "epochs": 2, "batch_size": 32, "patience": 2}


@pytest.fixture(scope="module")
def table():
    return make_table(rows=200, seed=3, task="regression")


@pytest.fixture(scope="module")
def sequential(table):
    """The same split, folds and seeds in one process: the members every parallel run must
    reproduce (``prepared`` for its test inputs, the ``BaggedFit``)."""
    config = make_config({"data": "<pandas DataFrame>", "target": "y", **SETTINGS})
    prepared = prepare_data(config, data=table)
    return prepared, train_bagged(prepared, 2)


def assert_sequential_ensemble(result, sequential) -> None:
    """``result`` (a ``TrainResult``) logged the two members the sequential run trains."""
    import mlflow

    import deepspark

    prepared, reference = sequential
    run = mlflow.get_run(result.run_id)
    assert run.data.tags["deepspark.world_size"] == str(result.world_size)
    assert run.data.tags["deepspark.launcher"] == result.launcher
    assert {"member_0_best_epoch", "member_1_best_epoch"} <= set(run.data.metrics)
    model = deepspark.load_model(result.model_uri).keras_model
    assert is_bagged(model) and len(members_of(model)) == 2
    np.testing.assert_allclose(
        predict_arrays(model, prepared.inputs["test"]),
        predict_arrays(reference.model, prepared.inputs["test"]),
        atol=1e-5,
        rtol=1e-5,
    )
    assert result.metrics["val_rmse"] == pytest.approx(reference.oof_metrics["rmse"], rel=1e-5)
    assert result.epochs_completed == max(reference.member_epochs)


def test_parallel_members_make_the_sequential_ensemble(workdir, table, sequential):
    """One 2-worker launch (the seconds go to the workers' imports): each rank trains its
    member, the driver averages them and scores the out-of-fold rows."""
    import deepspark

    result = deepspark.train(table, "y", workers=2, **SETTINGS)
    assert (result.world_size, result.launcher, result.restarts) == (2, "local", 0)
    assert_sequential_ensemble(result, sequential)
    # The members' files were read back and the run's checkpoint folder removed.
    assert not list((workdir / "checkpoints").glob(f"{result.run_id}/bagging/*"))


@pytest.mark.spark
def test_members_train_as_spark_barrier_tasks(spark, workdir, table, sequential):
    """``launcher="spark"`` on local[2]: each member trained by a rank in a Spark barrier
    task, written to the store, the same ensemble."""
    import deepspark

    result = deepspark.train(table, "y", workers=2, launcher="spark", **SETTINGS)
    assert (result.world_size, result.launcher, result.restarts) == (2, "spark", 0)
    assert_sequential_ensemble(result, sequential)
    assert not list((workdir / "checkpoints").glob(f"{result.run_id}/bagging/*"))


class KillAfterFirstMember(threading.Thread):
    """Watches the run's members folder: once member 0 is complete in the store (its outcome
    file, written last), SIGKILLs the rank (now training member 1) as an out-of-memory kill
    would; then notes every version of member 0's ``.keras`` file (inode, mtime) until the
    driver removes the folder."""

    def __init__(self, checkpoints: Path):
        super().__init__(daemon=True)
        self.checkpoints = checkpoints
        self.killed: int | None = None
        self.versions: set[tuple[int, int]] = set()
        self.seen: set[str] = set()
        self.finished = threading.Event()

    def run(self) -> None:
        while not self.finished.wait(0.02):
            for path in self.checkpoints.glob("*/bagging/member-*"):
                with contextlib.suppress(FileNotFoundError):
                    if path.name == "member-00.keras":
                        stat = path.stat()
                        self.versions.add((stat.st_ino, stat.st_mtime_ns))
                    self.seen.add(path.name)
            if self.killed is None and "member-00.json" in self.seen:
                self.killed = worker_pids(os.getpid()).get(0, 0)
                if self.killed:
                    os.kill(self.killed, signal.SIGKILL)


def test_killed_worker_restarts_without_training_its_finished_member_again(
    workdir, table, sequential, capfd, caplog
):
    """One rank trains both members; SIGKILLed after member 0 is in the store, the job starts
    again (one restart, recorded in the run) and trains member 1 only: member 0's file is the
    one written before the kill. The ensemble is still the sequential one."""
    import mlflow

    import deepspark

    caplog.set_level(logging.INFO, logger="deepspark")  # the ranks log at the driver's level
    watcher = KillAfterFirstMember(workdir / "checkpoints")
    watcher.start()
    try:
        result = deepspark.train(table, "y", workers=1, launcher="local", **SETTINGS)
    finally:
        watcher.finished.set()
        watcher.join()
    assert watcher.killed, "rank 0 was not found to kill (it had already exited?)"
    assert (result.world_size, result.launcher, result.restarts) == (1, "local", 1)
    assert mlflow.get_run(result.run_id).data.metrics["restarts"] == 1
    assert {"member-00.keras", "member-01.keras", "member-01.json"} <= watcher.seen
    assert len(watcher.versions) == 1  # written once: not trained again after the restart
    assert "worker 0 exited -9; restart 1 of 2" in caplog.text
    logged = capfd.readouterr().err  # the ranks' own lines
    assert logged.count("bagging: member 1/2 already in the store") == 1
    assert "bagging: member 2/2 trained" in logged
    assert_sequential_ensemble(result, sequential)
