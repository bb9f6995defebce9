"""The Keras ``fit`` call deepspark wraps: model, compile, callbacks, resume from a checkpoint.

The public pieces serve local and distributed training alike (a distributed rank runs the same
loop on its shard, with the distributed callbacks in front): ``build_compiled_model``,
``default_callbacks``, ``run_fit`` (``model.fit`` with deepspark's settings, and its
``FitOutcome``) and ``relog_missing_epochs``. ``fit_model`` is all of them for one process.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Sequence
from typing import Any

from deepspark import runtime
from deepspark._backend import import_keras
from deepspark.config import DEFAULT_PATIENCE, TrainConfig
from deepspark.data.image_inputs import ImageFiles, chunk_rows
from deepspark.models.builders import BuildContext, build_model
from deepspark.models.inference import image_spec_of
from deepspark.models.preprocessing import StandardizedLoss
from deepspark.tracking.run import deferred_interrupts
from deepspark.training import callbacks as ds_callbacks
from deepspark.training.checkpoint import CheckpointStore
from deepspark.training.optimizers import make_optimizer
from deepspark.training.prepare import PreparedData

keras = import_keras()
VALIDATION_BATCH_ROWS = 4096
logger = logging.getLogger("deepspark.training")


@dataclasses.dataclass
class FitOutcome:
    """What a fit produced, for the caller to evaluate and log."""

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


def build_context(prepared: PreparedData) -> BuildContext:
    """What a builder knows about ``prepared``: schema, numeric statistics, settings."""
    return BuildContext(
        prepared.schema,
        prepared.numeric_stats(),
        prepared.config,
        target_center=prepared.target_center,
        target_scale=prepared.target_scale,
        numeric_train=prepared.numeric_train,
    )


def build_compiled_model(prepared: PreparedData):
    """A fresh model for ``prepared`` with its optimizer, loss and metrics. First the programs
    compiled for earlier models are released if the process holds many
    (``runtime.release_compiled_programs``): bagged trainings, trials and runs one after another
    in one process would else exhaust its memory mappings on JAX."""
    config = prepared.config
    runtime.release_compiled_programs()
    keras.utils.set_random_seed(config.seed)
    model = build_model(build_context(prepared), prepared.builder)
    compile_model(model, prepared, config.lr)
    return model


def compile_model(model, prepared: PreparedData, lr: float | None) -> None:
    """(Re)compile ``model`` with a fresh optimizer at ``lr`` and the task's loss and metrics."""
    config = prepared.config
    loss, metrics = loss_and_metrics(prepared)
    steps_per_epoch = math.ceil(prepared.train_rows / config.batch_size)
    optimizer = make_optimizer(
        config.optimizer,
        lr,
        weight_decay=config.weight_decay,
        schedule=config.lr_schedule,
        total_steps=steps_per_epoch * config.epochs,
    )
    model.compile(optimizer=optimizer, loss=loss, metrics=metrics)


def fit_model(
    prepared: PreparedData, store: CheckpointStore, *, callbacks: Sequence = ()
) -> FitOutcome:
    """Train with early stopping, LR reduction, checkpoints, MLflow logging; resume if a
    checkpoint exists in ``store``. ``callbacks``: the user's Keras callbacks, run after
    deepspark's own (so they see the epoch's complete logs)."""
    config = prepared.config
    if callbacks and config.base and config.fine_tune_layers:
        from deepspark.errors import UserInputError

        raise UserInputError(
            "callbacks= does not apply to a run with fine-tuning phases yet; leave out "
            f"--fine-tune-layers or the callbacks. Received: callbacks={list(callbacks)!r}"
        )
    if config.base and (config.fine_tune_layers or not callbacks):
        # Pretrained bases: a frozen base's features are computed once (training/transfer.py).
        from deepspark.training.transfer import fit_transfer

        return fit_transfer(prepared, store)
    state = store.read_state()
    if state is None:
        model = build_compiled_model(prepared)
    else:
        model = store.load_model(state)
        start_epoch = state["epoch"] + 1
        keras.utils.set_random_seed(config.seed + start_epoch)
        with deferred_interrupts():
            relog_missing_epochs(state["history"])
        logger.info("Resuming after epoch %d", start_epoch)
    if prepared.streamed is not None:
        train, validation = shard_streams(
            prepared.streamed.shards,
            config,
            rank=0,
            start_epoch=state["epoch"] + 1 if state else 0,
            class_weight=streamed_class_weights(prepared),
        )
    else:
        train = (prepared.inputs["train"], prepared.targets["train"])
        validation = (prepared.inputs["val"], prepared.targets["val"])
    return run_fit(
        model,
        config,
        train=train,
        validation=validation,
        callbacks=default_callbacks(config, store, state=state),
        state=state,
        user_callbacks=ds_callbacks.rank_callbacks(callbacks, rank=0),
    )


