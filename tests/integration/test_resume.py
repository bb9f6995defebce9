"""Killed runs: SIGKILL loses no completed epoch and resumes in the same MLflow run; Ctrl-C and
SIGTERM end the run KILLED. Real processes, real MLflow store."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest

from tests.conftest import make_table, run_cli

pytestmark = pytest.mark.slow

EPOCHS = 8


def _hostile_signal_start():
    """Start the child as a background job or a job runner may: SIGINT ignored and blocked."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})


def start_training(workdir, epochs=EPOCHS, preexec_fn=None, rows=2000):
    data = workdir / "big.csv"
    make_table(rows=rows).to_csv(data, index=False)
    args = [
        "train",
        "--data",
        str(data),
        "--target",
        "y",
        "--hidden",
        "64,64",
        "--epochs",
        str(epochs),
        "--batch-size",
        "8",
        "--patience",
        "100",
        "--no-reduce-lr",
        "--json",
    ]
    return subprocess.Popen(
        [sys.executable, "-m", "deepspark", *args],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
        preexec_fn=preexec_fn,
    )


def wait_for_epoch(workdir, process, epoch, timeout=240):
    """Wait until a checkpoint of ``epoch`` (0-based) or later exists; return (run_id, state)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for state_file in (workdir / "checkpoints").glob("*/state.json"):
            try:
                state = json.loads(state_file.read_text())
            except ValueError:
                continue
            if state["epoch"] >= epoch:
                return state_file.parent.name, state
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    raise AssertionError("no checkpoint in time")


def test_sigkill_then_resume_loses_no_epoch(workdir, capsys):
    from tests.cli.test_cli import invoke

    process = start_training(workdir)
    run_id, _ = wait_for_epoch(workdir, process, 2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    state = json.loads((workdir / "checkpoints" / run_id / "state.json").read_text())
    completed = state["epoch"] + 1
    assert 3 <= completed < EPOCHS
    assert mlflow.get_run(run_id).info.status == "RUNNING"  # SIGKILL cannot be caught

    done = run_cli("train", "--resume", run_id, "--json", cwd=workdir, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["run_id"] == run_id
    assert result["resumed_from_epoch"] == completed
    assert result["epochs_completed"] == EPOCHS
    run = mlflow.get_run(run_id)
    assert run.info.status == "FINISHED"
    steps = [m.step for m in mlflow.MlflowClient().get_metric_history(run_id, "train_loss")]
    assert sorted(set(steps)) == list(range(EPOCHS))  # every epoch, none lost
    assert len(mlflow.search_runs(experiment_names=["deepspark"])) == 1
    # resuming a finished run is refused (the same main(), in this process: no start-up to pay)
    code, _, err = invoke(capsys, "train", "--resume", run_id)
    assert code == 2 and "already FINISHED" in err


# Started the hostile way: SIGINT inherited ignored, both signals blocked. The CLI's main() puts
# every start into the same state (both unblocked, Ctrl-C raising KeyboardInterrupt), so a plain
# start adds no path of its own and is not repeated here.
@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_run_ends_killed(workdir, signal_number):
    process = start_training(workdir, epochs=200, preexec_fn=_hostile_signal_start, rows=400)
    run_id, _ = wait_for_epoch(workdir, process, 0)
    status = Path(f"/proc/{process.pid}/status").read_text()
    signal_masks = [line for line in status.splitlines() if line.startswith("Sig")]
    process.send_signal(signal_number)
    _, stderr = process.communicate(timeout=180)
    assert process.returncode == 130, (signal_masks, stderr[-2000:])
    assert "deepspark: error: interrupted" in stderr and "Traceback" not in stderr
    assert mlflow.get_run(run_id).info.status == "KILLED"


def test_resume_unknown_run(workdir):
    done = run_cli("train", "--resume", "0123456789abcdef0123456789abcdef", cwd=workdir)
    assert done.returncode == 2
    assert "MLflow run not found" in done.stderr and "Traceback" not in done.stderr
