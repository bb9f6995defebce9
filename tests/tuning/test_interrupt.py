"""Ctrl-C on a real ``deepspark tune`` process: finished trials stay in MLflow, the parent run
ends KILLED, exit code 130, and ``--resume`` continues the same study."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip("optuna", reason="the tune extra is not installed")

# The command as `deepspark` will register it (cli.add_command), in a separate process.
REGISTERED_MAIN = (
    "import sys; from deepspark.cli.main import cli, main; from deepspark.cli.tune import tune; "
    "cli.add_command(tune); main(sys.argv[1:])"
)


def finished_trials(client, experiment_ids):
    runs = client.search_runs(experiment_ids, filter_string="tags.`deepspark.tune.role` = 'trial'")
    return [run for run in runs if run.info.status == "FINISHED"]


@pytest.mark.slow
def test_ctrl_c_keeps_finished_trials_and_resume_continues(regression_csv, workdir):
    import mlflow

    command = [sys.executable, "-c", REGISTERED_MAIN, "tune", "--data", str(regression_csv)]
    command += ["--target", "y", "--trials", "30", "--space", "hidden=8", "--epochs", "3"]
    command += ["--batch-size", "32", "--json"]
    process = subprocess.Popen(
        command, cwd=workdir, env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    client = mlflow.MlflowClient()
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and process.poll() is None:
            experiments = [e.experiment_id for e in client.search_experiments()]
            if len(finished_trials(client, experiments)) >= 2:
                break
            time.sleep(0.5)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err.decode()
    assert out == b"" and b"deepspark: error: interrupted" in err

    experiments = [e.experiment_id for e in client.search_experiments()]
    parent = client.search_runs(experiments, "tags.`deepspark.tune.role` = 'search'")[0]
    assert parent.info.status == "KILLED"
    trials = client.search_runs(experiments, "tags.`deepspark.tune.role` = 'trial'")
    done = [run for run in trials if run.info.status == "FINISHED"]
    assert len(done) >= 2
    assert all(run.data.tags["deepspark.tune.state"] == "COMPLETE" for run in done)
    assert {run.info.status for run in trials} <= {"FINISHED", "KILLED"}

    from deepspark.workflows.tune import tune

    result = tune(resume=parent.info.run_id, trials=len(done) + 1)
    assert result.trials["complete"] == len(done) + 1
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"
