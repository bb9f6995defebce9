"""The Keras ``fit`` call deepspark wraps: model, compile, callbacks, resume from a checkpoint."""

from __future__ import annotations

import dataclasses
import logging

from deepspark._backend import import_keras
from deepspark.models.builders import BuildContext, build_model
from deepspark.models.preprocessing import StandardizedLoss, fit_numeric_stats
from deepspark.tracking.run import deferred_interrupts
from deepspark.training import callbacks as ds_callbacks
from deepspark.training.checkpoint import CheckpointStore
from deepspark.training.optimizers import make_optimizer
from deepspark.training.prepare import PreparedData

keras = import_keras()
logger = logging.getLogger("deepspark.training")


@dataclasses.dataclass
class FitOutcome:
    model: object
    history: list[dict[str, float]]
    epochs_completed: int
    best_epoch: int
    stopped_early: bool
    diverged_at: tuple[int, int] | None
    resumed_from_epoch: int | None
    world_size: int = 1
    launcher: str | None = None
    restarts: int = 0


def loss_and_metrics(prepared: PreparedData):
    """The compiled loss and per-epoch metrics for the task."""
    task = prepared.schema.task
    metrics = keras.metrics
    if task == "regression":
        loss = StandardizedLoss(
            prepared.config.loss or "mse",
            center=prepared.target_center,
            scale=prepared.target_scale,
        )
        return loss, [
            metrics.MeanSquaredError(name="mse"),
            metrics.RootMeanSquaredError(name="rmse"),
            metrics.MeanAbsoluteError(name="mae"),
        ]
    if task == "binary":
        return keras.losses.BinaryCrossentropy(), [
            metrics.BinaryAccuracy(name="accuracy"),
            metrics.AUC(name="auc"),
        ]
    return keras.losses.SparseCategoricalCrossentropy(), [
        metrics.SparseCategoricalAccuracy(name="accuracy")
    ]


def build_compiled_model(prepared: PreparedData):
    """A fresh model for ``prepared`` with its optimizer, loss and metrics."""
    config = prepared.config
    keras.utils.set_random_seed(config.seed)
    numeric = prepared.numeric_train
    stats = fit_numeric_stats(numeric) if numeric is not None else None
    context = BuildContext(
        prepared.schema,
        stats,
        config,
        target_center=prepared.target_center,
        target_scale=prepared.target_scale,
    )
    model = build_model(context, prepared.builder)
    loss, metrics = loss_and_metrics(prepared)
    model.compile(optimizer=make_optimizer(config.optimizer, config.lr), loss=loss, metrics=metrics)
    return model


def fit_model(prepared: PreparedData, store: CheckpointStore) -> FitOutcome:
    """Train with early stopping, LR reduction, checkpoints, MLflow logging; resume if a
    checkpoint exists in ``store``."""
    config = prepared.config
    state = store.read_state()
    if state is None:
        model, start_epoch, history = build_compiled_model(prepared), 0, []
    else:
        model = store.load_model(state)
        start_epoch, history = state["epoch"] + 1, list(state["history"])
        keras.utils.set_random_seed(config.seed + start_epoch)
        with deferred_interrupts():
            _relog_missing_epochs(history)
        logger.info("Resuming after epoch %d", start_epoch)
    callbacks, nan_guard, early_stopping = _callbacks(config, store, state, history)
    model.fit(
        prepared.inputs["train"],
        prepared.targets["train"],
        validation_data=(prepared.inputs["val"], prepared.targets["val"]),
        epochs=config.epochs,
        initial_epoch=start_epoch,
        batch_size=config.batch_size,
        shuffle=True,
        verbose=0,
        callbacks=callbacks,
    )
    completed = history[-1]["epoch"] + 1 if history else start_epoch
    return FitOutcome(
        model=model,
        history=history,
        epochs_completed=completed,
        best_epoch=int(early_stopping.best_epoch),
        stopped_early=early_stopping.stopped_epoch > 0,
        diverged_at=nan_guard.failed_at,
        resumed_from_epoch=start_epoch if state is not None else None,
    )


def _callbacks(
    config, store: CheckpointStore, state, history, *, nan_guard=None, writer=True, run_id=None
):
    """deepspark's callbacks; ``writer=False`` (distributed ranks other than 0) leaves out the
    ones that write checkpoints, MLflow metrics or progress lines."""
    nan_guard = nan_guard or ds_callbacks.NanGuard()
    early_stopping = ds_callbacks.ResumableEarlyStopping(
        monitor="val_loss", patience=config.patience, restore_best_weights=True
    )
    stateful = {"early_stopping": early_stopping}
    if config.reduce_lr:
        stateful["reduce_lr"] = ds_callbacks.ResumableReduceLROnPlateau(
            monitor="val_loss", factor=0.5, patience=max(2, config.patience // 3), min_lr=1e-6
        )
    if state is not None:
        for name, callback in stateful.items():
            callback.restored_state = state["callbacks"].get(name)
        if writer:
            early_stopping.restored_weights = store.load_best_weights()
    callbacks = [nan_guard, ds_callbacks.InterruptCheck(), *stateful.values()]
    if writer:
        callbacks += [
            ds_callbacks.EpochCheckpoint(store, nan_guard, stateful, history),
            ds_callbacks.MlflowEpochLogger(nan_guard, run_id=run_id),
            ds_callbacks.EpochProgress(config.epochs),
        ]
    return callbacks, nan_guard, early_stopping


def _relog_missing_epochs(history: list[dict[str, float]]) -> None:
    """A run killed between checkpoint and metric logging lost that epoch's metrics: log them."""
    import mlflow

    run_id = mlflow.active_run().info.run_id
    logged = mlflow.MlflowClient().get_metric_history(run_id, "train_loss")
    logged_steps = {metric.step for metric in logged}
    for entry in history:
        if entry["epoch"] not in logged_steps:
            metrics = {key: value for key, value in entry.items() if key != "epoch"}
            mlflow.log_metrics(metrics, step=int(entry["epoch"]))