def shard_streams(
    shards,
    config: TrainConfig,
    *,
    rank: int,
    start_epoch: int,
    class_weight: dict[int, float] | None = None,
):
    """``(train, validation)`` for ``run_fit`` streamed from a rank's shard files: every rank
    the same number of training and validation batches (the fewest rows any rank has)."""
    from deepspark.store.stream import ShardStream

    filesystem = shards.store.filesystem
    train = ShardStream(
        shards.files("train", rank),
        filesystem=filesystem,
        batch_size=config.batch_size,
        rows=shards.train_rows(),
        seed=config.seed + 1000 * rank,
        start_epoch=start_epoch,
        class_weight=class_weight,
    )
    validation = ShardStream(
        shards.files("val", rank),
        filesystem=filesystem,
        batch_size=max(config.batch_size, VALIDATION_BATCH_ROWS),
        rows=min(shards.rows("val")),
        shuffle=False,
    )
    return (train, None), (validation, None)


def streamed_class_weights(prepared: PreparedData) -> dict[int, float] | None:
    """``balanced_class_weights`` from the streaming pass's class counts."""
    if not prepared.config.class_weight or prepared.schema.task == "regression":
        return None
    counts = prepared.streamed.statistics.class_counts
    present = [label for label in prepared.schema.class_labels if counts.get(label)]
    total = sum(counts[label] for label in present)
    return {
        index: float(total / (len(present) * counts[label]))
        for index, label in enumerate(prepared.schema.class_labels)
        if counts.get(label)
    }


@dataclasses.dataclass
class FitCallbacks:
    """deepspark's callbacks for one ``fit``, and those whose state the outcome reports.

    ``history`` holds one entry per completed epoch (checkpointed ones included after a resume);
    the checkpoint callback appends to it, so it stays empty without ``writer``. ``writers`` are
    the callbacks (among ``callbacks``) that only a writer gets: checkpoints, MLflow, progress.
    """

    callbacks: list
    nan_guard: ds_callbacks.NanGuard
    early_stopping: ds_callbacks.ResumableEarlyStopping
    history: list[dict[str, float]]
    writers: list = dataclasses.field(default_factory=list)


