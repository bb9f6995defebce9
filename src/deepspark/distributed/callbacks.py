"""Companion callbacks of ``DistributedOptimizer``: every rank starts from rank 0's state, every
rank reports the same (global) metrics, and the learning rate warms up to its scaled value.

Put them first in the callback list, so that the callbacks after them (early stopping, learning
rate schedules, checkpoints) see the global figures and every rank takes the same decisions.
"""

from __future__ import annotations

import logging

from deepspark._backend import import_keras
from deepspark.distributed.backends import CommunicationBackend, get_backend
from deepspark.errors import UserInputError
from deepspark.training.callbacks import NanGuard

keras = import_keras()
logger = logging.getLogger("deepspark.distributed")


def broadcast_variables(variables, backend: CommunicationBackend, *, root: int = 0) -> None:
    """Overwrite Keras ``variables`` with ``root``'s values (one broadcast per dtype)."""
    import torch

    groups: dict = {}
    for variable in variables:
        groups.setdefault(variable.value.dtype, []).append(variable)
    for dtype, group in groups.items():
        flat = torch.cat([variable.value.detach().reshape(-1) for variable in group])
        backend.broadcast_(flat, root=root, name=f"broadcast.{dtype}.{flat.numel()}")
        offset = 0
        for variable in group:
            count = variable.value.numel()
            variable.assign(flat[offset : offset + count].view_as(variable.value))
            offset += count


def allreduce_metric_state(model, backend: CommunicationBackend) -> None:
    """Sum the state of every metric (totals, counts, confusion counts) over ranks, so the
    metric results become those of the union of all ranks' rows.

    Sums and counts are reduced, never means: with shards of different sizes the result is the
    metric of the whole data set, not a mean of means. Exact for every Keras metric whose state
    adds up across rows (means, RMSE, accuracy, AUC, precision/recall...).
    """
    import torch

    variables = model.metrics_variables
    if not variables:
        return
    flat = torch.cat(
        [variable.value.detach().reshape(-1).to(torch.float64) for variable in variables]
    )
    backend.allreduce_sum_(flat, name="metrics")
    offset = 0
    for variable in variables:
        count = variable.value.numel()
        variable.assign(
            flat[offset : offset + count].view_as(variable.value).to(variable.value.dtype)
        )
        offset += count


class BroadcastInitialState(keras.callbacks.Callback):
    """At the start of ``fit``: rank 0's weights and optimizer state (moments, step count,
    learning rate) on every rank, so a fresh start or a resumed checkpoint is the same everywhere.

    Args:
        root: The rank whose state wins.
        backend: Defaults to the active backend.
    """

    def __init__(self, root: int = 0, *, backend: CommunicationBackend | None = None):
        super().__init__()
        self.root = root
        self.backend = backend

    def on_train_begin(self, logs=None):
        backend = self.backend or get_backend()
        broadcast_variables(self.model.weights, backend, root=self.root)
        optimizer = self.model.optimizer
        if optimizer is not None and optimizer.variables:
            broadcast_variables(optimizer.variables, backend, root=self.root)


class MetricAverage(keras.callbacks.Callback):
    """Training and validation metrics of all ranks together, identical on every rank.

    Keras turns metric state into logs at two points: after the last training batch of an epoch
    and after the last batch of an evaluation. This callback reduces the metric state (sums and
    counts) over ranks right there, so the epoch's logs, the validation logs, early stopping and
    checkpoints all see the figures of the whole data. Each rank may run a different number of
    validation batches (shards of different sizes). Works with ``fit`` and with
    ``evaluate(..., callbacks=[MetricAverage()])``.
    """

    # Keras' own hook for "metric state -> logs" (called exactly at those two points by every
    # backend's trainer); tested by the exactness tests, which fail if Keras stops calling it.
    _HOOK = "_get_metrics_result_or_logs"

    def __init__(self, *, backend: CommunicationBackend | None = None):
        super().__init__()
        self.backend = backend
        self._in_fit = False

    def on_train_begin(self, logs=None):
        self._in_fit = True
        self._install()

    def on_train_end(self, logs=None):
        self._in_fit = False
        self._uninstall()

    def on_test_begin(self, logs=None):
        self._install()

    def on_test_end(self, logs=None):
        if not self._in_fit:
            self._uninstall()

    def _install(self) -> None:
        model = self.model
        if self._HOOK in vars(model):
            return
        keras_hook = getattr(model, self._HOOK)
        backend = self.backend or get_backend()

        def reduce_then_read(step_logs):
            allreduce_metric_state(model, backend)
            return keras_hook(step_logs)

        object.__setattr__(model, self._HOOK, reduce_then_read)

    def _uninstall(self) -> None:
        vars(self.model).pop(self._HOOK, None)


