"""``tune(spark=True)``: trials as Spark tasks, several at a time, the study on the driver."""

from __future__ import annotations

import pytest

optuna = pytest.importorskip("optuna", reason="the tune extra is not installed")

from deepspark.workflows.tune import tune  # noqa: E402
from tests.tuning.test_tune import TINY, WITHOUT_OPTIONAL, trial_runs  # noqa: E402

pytestmark = pytest.mark.spark


def test_trials_run_as_spark_tasks_and_are_tracked_on_the_driver(
    regression_csv, workdir, spark, monkeypatch
):
    import mlflow

    from deepspark.tuning import trial as trial_module

    def not_on_the_driver(*args, **kwargs):
        raise AssertionError("a trial trained on the driver")

    monkeypatch.setattr(trial_module, "train_trial", not_on_the_driver)
    result = tune(
        str(regression_csv),
        "y",
        trials=3,
        spark=True,
        parallelism=2,
        space={"hidden": "8|4", "dropout": "0", **WITHOUT_OPTIONAL},
        **TINY,
    )
    assert result.trials == {"complete": 3, "pruned": 0, "failed": 0}
    runs = trial_runs(result.run_id)
    assert len(runs) == 3
    for run in runs:
        assert run.info.status == "FINISHED"
        assert run.data.tags["deepspark.tune.state"] == "COMPLETE"
        curve = mlflow.MlflowClient().get_metric_history(run.info.run_id, "val_loss")
        assert [metric.step for metric in curve] == [0, 1, 2]
        assert "val_rmse" in run.data.metrics and "learning_rate" in run.data.metrics
    # Two trials at a time: the first two started before either finished.
    first, second = runs[0].info, runs[1].info
    assert second.start_time < first.end_time
    study = optuna.load_study(study_name=result.study_name, storage=result.storage)
    assert all(trial.intermediate_values for trial in study.trials)
    assert result.metrics["val_rmse"] == pytest.approx(result.best_value, rel=1e-4)


def test_spark_trials_prune_against_the_finished_trials(regression_csv, workdir, spark):
    result = tune(
        str(regression_csv),
        "y",
        trials=4,
        spark=True,
        parallelism=1,
        space={"lr": "0.02,0.00001", "hidden": "8", "dropout": "0", **WITHOUT_OPTIONAL},
        sampler=optuna.samplers.RandomSampler(seed=0),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0),
        **TINY,
    )
    assert result.trials["pruned"] >= 1 and result.best_params["lr"] == 0.02
    pruned = [
        r for r in trial_runs(result.run_id) if r.data.tags["deepspark.tune.state"] == "PRUNED"
    ]
    assert all(run.data.metrics["epochs_completed"] == 1 for run in pruned)


@pytest.mark.slow
def test_ctrl_c_cancels_running_tasks_and_keeps_finished_trials(regression_csv, workdir, spark):
    import os
    import signal
    import threading
    import time

    import mlflow

    client = mlflow.MlflowClient()

    def interrupt_after_first_trial():
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            experiments = [e.experiment_id for e in client.search_experiments()]
            runs = client.search_runs(experiments, "tags.`deepspark.tune.state` = 'COMPLETE'")
            if runs:
                break
            time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGINT)

    watcher = threading.Thread(target=interrupt_after_first_trial, daemon=True)
    watcher.start()
    with pytest.raises(KeyboardInterrupt):
        tune(
            str(regression_csv),
            "y",
            trials=12,
            spark=True,
            parallelism=2,
            space={"hidden": "8|4", "dropout": "0", **WITHOUT_OPTIONAL},
            **{**TINY, "epochs": 6},
        )
    watcher.join()
    experiments = [e.experiment_id for e in client.search_experiments()]
    parent = client.search_runs(experiments, "tags.`deepspark.tune.role` = 'search'")[0]
    assert parent.info.status == "KILLED"
    runs = client.search_runs(experiments, "tags.`deepspark.tune.role` = 'trial'")
    states = [run.data.tags["deepspark.tune.state"] for run in runs]
    assert "COMPLETE" in states and len(runs) < 12
    for run in runs:
        expected = (
            "KILLED" if run.data.tags["deepspark.tune.state"] == "INTERRUPTED" else "FINISHED"
        )
        assert run.info.status == expected
    assert spark.sparkContext.statusTracker().getActiveJobsIds() == []
