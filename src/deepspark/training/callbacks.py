"""Callbacks deepspark puts on every ``fit``: NaN guard, resumable early stopping and learning-rate
reduction, per-epoch checkpoints, MLflow metric logging, and progress lines."""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from deepspark._backend import import_keras
from deepspark._progress import log_console, show_live_bar
from deepspark.tracking.run import deferred_interrupts, raise_if_interrupted
from deepspark.training.checkpoint import CheckpointStore

keras = import_keras()
logger = logging.getLogger("deepspark.training")


def mlflow_metric_names(logs: dict[str, Any]) -> dict[str, float]:
    """Keras logs -> ``train_*`` / ``val_*`` names with float values."""
    named = {}
    for key, value in logs.items():
        if key == "learning_rate":
            continue
        name = key if key.startswith("val_") else f"train_{key}"
        named[name] = float(value)
    return named


def current_learning_rate(model) -> float:
    """The optimizer's learning rate now (after this epoch's plateau reduction, if any)."""
    return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))


def rank_callbacks(callbacks, *, rank: int) -> list:
    """The user's callbacks that run on ``rank``: all of them on rank 0; on the other ranks of a
    distributed run, those without ``rank_zero_only = True``.

    A callback that writes (files, MLflow, a plot) sets the class or instance attribute
    ``rank_zero_only = True`` to run on rank 0 alone; every other callback runs on all ranks
    (one that stops training, say, must, so that all ranks stop together).

    Raises:
        UserInputError: An item that is not a ``keras.callbacks.Callback``.
    """
    from deepspark.errors import UserInputError

    chosen = []
    for callback in callbacks or ():
        if not isinstance(callback, keras.callbacks.Callback):
            raise UserInputError(
                "callbacks= takes keras.callbacks.Callback instances. "
                f"Received: callbacks item {callback!r}"
            )
        if rank == 0 or not getattr(callback, "rank_zero_only", False):
            chosen.append(callback)
    return chosen


class NanGuard(keras.callbacks.Callback):
    """Stops training at the first non-finite loss and remembers where it happened.

    Not async-safe: on JAX the next step donates the buffers a batch's logs point to, so the
    loss is read in the training loop, before that step.
    """

    def __init__(self):
        super().__init__()
        self.epoch = 0
        self.failed_at: tuple[int, int] | None = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self._failed((self.epoch, batch))

    def _failed(self, where: tuple[int, int]) -> None:
        self.failed_at = where if self.failed_at is None else min(self.failed_at, where)
        self.model.stop_training = True


class _ResumableState:
    """Saves and restores the attributes named in ``state_attributes`` across a resume."""

    state_attributes: tuple[str, ...] = ()
    restored_state: dict[str, Any] | None = None

    def export_state(self) -> dict[str, Any]:
        return {name: _plain(getattr(self, name)) for name in self.state_attributes}

    def _restore(self) -> None:
        for name, value in (self.restored_state or {}).items():
            setattr(self, name, value)


def _plain(value):
    if hasattr(value, "item"):
        return value.item()
    return value


class ResumableEarlyStopping(_ResumableState, keras.callbacks.EarlyStopping):
    """Keras ``EarlyStopping`` whose counters and best weights survive a resume."""

    state_attributes = ("wait", "best", "best_epoch")
    restored_weights = None

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self._restore()
        if self.restored_weights is not None:
            self.best_weights = self.restored_weights


class ResumableReduceLROnPlateau(_ResumableState, keras.callbacks.ReduceLROnPlateau):
    """Keras ``ReduceLROnPlateau`` whose counters survive a resume (the rate lives in the
    optimizer, which the checkpoint keeps)."""

    state_attributes = ("wait", "best", "cooldown_counter")

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self._restore()


class EpochCheckpoint(keras.callbacks.Callback):
    """After each completed epoch: model + optimizer, callback state and history to disk.

    Must come after the callbacks whose state it saves in the callback list.
    """

    def __init__(
        self,
        store: CheckpointStore,
        nan_guard: NanGuard,
        stateful: dict[str, Any],
        history: list[dict[str, float]],
        extras: dict[str, Any] | None = None,
    ):
        super().__init__()
        self.store = store
        self.nan_guard = nan_guard
        self.stateful = stateful
        self.history = history
        self.extras = dict(extras or {})  # saved with every state (a transfer run's phase)
        self._saved_best_epoch = None

    def on_epoch_end(self, epoch, logs=None):
        if self.nan_guard.failed_at is not None:
            return
        # With the learning rate, so that a run killed before MLflow logged the epoch relogs all
        # of it on resume.
        metrics = mlflow_metric_names(logs or {})
        metrics["learning_rate"] = current_learning_rate(self.model)
        self.history.append({"epoch": epoch, **metrics})
        early_stopping = self.stateful["early_stopping"]
        best_weights = None
        if early_stopping.best_epoch != self._saved_best_epoch and early_stopping.best_weights:
            best_weights = early_stopping.best_weights
            self._saved_best_epoch = early_stopping.best_epoch
        state = {
            "callbacks": {
                name: callback.export_state() for name, callback in self.stateful.items()
            },
            "history": self.history,
            **self.extras,
        }
        with deferred_interrupts():
            self.store.save_epoch(self.model, epoch, state, best_weights=best_weights)


