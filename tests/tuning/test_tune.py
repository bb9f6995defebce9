"""``deepspark.tune`` end to end: trials as MLflow child runs, the parent run's report, the best
configuration retrained with the test split scored once, pruning, failures, timeout,
interruption and resume, and bad input."""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd
import pytest

optuna = pytest.importorskip("optuna", reason="the tune extra is not installed")

from deepspark.errors import MissingDependencyError, UserInputError  # noqa: E402
from deepspark.tuning import trial as trial_module  # noqa: E402
from deepspark.tuning.space import OPTIONAL_ENTRIES, config_fields  # noqa: E402
from deepspark.workflows.tune import tune  # noqa: E402

# Tiny trials: a second or two each.
TINY = {"epochs": 3, "batch_size": 32, "patience": 3}
# The network settings TrainConfig has now (ensemble size, embeddings...) stay at their defaults.
WITHOUT_OPTIONAL = {name: None for name in OPTIONAL_ENTRIES if name in config_fields()}
SMALL_SPACE = {"layers": "1:2", "width": "4:16", **WITHOUT_OPTIONAL}


def child_runs(parent_id):
    import mlflow

    return mlflow.search_runs(
        search_all_experiments=True,
        filter_string=f"tags.mlflow.parentRunId = '{parent_id}'",
        output_format="list",
    )


def trial_runs(parent_id):
    runs = [run for run in child_runs(parent_id) if run.data.tags["deepspark.tune.role"] == "trial"]
    return sorted(runs, key=lambda run: int(run.data.tags["deepspark.tune.trial"]))


def get_run(run_id):
    import mlflow

    return mlflow.MlflowClient().get_run(run_id)


@pytest.fixture
def spy_trials(monkeypatch):
    """Records what every trial was given (and lets a test interrupt one)."""
    calls = []
    original = trial_module.train_trial

    def recording(prepared, config, **options):
        calls.append({"splits": set(prepared.inputs), "config": config})
        hook = getattr(recording, "hook", None)
        if hook is not None:
            hook(len(calls))
        return original(prepared, config, **options)

    monkeypatch.setattr(trial_module, "train_trial", recording)
    return recording, calls