def default_callbacks(
    config: TrainConfig,
    store: CheckpointStore,
    *,
    state: dict[str, Any] | None = None,
    nan_guard: ds_callbacks.NanGuard | None = None,
    writer: bool = True,
    log_metrics: bool = True,
    run_id: str | None = None,
    extras: dict[str, Any] | None = None,
) -> FitCallbacks:
    """deepspark's callbacks: NaN guard, interrupt check, resumable early stopping (and learning
    rate reduction), then, with ``writer``, checkpoints, MLflow metrics and progress.

    Args:
        config: The run's settings (patience, ``reduce_lr``, epochs).
        store: Where checkpoints go (and the best weights of a resumed run come from).
        state: The checkpoint state being resumed, if any: callback counters and history.
        nan_guard: The NaN guard to use (a distributed one, say); default ``NanGuard()``.
        writer: ``False`` for distributed ranks other than 0: leaves out the callbacks that
            write checkpoints, MLflow metrics or progress lines, and does not read the best
            weights (they come from rank 0).
        log_metrics: With ``writer``, log each epoch's metrics to MLflow, and with
            ``config.tensorboard`` to TensorBoard event files (a distributed rank 0 does
            neither: the driver relays its checkpointed epochs, and writes the event files).
        run_id: The MLflow run to log to; default the active run.
        extras: Facts saved with every checkpoint state (a transfer run's phase).

    Returns:
        The ``FitCallbacks``, callbacks in the order they must run.
    """
    nan_guard = nan_guard or ds_callbacks.NanGuard()
    history = list(state["history"]) if state else []
    # prepare_data fills in the data kind's patience; a config that skipped it gets the tables'.
    patience = config.patience if config.patience is not None else DEFAULT_PATIENCE["tabular"]
    early_stopping = ds_callbacks.ResumableEarlyStopping(
        monitor="val_loss", patience=patience, restore_best_weights=True
    )
    stateful = {"early_stopping": early_stopping}
    if config.reduce_lr and config.lr_schedule == "plateau":
        stateful["reduce_lr"] = ds_callbacks.ResumableReduceLROnPlateau(
            monitor="val_loss", factor=0.5, patience=max(2, patience // 3), min_lr=1e-6
        )
    if state is not None:
        for name, callback in stateful.items():
            callback.restored_state = state["callbacks"].get(name)
        if writer:
            early_stopping.restored_weights = store.load_best_weights()
    writers = []
    if writer:
        writers = [
            ds_callbacks.EpochCheckpoint(store, nan_guard, stateful, history, extras),
            *([ds_callbacks.MlflowEpochLogger(nan_guard, run_id=run_id)] if log_metrics else []),
            *_tensorboard_callbacks(config, nan_guard, run_id, log_metrics=log_metrics),
            ds_callbacks.EpochProgress(config.epochs),
        ]
    callbacks = [nan_guard, ds_callbacks.InterruptCheck(), *stateful.values(), *writers]
    return FitCallbacks(callbacks, nan_guard, early_stopping, history, writers)


def _tensorboard_callbacks(config: TrainConfig, nan_guard, run_id, *, log_metrics: bool) -> list:
    """The TensorBoard writer when ``config.tensorboard`` asks for one (where MLflow metrics are
    logged: in the driver's process, never on a distributed rank that may not see the folder)."""
    if not (config.tensorboard and log_metrics):
        return []
    import mlflow

    from deepspark.training.tensorboard import TensorBoardLogger

    run_id = run_id or mlflow.active_run().info.run_id
    return [TensorBoardLogger(config.tensorboard, run_id=run_id, nan_guard=nan_guard)]


def run_fit(
    model,
    config: TrainConfig,
    *,
    train: tuple,
    validation: tuple,
    callbacks: FitCallbacks,
    state: dict[str, Any] | None = None,
    first_callbacks: Sequence = (),
    user_callbacks: Sequence = (),
) -> FitOutcome:
    """``model.fit`` with deepspark's settings: ``config``'s epochs and batch size, shuffled
    rows, no Keras progress bar (the callbacks report), continuing after ``state``'s epoch.
    Validation runs in batches of at least ``VALIDATION_BATCH_ROWS`` rows: its loss and metrics
    are row-weighted means, the same for any batching, and Keras' cost per validation batch is
    paid for a few large batches per epoch instead of one per ``batch_size`` rows.

    Args:
        model: A compiled Keras model.
        config: The run's settings.
        train: ``(inputs, targets)`` to train on.
        validation: ``(inputs, targets)`` for validation.
        callbacks: From ``default_callbacks``.
        state: The checkpoint state being resumed, if any.
        first_callbacks: Callbacks that run before deepspark's own (distributed training puts
            its callbacks there, so that the others see global metrics).
        user_callbacks: The user's callbacks for this rank (``callbacks.rank_callbacks``), run
            after deepspark's own.

    Returns:
        The ``FitOutcome`` (world size 1; distributed training fills in the rest).
    """
    start_epoch = state["epoch"] + 1 if state else 0
    model.fit(
        **_fit_data(config, train, validation),
        epochs=config.epochs,
        initial_epoch=start_epoch,
        verbose=0,
        callbacks=[*first_callbacks, *callbacks.callbacks, *user_callbacks],
    )
    history = callbacks.history
    return FitOutcome(
        model=model,
        history=history,
        epochs_completed=history[-1]["epoch"] + 1 if history else start_epoch,
        best_epoch=int(callbacks.early_stopping.best_epoch),
        stopped_early=callbacks.early_stopping.stopped_epoch > 0,
        diverged_at=callbacks.nan_guard.failed_at,
        resumed_from_epoch=start_epoch if state is not None else None,
    )


def _fit_data(config: TrainConfig, train: tuple, validation: tuple) -> dict[str, Any]:
    """``fit``'s data arguments: arrays in memory, or streamed image batches."""
    inputs, targets = train
    if targets is None:  # a stream (store.stream.ShardStream) with its own class weights
        return {"x": inputs, "validation_data": validation[0]}
    weights = {"class_weight": balanced_class_weights(targets)} if config.class_weight else {}
    validation_rows = max(config.batch_size, VALIDATION_BATCH_ROWS)
    image_spec = image_spec_of(inputs)
    if image_spec is not None:  # large activations: validation batches bounded by pixels
        validation_rows = max(config.batch_size, chunk_rows(image_spec))
    if isinstance(inputs, ImageFiles):
        from deepspark.data.image_batches import ImageBatches

        val_inputs, val_targets = validation
        return {
            "x": ImageBatches(
                inputs, targets, batch_size=config.batch_size, shuffle=True, seed=config.seed
            ),
            "validation_data": ImageBatches(
                val_inputs, val_targets, batch_size=validation_rows, shuffle=False
            ),
            **weights,
        }
    return {
        "x": inputs,
        "y": targets,
        "validation_data": validation,
        "batch_size": config.batch_size,
        "validation_batch_size": validation_rows,
        "shuffle": True,
        **weights,
    }


def balanced_class_weights(targets) -> dict[int, float]:
    """``rows / (classes x rows of the class)`` per class index (scikit-learn's "balanced")."""
    import numpy as np

    codes = np.asarray(targets).reshape(-1).astype(int)
    counts = np.bincount(codes)
    present = np.flatnonzero(counts)
    return {int(code): float(len(codes) / (len(present) * counts[code])) for code in present}


def relog_missing_epochs(
    history: list[dict[str, float]],
    *,
    run_id: str | None = None,
    logged: set[int] | None = None,
) -> None:
    """Log the checkpointed epochs that the MLflow run lacks (a run killed between checkpoint
    and metric logging; a distributed run, whose driver relays rank 0's epochs).

    Args:
        history: Checkpointed epochs (``{"epoch": n, metric: value, ...}``).
        run_id: The run; default the active one.
        logged: Epochs known to be logged already; updated. ``None``: asks MLflow.
    """
    import mlflow
    from mlflow.entities import Metric

    client = mlflow.MlflowClient()
    run_id = run_id or mlflow.active_run().info.run_id
    if logged is None:
        logged = set()
    if not logged:  # first call: what the run already has
        logged.update(metric.step for metric in client.get_metric_history(run_id, "train_loss"))
    now = int(time.time() * 1000)
    for entry in history:
        epoch = int(entry["epoch"])
        if epoch in logged:
            continue
        metrics = [
            Metric(key, float(value), now, epoch) for key, value in entry.items() if key != "epoch"
        ]
        with deferred_interrupts():
            client.log_batch(run_id, metrics=metrics)
        logged.add(epoch)