class InterruptCheck(keras.callbacks.Callback):
    """Ends training at the next batch when a Ctrl-C / SIGTERM was received but its
    KeyboardInterrupt was swallowed (raised inside a finalizer, which Python ignores).

    Async-safe: raised on one of Keras' callback threads, the KeyboardInterrupt reaches the
    training loop at its next batch (Keras re-raises a finished callback's exception).
    """

    async_safe = True

    def on_train_batch_end(self, batch, logs=None):
        raise_if_interrupted()

    def on_test_batch_end(self, batch, logs=None):
        raise_if_interrupted()


class MlflowEpochLogger(keras.callbacks.Callback):
    """Logs ``train_*`` and ``val_*`` metrics and the learning rate at step = epoch, to the
    active run or to ``run_id`` (a distributed rank 0 logs into the driver's run).

    A tracking server that does not answer never stops training: the epochs it missed are
    buffered (``tracking.resilient.BufferedMetricLogger``; the checkpoint keeps them on disk
    too), one warning names the server, and they are logged in order when it answers again.
    """

    def __init__(self, nan_guard: NanGuard, run_id: str | None = None):
        super().__init__()
        self.nan_guard = nan_guard
        self.run_id = run_id
        self.buffer_ = None

    def on_epoch_end(self, epoch, logs=None):
        if self.nan_guard.failed_at is not None:
            return
        metrics = mlflow_metric_names(logs or {})
        metrics["learning_rate"] = current_learning_rate(self.model)
        with deferred_interrupts():
            self._buffer().log(metrics, step=epoch)

    def on_train_end(self, logs=None):
        if self.buffer_ is not None and self.buffer_.pending_:
            with deferred_interrupts():
                self.buffer_.flush()

    def _buffer(self):
        if self.buffer_ is None:
            import mlflow

            from deepspark.tracking.resilient import BufferedMetricLogger

            run_id = self.run_id or mlflow.active_run().info.run_id
            self.buffer_ = BufferedMetricLogger(run_id)
        return self.buffer_


class EpochProgress(keras.callbacks.Callback):
    """Progress of a fit: a live bar with the current metrics on a terminal (rich, on stderr),
    and a log line every ``log_every`` epochs and at the end, so a 300-epoch run writes a
    dozen lines to a log, not 600.

    Args:
        total_epochs: The epoch budget (the bar's length; early stopping may end sooner).
        log_every: Epochs between log lines; default a tenth of the budget (every epoch when
            deepspark logs at DEBUG, e.g. ``deepspark -v``).
        live: Show the live bar; default when stderr is a terminal and INFO lines are shown.
    """

    shown_keys = ("loss", "val_loss", "rmse", "val_rmse", "accuracy", "val_accuracy")

    def __init__(
        self, total_epochs: int, *, log_every: int | None = None, live: bool | None = None
    ):
        super().__init__()
        self.total_epochs = int(total_epochs)
        if log_every is None:
            verbose = logger.isEnabledFor(logging.DEBUG)
            log_every = 1 if verbose else math.ceil(self.total_epochs / 10)
        self.log_every = max(1, int(log_every))
        self.live = live
        self._started = 0.0
        self._bar = None
        self._last: tuple[int, dict] | None = None
        self._logged_epoch = None

    def on_train_begin(self, logs=None):
        live = self.live
        if live is None:
            live = show_live_bar()
        if live:
            self._bar = _progress_bar(self.total_epochs)
        self._train_started = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()
        if self._bar is not None and self._last is None:
            self._bar.update(self._bar.task_ids[0], completed=epoch)

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        self._last = (epoch, logs)
        if self._bar is not None:
            self._bar.update(self._bar.task_ids[0], completed=epoch + 1, metrics=self._shown(logs))
        if (epoch + 1) % self.log_every == 0 or epoch + 1 == self.total_epochs:
            self._log(epoch, logs)

    def on_train_end(self, logs=None):
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        if self._last is not None and self._logged_epoch != self._last[0]:
            self._log(*self._last)

    def _shown(self, logs: dict) -> str:
        return " ".join(f"{key}={logs[key]:.4g}" for key in self.shown_keys if key in logs)

    def _log(self, epoch: int, logs: dict) -> None:
        self._logged_epoch = epoch
        logger.info(
            "epoch %d/%d %s (%.2fs)",
            epoch + 1,
            self.total_epochs,
            self._shown(logs),
            time.perf_counter() - self._started,
        )


def _progress_bar(total_epochs: int):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(
        TextColumn("epoch"),
        MofNCompleteColumn(),
        BarColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[metrics]}"),
        console=log_console() or Console(stderr=True),
        transient=True,
    )
    bar.add_task("fit", total=total_epochs, metrics="")
    bar.start()
    return bar
