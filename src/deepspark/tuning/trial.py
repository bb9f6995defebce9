"""One trial: train a configuration on the training split, score it on the validation split.

The fit is deepspark's own (``build_compiled_model``, ``default_callbacks``, ``run_fit``): NaN
guard, interrupt check, early stopping with the best weights restored, learning-rate reduction.
A trial writes no checkpoints; ``TrialMonitor`` reports the per-epoch validation metric to the
pruner and stops the fit when it says so. Trials never see the test split
(``validation_only``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import tempfile
import time
from typing import Any, Protocol

from deepspark._backend import import_keras
from deepspark.config import TrainConfig
from deepspark.data.splits import DataSplit
from deepspark.training.prepare import PreparedData

keras = import_keras()
logger = logging.getLogger("deepspark.tuning")

COMPLETE, PRUNED, FAIL = "COMPLETE", "PRUNED", "FAIL"


class Reporter(Protocol):
    """What a trial reports to: an ``optuna.Trial``, or a ``ReplicaReporter`` in a Spark task."""

    def report(self, value: float, step: int) -> None: ...

    def should_prune(self) -> bool: ...


@dataclasses.dataclass
class TrialOutcome:
    """How a trial ended.

    Attributes:
        state: ``COMPLETE``, ``PRUNED`` or ``FAIL``.
        value: The objective on the validation split (``COMPLETE`` only).
        history: One entry per epoch: ``epoch`` and the ``train_*`` / ``val_*`` metrics.
        intermediate: ``(epoch, value)`` reported to the pruner.
        best_epoch: 0-based epoch whose weights the scored model had.
        reason: Why a trial failed or was pruned.
        seconds: Wall time of the fit and scoring.
    """

    state: str
    value: float | None = None
    history: list[dict[str, float]] = dataclasses.field(default_factory=list)
    intermediate: list[tuple[int, float]] = dataclasses.field(default_factory=list)
    best_epoch: int | None = None
    reason: str | None = None
    seconds: float = 0.0

    @property
    def epochs(self) -> int:
        return len(self.history)


def validation_only(prepared: PreparedData) -> PreparedData:
    """``prepared`` without the test split: what every trial gets."""
    empty_test = prepared.split.test.iloc[:0]
    return dataclasses.replace(
        prepared,
        split=DataSplit(prepared.split.train, prepared.split.val, empty_test),
        inputs={name: prepared.inputs[name] for name in ("train", "val")},
        targets={name: prepared.targets[name] for name in ("train", "val")},
    )


class TrialMonitor(keras.callbacks.Callback):
    """Per epoch: record the metrics, report ``monitor`` to ``reporter``, stop when it says
    to prune.

    Args:
        reporter: Takes ``report(value, step)`` and answers ``should_prune()``.
        monitor: The Keras log reported (``val_rmse``, ``val_loss``...).
        history: The list ``default_callbacks`` gives the fit outcome (appended to).
        nan_guard: Epochs after a non-finite loss are neither recorded nor reported
            (``None``: only non-finite values go unreported).
    """

    def __init__(self, reporter: Reporter | None, monitor: str, history: list, nan_guard):
        super().__init__()
        self.reporter = reporter
        self.monitor = monitor
        self.history = history
        self.nan_guard = nan_guard
        self.intermediate: list[tuple[int, float]] = []
        self.pruned_at: int | None = None
        self._warned = False

    def on_epoch_end(self, epoch, logs=None):
        from deepspark.training.callbacks import mlflow_metric_names

        if self.nan_guard is not None and self.nan_guard.failed_at is not None:
            return
        logs = logs or {}
        rate = keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
        # The same names MlflowEpochLogger logs, so a trial's curve reads the same when the
        # driver logs it for a Spark task.
        self.history.append(
            {"epoch": epoch, **mlflow_metric_names(logs), "learning_rate": float(rate)}
        )
        value = logs.get(self.monitor)
        if value is None:
            if not self._warned:
                logger.warning("no %s in the epoch logs: trials are not pruned", self.monitor)
                self._warned = True
            return
        value = float(value)
        if self.reporter is None or not math.isfinite(value):
            return
        self.intermediate.append((epoch, value))
        self.reporter.report(value, epoch)
        if self.reporter.should_prune():
            self.pruned_at = epoch
            self.model.stop_training = True


def train_trial(
    prepared: PreparedData,
    config: TrainConfig,
    *,
    objective,
    reporter: Reporter | None = None,
    run_id: str | None = None,
) -> TrialOutcome:
    """Train ``config`` on ``prepared``'s training split and score it on its validation split.

    Args:
        prepared: The data every trial shares (``validation_only``).
        config: This trial's settings.
        objective: A ``deepspark.tuning.study.Objective`` (metric and per-epoch monitor).
        reporter: Gets the per-epoch values and decides pruning; ``None``: no pruning.
        run_id: An MLflow run to log the per-epoch metrics to as they come (``None``: the
            caller logs ``history`` afterwards).

    Returns:
        The ``TrialOutcome``; a diverged fit is ``FAIL``, never an exception.
    """
    from deepspark.training import callbacks as ds_callbacks
    from deepspark.training.checkpoint import CheckpointStore
    from deepspark.training.fit import build_compiled_model, default_callbacks, run_fit

    if (config.bagging or 1) > 1:  # None: tune resolves it to 1 (trials bag only when set)
        return train_bagged_trial(prepared, config, objective=objective, reporter=reporter)
    started = time.perf_counter()
    data = dataclasses.replace(prepared, config=config)
    model = build_compiled_model(data)
    # writer=False: no checkpoints, so the store is never written to.
    fit_callbacks = default_callbacks(config, CheckpointStore(tempfile.gettempdir()), writer=False)
    monitor = TrialMonitor(
        reporter, objective.monitor, fit_callbacks.history, fit_callbacks.nan_guard
    )
    fit_callbacks.callbacks.append(monitor)
    if run_id is not None:
        fit_callbacks.callbacks.append(
            ds_callbacks.MlflowEpochLogger(fit_callbacks.nan_guard, run_id=run_id)
        )
    outcome = run_fit(
        model,
        config,
        train=(data.inputs["train"], data.targets["train"]),
        validation=(data.inputs["val"], data.targets["val"]),
        callbacks=fit_callbacks,
    )
    result = TrialOutcome(
        state=COMPLETE,
        history=list(outcome.history),
        intermediate=list(monitor.intermediate),
        best_epoch=outcome.best_epoch,
    )
    if outcome.diverged_at is not None:
        epoch, batch = outcome.diverged_at
        result.state = FAIL
        result.reason = f"diverged: the loss became NaN at epoch {epoch + 1}, batch {batch + 1}"
    elif monitor.pruned_at is not None:
        result.state = PRUNED
        result.reason = f"pruned after epoch {monitor.pruned_at + 1}"
    else:
        result.value = score(data, model, objective)
        if not math.isfinite(result.value):
            result.state, result.value = FAIL, None
            result.reason = f"{objective.metric} on the validation split is not finite"
    result.seconds = round(time.perf_counter() - started, 3)
    keras.backend.clear_session()
    return result


class _MemberPruned(Exception):
    """The pruner stopped a bagged trial's first member (at ``epoch``, 0-based)."""

    def __init__(self, epoch: int):
        super().__init__(epoch)
        self.epoch = epoch


