"""The Optuna study behind a search: objective, sampler, pruner, storage, and the bookkeeping of
trials (``ask`` / ``tell`` on the process that owns the study).

The study lives in an Optuna storage the driver owns (by default a sqlite file under
``$DEEPSPARK_TUNE_DIR`` or ``./.deepspark/tune``): trials are asked for and told there, and
only there, so a search on Spark needs no storage the executors can reach, and ``resume``
reopens the same study.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from deepspark._optional import require
from deepspark.errors import UserInputError

logger = logging.getLogger("deepspark.tuning")
TUNE_DIR_ENV = "DEEPSPARK_TUNE_DIR"
# User attributes of a trial: its MLflow child run, and whether it ended by an interruption
# (such a trial is not counted as finished and is tried again on resume).
RUN_ATTR = "mlflow_run_id"
INTERRUPTED_ATTR = "interrupted"
REASON_ATTR = "reason"


@dataclasses.dataclass(frozen=True)
class Objective:
    """What a trial is scored by, on the validation split.

    Attributes:
        metric: The name ``evaluate_predictions`` gives it (``rmse``, ``log_loss``...).
        direction: ``minimize`` or ``maximize``.
        monitor: The per-epoch Keras log with the same meaning, reported for pruning.
        tasks: The tasks it applies to.
    """

    metric: str
    direction: str
    monitor: str
    tasks: tuple[str, ...]

    def better(self, value: float, than: float | None) -> bool:
        if than is None:
            return True
        return value < than if self.direction == "minimize" else value > than


CLASSIFICATION = ("binary", "multiclass")
OBJECTIVES = {
    "rmse": Objective("rmse", "minimize", "val_rmse", ("regression",)),
    "mae": Objective("mae", "minimize", "val_mae", ("regression",)),
    "mse": Objective("mse", "minimize", "val_mse", ("regression",)),
    "log_loss": Objective("log_loss", "minimize", "val_loss", CLASSIFICATION),
    "accuracy": Objective("accuracy", "maximize", "val_accuracy", CLASSIFICATION),
    "auc": Objective("auc", "maximize", "val_auc", ("binary",)),
}
DEFAULT_METRICS = {"regression": "rmse", "binary": "log_loss", "multiclass": "log_loss"}


def resolve_objective(metric: str | None, task: str) -> Objective:
    """The objective for ``task`` (default: rmse for regression, log_loss for classification).

    Raises:
        UserInputError: An unknown metric, or one the task does not have.
    """
    name = metric or DEFAULT_METRICS[task]
    objective = OBJECTIVES.get(name)
    if objective is None or task not in objective.tasks:
        valid = [key for key, item in OBJECTIVES.items() if task in item.tasks]
        raise UserInputError(
            f"Invalid --metric for a {task} task; valid metrics are {', '.join(valid)}. "
            f"Received: metric={name!r}"
        )
    return objective


def check_metric(metric: str | None, task: str | None) -> None:
    """``resolve_objective``'s checks that need no data: an unknown metric, or one that the
    given ``task`` does not have (``None``: the task is inferred later, from the data)."""
    if metric is None:
        return
    if task is not None:
        resolve_objective(metric, task)
    elif metric not in OBJECTIVES:
        raise UserInputError(
            f"Invalid --metric; valid metrics are {', '.join(OBJECTIVES)}. "
            f"Received: metric={metric!r}"
        )


def import_optuna():
    """Optuna, or ``MissingDependencyError`` with the install hint."""
    optuna = require("optuna", feature="Hyperparameter search (deepspark tune)")
    return optuna


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna's per-trial INFO lines off (deepspark writes its own), restored afterwards."""
    optuna = import_optuna()
    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(previous)


def tune_root() -> Path:
    """``$DEEPSPARK_TUNE_DIR`` or ``./.deepspark/tune``."""
    return Path(os.environ.get(TUNE_DIR_ENV, ".deepspark/tune"))


def default_storage(run_id: str) -> str:
    """A sqlite file for the search whose parent MLflow run is ``run_id``."""
    root = tune_root().resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / f'{run_id}.db'}"


