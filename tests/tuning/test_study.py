"""The study: objectives, the defaults (TPE seeded, median pruning), pruning in a Spark task
against a snapshot, and trials a killed process left running."""

from __future__ import annotations

import pytest

optuna = pytest.importorskip("optuna", reason="the tune extra is not installed")

from deepspark.errors import UserInputError  # noqa: E402
from deepspark.tuning import study as studies  # noqa: E402


def test_objectives_by_task():
    assert studies.resolve_objective(None, "regression").monitor == "val_rmse"
    assert studies.resolve_objective(None, "binary").metric == "log_loss"
    auc = studies.resolve_objective("auc", "binary")
    assert (auc.direction, auc.monitor) == ("maximize", "val_auc")
    assert auc.better(0.9, 0.8) and not studies.OBJECTIVES["rmse"].better(2.0, 1.0)
    with pytest.raises(UserInputError, match=r"Invalid --metric for a regression task; valid"):
        studies.resolve_objective("accuracy", "regression")
    with pytest.raises(UserInputError, match=r"Received: metric='auc'"):
        studies.resolve_objective("auc", "multiclass")


def test_defaults_are_seeded_tpe_and_median_pruning():
    sampler = studies.default_sampler(seed=3, trials=30)
    assert isinstance(sampler, optuna.samplers.TPESampler)
    draws = []
    for _ in range(2):
        study = optuna.create_study(sampler=studies.default_sampler(seed=3, trials=30))
        draws.append([study.ask().suggest_float("x", 0, 1) for _ in range(3)])
    assert draws[0] == draws[1]
    assert isinstance(studies.default_pruner(epochs=50), optuna.pruners.MedianPruner)


def _study_with_curves(curves, pruner):
    study = optuna.create_study(pruner=pruner)
    for curve in curves:
        trial = study.ask()
        for step, value in enumerate(curve):
            trial.report(value, step)
        study.tell(trial, curve[-1])
    return study


@pytest.mark.parametrize("value", [0.5, 5.0])
def test_a_replica_prunes_as_the_drivers_study_would(value):
    pruner = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    study = _study_with_curves([[3.0, 2.0, 1.0], [4.0, 3.0, 2.0], [5.0, 1.0, 0.5]], pruner)
    replica = studies.ReplicaReporter(
        studies.pruning_snapshot(study), direction="minimize", pruner=pruner
    )
    real = study.ask()
    for step, reported in enumerate([4.0, value]):
        real.report(reported, step)
        replica.report(reported, step)
        assert replica.should_prune() == real.should_prune()
    assert replica.should_prune() == (value > 2.0)


def test_trials_left_running_are_failed_and_marked_interrupted(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = studies.create_study(
        storage=storage, name="s", direction="minimize", sampler=None, pruner=None
    )
    done = study.ask()
    study.tell(done, 1.0)
    study.ask()  # a process killed while this trial trained
    reopened = studies.load_study(storage=storage, name="s", sampler=None, pruner=None)
    abandoned = studies.abandon_running(reopened)
    assert [trial.number for trial in abandoned] == [1]
    assert [trial.number for trial in studies.finished_trials(reopened)] == [0]
    assert reopened.trials[1].state == optuna.trial.TrialState.FAIL


def test_a_missing_storage_cannot_be_resumed(tmp_path):
    with pytest.raises(UserInputError, match=r"Optuna storage is gone .* start a new search"):
        studies.load_study(
            storage=f"sqlite:///{tmp_path / 'gone.db'}", name="s", sampler=None, pruner=None
        )