class LearningRateWarmup(keras.callbacks.Callback):
    """Raise the learning rate linearly, batch by batch, from ``initial_fraction`` of
    ``target_learning_rate`` to all of it over the first ``warmup_epochs`` epochs (Goyal et al.,
    2017: large global batches need it when the rate is scaled by the number of workers).

    Args:
        target_learning_rate: The rate at the end of warmup (usually already scaled).
        warmup_epochs: Epochs of warmup; after them the callback leaves the rate alone.
        initial_fraction: Starting share of the target; default ``1 / world size``.
    """

    def __init__(
        self,
        target_learning_rate: float,
        *,
        warmup_epochs: int = 5,
        initial_fraction: float | None = None,
    ):
        super().__init__()
        if warmup_epochs < 0 or target_learning_rate <= 0:
            raise UserInputError(
                "LearningRateWarmup needs warmup_epochs >= 0 and a positive target rate. "
                f"Received: warmup_epochs={warmup_epochs}, "
                f"target_learning_rate={target_learning_rate}"
            )
        self.target_learning_rate = float(target_learning_rate)
        self.warmup_epochs = warmup_epochs
        self.initial_fraction = initial_fraction
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        if epoch == self.warmup_epochs and epoch > 0:
            self.model.optimizer.learning_rate = self.target_learning_rate

    def on_train_batch_begin(self, batch, logs=None):
        if self._epoch >= self.warmup_epochs:
            return
        fraction = self.initial_fraction
        if fraction is None:
            fraction = 1.0 / get_backend().size
        steps = self.params.get("steps") or 1
        progress = (self._epoch + batch / steps) / self.warmup_epochs
        rate = self.target_learning_rate * (fraction + (1.0 - fraction) * progress)
        self.model.optimizer.learning_rate = rate


class DistributedNanGuard(NanGuard):
    """``NanGuard`` that stops every rank at the same step: it reads the "some rank's loss is not
    finite" flag that ``DistributedOptimizer`` reduces with the gradients (the same on every
    rank), instead of this rank's own loss."""

    def on_train_batch_end(self, batch, logs=None):
        flag = getattr(self.model.optimizer, "nonfinite_loss_on_any_rank", None)
        if flag is not None and bool(flag > 0):
            self.failed_at = (self.epoch, batch)
            self.model.stop_training = True


def scale_learning_rate(optimizer, world_size: int) -> float:
    """Multiply the optimizer's learning rate by ``world_size`` (the global batch is that many
    times larger); returns the new rate."""
    rate = float(keras.ops.convert_to_numpy(optimizer.learning_rate)) * world_size
    optimizer.learning_rate = rate
    return rate


def distributed_callbacks(
    *,
    warmup_epochs: int = 0,
    target_learning_rate: float | None = None,
    backend: CommunicationBackend | None = None,
) -> list:
    """The callbacks a data-parallel ``fit`` needs, in the order they must run.

    Args:
        warmup_epochs: Add ``LearningRateWarmup`` over this many epochs (needs
            ``target_learning_rate``).
        target_learning_rate: The rate warmup ends at.
        backend: Defaults to the active backend.

    Returns:
        ``[BroadcastInitialState, MetricAverage]`` plus ``LearningRateWarmup`` when asked.
    """
    callbacks = [BroadcastInitialState(backend=backend), MetricAverage(backend=backend)]
    if warmup_epochs:
        if target_learning_rate is None:
            raise UserInputError(
                "Warmup needs the rate it ends at; pass target_learning_rate. "
                f"Received: target_learning_rate={target_learning_rate}"
            )
        callbacks.append(LearningRateWarmup(target_learning_rate, warmup_epochs=warmup_epochs))
    return callbacks