def default_sampler(seed: int, trials: int):
    """TPE, seeded; random for the first third of the trials (2 to 10) to spread them out."""
    optuna = import_optuna()
    startup = min(10, max(2, trials // 3))
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)


def default_pruner(epochs: int):
    """Median pruning on the per-epoch validation metric: a trial stops when its value is worse
    than the median of finished trials at the same epoch, once 5 trials have finished, from
    the third epoch on (or a fifth of the epoch budget, at most 10)."""
    optuna = import_optuna()
    warmup = min(10, max(2, epochs // 5))
    return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=warmup)


def create_study(*, storage: str, name: str, direction: str, sampler, pruner):
    """A new study in ``storage``."""
    optuna = import_optuna()
    with quiet_optuna():
        return optuna.create_study(
            storage=storage, study_name=name, direction=direction, sampler=sampler, pruner=pruner
        )


def load_study(*, storage: str, name: str, sampler, pruner):
    """The study ``name`` in ``storage``, or ``UserInputError`` when it cannot be opened."""
    optuna = import_optuna()
    if storage.startswith("sqlite:///") and not Path(storage[len("sqlite:///") :]).exists():
        raise UserInputError(
            f"The search's Optuna storage is gone ({storage}); it cannot be resumed; start a "
            f"new search. Received: storage={storage!r}"
        )
    try:
        with quiet_optuna():
            return optuna.load_study(
                study_name=name, storage=storage, sampler=sampler, pruner=pruner
            )
    except KeyError as error:
        raise UserInputError(
            f"No study {name!r} in {storage}; it cannot be resumed. Received: study={name!r}"
        ) from error


def finished_trials(study) -> list:
    """Trials that ended (complete, pruned or failed), not counting interrupted ones."""
    optuna = import_optuna()
    states = optuna.trial.TrialState
    return [
        trial
        for trial in study.get_trials(deepcopy=False)
        if trial.state in (states.COMPLETE, states.PRUNED, states.FAIL)
        and not trial.user_attrs.get(INTERRUPTED_ATTR)
    ]


def count_states(study) -> dict[str, int]:
    """Finished trials by state: ``complete``, ``pruned``, ``failed``."""
    counts = {"complete": 0, "pruned": 0, "failed": 0}
    names = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed"}
    for trial in finished_trials(study):
        counts[names[trial.state.name]] += 1
    return counts


def abandon_running(study) -> list:
    """Mark trials left RUNNING by a killed process as interrupted failures; return them."""
    optuna = import_optuna()
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    for trial in running:
        study._storage.set_trial_user_attr(trial._trial_id, INTERRUPTED_ATTR, True)
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
    return running


def best_trial(study):
    """The best complete trial, or ``None``."""
    optuna = import_optuna()
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        return None
    return study.best_trial


def pruning_snapshot(study) -> list:
    """The trials a remote task's pruner compares against: complete and pruned ones, as
    they are now (frozen, picklable)."""
    optuna = import_optuna()
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return study.get_trials(deepcopy=True, states=states)


class ReplicaReporter:
    """Reports and pruning decisions in a Spark task, against a snapshot of the study.

    The task cannot reach the driver's study while it trains, so it gets the trials finished
    when it was sent, in an in-memory study with the same pruner: a median pruner then decides
    as the driver's study would have, without the trials still running elsewhere. The driver
    records the reported values in its study when the task returns.
    """

    def __init__(self, snapshot: list, *, direction: str, pruner):
        optuna = import_optuna()
        with quiet_optuna():
            self._study = optuna.create_study(
                direction=direction, pruner=pruner, sampler=optuna.samplers.RandomSampler()
            )
            self._study.add_trials(snapshot)
            self._trial = self._study.ask()

    def report(self, value: float, step: int) -> None:
        self._trial.report(value, step)

    def should_prune(self) -> bool:
        return self._trial.should_prune()


def record_intermediate(trial, intermediate: list[tuple[int, float]]) -> None:
    """Report a remote trial's per-epoch values into the driver's study."""
    for step, value in intermediate:
        if math.isfinite(value):
            trial.report(value, step)


def trial_summary(trial) -> dict[str, Any]:
    """One trial as a JSON-ready row (the ``trials.json`` artifact)."""
    return {
        "number": trial.number,
        "state": trial.state.name,
        "value": trial.value if trial.value is None or math.isfinite(trial.value) else None,
        "params": dict(trial.params),
        "epochs": (trial.last_step + 1) if trial.last_step is not None else 0,
        "run_id": trial.user_attrs.get(RUN_ATTR),
        "reason": trial.user_attrs.get(REASON_ATTR),
        "interrupted": bool(trial.user_attrs.get(INTERRUPTED_ATTR)),
    }