def test_search_tracks_trials_and_retrains_the_best(regression_csv, workdir, spy_trials):
    import mlflow

    _, calls = spy_trials
    result = tune(str(regression_csv), "y", trials=3, space=SMALL_SPACE, **TINY)

    # Trials never see the test split; the retrained best scores it once.
    assert len(calls) == 3 and all(call["splits"] == {"train", "val"} for call in calls)
    assert result.trials == {"complete": 3, "pruned": 0, "failed": 0}
    assert set(result.best_params) == {"layers", "width", "dropout", "lr"}
    assert (
        result.best_settings["hidden"]
        == (result.best_params["width"],) * (result.best_params["layers"])
    )
    # Same split, same seed: the retrained model scores what its trial scored.
    assert result.metrics["val_rmse"] == pytest.approx(result.best_value, rel=1e-4)
    assert "test_rmse" in result.metrics

    trials = trial_runs(result.run_id)
    assert len(trials) == 3
    for run in trials:
        assert run.info.status == "FINISHED"
        assert run.data.tags["deepspark.tune.state"] == "COMPLETE"
        assert {"layers", "width", "dropout", "lr", "hidden"} <= set(run.data.params)
        curve = mlflow.MlflowClient().get_metric_history(run.info.run_id, "val_loss")
        assert [metric.step for metric in curve] == [0, 1, 2]
        assert "val_rmse" in run.data.metrics
    best_trial_run = trials[result.best_trial]
    assert best_trial_run.data.metrics["val_rmse"] == pytest.approx(result.best_value)

    best_run = get_run(result.best_run_id)
    assert best_run.data.tags["mlflow.parentRunId"] == result.run_id
    assert best_run.data.tags["deepspark.tune.role"] == "best"
    assert best_run.info.run_name == "best"

    parent = get_run(result.run_id)
    assert parent.info.status == "FINISHED" and parent.info.run_name == "tune"
    params = parent.data.params
    assert params["space_width"] == "4:16" and params["tune_metric"] == "rmse"
    assert params["best_width"] == str(result.best_params["width"])
    assert "dropout" not in params and params["epochs"] == "3"
    assert parent.data.tags["deepspark.tune.storage"] == result.storage
    assert parent.data.metrics["test_rmse"] == pytest.approx(result.metrics["test_rmse"])
    assert parent.data.metrics["best_val_rmse"] == pytest.approx(result.best_value)
    history = mlflow.MlflowClient().get_metric_history(result.run_id, "best_rmse")
    assert len(history) == 3 and history[-1].value == pytest.approx(result.best_value)

    artifacts = mlflow.artifacts.download_artifacts(run_id=result.run_id, dst_path="parent")
    best = json.loads(open(f"{artifacts}/best_config.json").read())
    assert best["trial"] == result.best_trial and best["config"]["hidden"] == list(
        result.best_settings["hidden"]
    )
    rows = json.loads(open(f"{artifacts}/trials.json").read())["trials"]
    assert [row["state"] for row in rows] == ["COMPLETE"] * 3
    with open(f"{artifacts}/search.png", "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"

    import deepspark

    model = deepspark.load_model(result.model_uri)
    frame = pd.read_csv(regression_csv).drop(columns="y").head(5)
    assert np.isfinite(model.predict(frame)["prediction"]).all()


def test_median_pruning_stops_bad_trials_and_tags_them(regression_csv, workdir):
    result = tune(
        str(regression_csv),
        "y",
        trials=5,
        space={"lr": "0.02,0.00001", "hidden": "8", "dropout": "0", **WITHOUT_OPTIONAL},
        sampler=optuna.samplers.RandomSampler(seed=0),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0),
        **TINY,
    )
    assert result.trials["pruned"] >= 1 and result.trials["complete"] >= 1
    assert result.best_params["lr"] == 0.02
    states = {run.data.tags["deepspark.tune.state"] for run in trial_runs(result.run_id)}
    assert states == {"COMPLETE", "PRUNED"}
    for run in trial_runs(result.run_id):
        if run.data.tags["deepspark.tune.state"] == "PRUNED":
            assert run.info.status == "FINISHED"
            assert run.data.tags["deepspark.tune.reason"].startswith("pruned after epoch 1")
            assert run.data.metrics["epochs_completed"] == 1


def test_invalid_trials_fail_and_the_search_goes_on(regression_csv, workdir):
    result = tune(
        str(regression_csv),
        "y",
        trials=3,
        space={"dropout": "0.1,1.5", "hidden": "8", "lr": "0.01", **WITHOUT_OPTIONAL},
        sampler=optuna.samplers.RandomSampler(seed=0),  # draws dropout 1.5, 0.1, 1.5
        **TINY,
    )
    assert result.trials == {"complete": 1, "pruned": 0, "failed": 2}
    assert result.best_trial == 1
    failed = [
        run for run in trial_runs(result.run_id) if run.data.tags["deepspark.tune.state"] == "FAIL"
    ]
    assert failed and all(run.info.status == "FAILED" for run in failed)
    assert all("Invalid --dropout" in run.data.tags["deepspark.tune.reason"] for run in failed)


def test_timeout_stops_starting_trials(regression_csv, workdir):
    result = tune(
        str(regression_csv),
        "y",
        trials=50,
        timeout=0.01,
        space={"hidden": "8", **WITHOUT_OPTIONAL},
        **TINY,
    )
    assert result.timed_out and sum(result.trials.values()) == 1
    assert result.model_uri