def train_bagged_trial(
    prepared: PreparedData, config: TrainConfig, *, objective, reporter: Reporter | None = None
) -> TrialOutcome:
    """A trial of a bagged ensemble (``config.bagging`` members on folds of the training +
    validation rows, ``training.bagging``), scored by the objective on the out-of-fold
    predictions: each row by the one member that never saw it, the score the retrained model
    reports as ``val_*``.

    The first member's per-epoch ``objective.monitor`` on its held-out fold goes to
    ``reporter``: every bagged trial of a study holds out the same first fold (the folds depend
    on the seed only), so the pruner compares like with like, and a pruned first member stops
    the trial before the other members train (``PRUNED``). The other members train quietly."""
    from deepspark.training.bagging import fit_member_quietly, train_bagged

    started = time.perf_counter()
    monitor = TrialMonitor(reporter, objective.monitor, [], None)

    def fit_member(member: PreparedData, index: int):
        if index or reporter is None:
            return fit_member_quietly(member, index)
        outcome = fit_member_quietly(member, index, extra_callbacks=[monitor])
        if monitor.pruned_at is not None:
            raise _MemberPruned(monitor.pruned_at)
        return outcome

    try:
        bagged = train_bagged(
            dataclasses.replace(prepared, config=config), config.bagging, fit_member=fit_member
        )
    except _MemberPruned as pruned:
        keras.backend.clear_session()
        return TrialOutcome(
            state=PRUNED,
            history=list(monitor.history),
            intermediate=list(monitor.intermediate),
            reason=f"pruned after epoch {pruned.epoch + 1} of the first member",
            seconds=round(time.perf_counter() - started, 3),
        )
    # The score is out of fold, not the first member's curve: no per-epoch history.
    result = TrialOutcome(state=COMPLETE, intermediate=list(monitor.intermediate))
    if bagged.diverged_at is not None:
        member, epoch, batch = bagged.diverged_at
        result.state = FAIL
        result.reason = (
            f"diverged: member {member + 1}'s loss became NaN at epoch {epoch + 1}, "
            f"batch {batch + 1}"
        )
    else:
        result.best_epoch = sorted(bagged.member_best_epochs)[len(bagged.members) // 2] - 1
        result.value = float(bagged.oof_metrics.get(objective.metric, math.nan))
        if not math.isfinite(result.value):
            result.state, result.value = FAIL, None
            result.reason = f"out-of-fold {objective.metric} is not finite"
    result.seconds = round(time.perf_counter() - started, 3)
    keras.backend.clear_session()
    return result


def score(prepared: PreparedData, model, objective) -> float:
    """The objective's metric of ``model`` on the whole validation split."""
    from deepspark.models.inference import predict_arrays
    from deepspark.training.evaluation import evaluate_predictions

    output = predict_arrays(model, prepared.inputs["val"])
    scores = evaluate_predictions(prepared.schema.task, prepared.targets["val"], output)
    return float(scores.get(objective.metric, math.nan))


def outcome_document(outcome: TrialOutcome) -> dict[str, Any]:
    """A ``TrialOutcome`` as plain data (what a Spark task sends back)."""
    return dataclasses.asdict(outcome)


def outcome_from_document(document: dict[str, Any]) -> TrialOutcome:
    document = dict(document)
    document["intermediate"] = [tuple(item) for item in document.get("intermediate", [])]
    return TrialOutcome(**document)