def test_interrupted_search_keeps_finished_trials_and_resumes(regression_csv, workdir, spy_trials):
    recording, calls = spy_trials

    def interrupt_third(count):
        if count == 3:
            raise KeyboardInterrupt

    recording.hook = interrupt_third
    with pytest.raises(KeyboardInterrupt):
        tune(
            str(regression_csv),
            "y",
            trials=4,
            space={"hidden": "8", "dropout": "0", **WITHOUT_OPTIONAL},
            **TINY,
        )
    import mlflow

    parent = mlflow.search_runs(
        search_all_experiments=True,
        filter_string="tags.`deepspark.tune.role` = 'search'",
        output_format="list",
    )[0]
    assert parent.info.status == "KILLED"
    runs = trial_runs(parent.info.run_id)
    assert [run.info.status for run in runs] == ["FINISHED", "FINISHED", "KILLED"]
    assert runs[2].data.tags["deepspark.tune.state"] == "INTERRUPTED"

    recording.hook = None
    result = tune(resume=parent.info.run_id)
    assert result.resumed and result.run_id == parent.info.run_id
    assert result.trials == {"complete": 4, "pruned": 0, "failed": 0}
    assert len(calls) == 3 + 2  # the interrupted trial runs again, then the fourth
    runs = trial_runs(parent.info.run_id)
    assert [run.info.status for run in runs] == ["FINISHED"] * 2 + ["KILLED"] + ["FINISHED"] * 2
    assert get_run(parent.info.run_id).info.status == "FINISHED"
    with pytest.raises(UserInputError, match=r"already FINISHED; there is nothing to resume"):
        tune(resume=parent.info.run_id)


def test_resume_needs_a_search_run(regression_csv, workdir):
    import deepspark

    trained = deepspark.train(str(regression_csv), "y", hidden=(8,), **TINY)
    with pytest.raises(UserInputError, match=r"is not a deepspark search"):
        tune(resume=trained.run_id)
    with pytest.raises(UserInputError, match=r"MLflow run not found"):
        tune(resume="0123456789abcdef")


def test_classification_objective_is_log_loss(binary_csv, workdir):
    result = tune(
        str(binary_csv),
        "y",
        trials=2,
        space={"hidden": "8", "dropout": "0", **WITHOUT_OPTIONAL},
        **TINY,
    )
    assert result.metric == "log_loss" and result.direction == "minimize"
    assert result.metrics["val_log_loss"] == pytest.approx(result.best_value, rel=1e-4)


@pytest.mark.parametrize(
    ("options", "error", "pattern"),
    [
        ({"trials": 0}, UserInputError, r"Invalid --trials: must be a positive integer"),
        ({"timeout": -1}, UserInputError, r"Invalid --timeout"),
        ({"space": {"units": "1:2"}}, UserInputError, r"Unknown search space key 'units'"),
        ({"space": {"dropout": "1:2"}}, UserInputError, r"yields no valid trial"),
        ({"space": {"lr": "0.1"}, "lr": 0.01}, UserInputError, r"'lr' is both a fixed setting"),
        ({"metric": "auc"}, UserInputError, r"Invalid --metric for a regression task"),
        ({"workers": 2}, UserInputError, r"tune trains each trial in one process"),
        (
            {
                "space": {
                    "lr": None,
                    "dropout": None,
                    "layers": None,
                    "width": None,
                    **WITHOUT_OPTIONAL,
                }
            },
            UserInputError,
            r"The search space is empty",
        ),
    ],
)
def test_bad_input_is_one_user_error(regression_csv, workdir, options, error, pattern):
    with pytest.raises(error, match=pattern):
        tune(str(regression_csv), "y", **{**TINY, **options})


def test_spark_without_pyspark_names_the_extra(regression_csv, workdir, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyspark", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'deepspark\[spark\]'"):
        tune(str(regression_csv), "y", spark=True, **TINY)


def test_no_completed_trial_is_a_user_error_and_the_parent_failed(
    regression_csv, workdir, monkeypatch
):
    import mlflow

    def diverge(prepared, config, **options):
        return trial_module.TrialOutcome("FAIL", reason="diverged: the loss became NaN")

    monkeypatch.setattr(trial_module, "train_trial", diverge)
    with pytest.raises(UserInputError, match=r"yields no valid trial: 2 trials, none completed"):
        tune(str(regression_csv), "y", trials=2, space={"hidden": "8", **WITHOUT_OPTIONAL}, **TINY)
    parent = mlflow.search_runs(search_all_experiments=True, output_format="list")
    statuses = {run.data.tags.get("deepspark.tune.role"): run.info.status for run in parent}
    assert statuses["search"] == "FAILED"
