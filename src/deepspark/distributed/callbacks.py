"""Companion callbacks of ``DistributedOptimizer``: every rank starts from rank 0's state, every
rank reports the same (global) metrics, and the learning rate warms up to its scaled value; on
torch and on JAX (where what they do differs: see each class).

Put them first in the callback list, so that the callbacks after them (early stopping, learning
rate schedules, checkpoints) see the global figures and every rank takes the same decisions.
"""

from __future__ import annotations

import logging

from deepspark._backend import import_keras
from deepspark.distributed._torch import allreduce_metric_state, broadcast_variables
from deepspark.distributed.backends import CommunicationBackend, get_backend, renamed_argument
from deepspark.errors import UserInputError
from deepspark.training.callbacks import NanGuard
from deepspark.training.optimizers import set_learning_rate

keras = import_keras()
logger = logging.getLogger("deepspark.distributed")


class BroadcastInitialState(keras.callbacks.Callback):
    """At the start of ``fit``: rank 0's weights and optimizer state (moments, step count,
    learning rate) on every rank, so a fresh start or a resumed checkpoint is the same everywhere.

    On JAX it also checks that every rank runs the same number of training steps (a rank with
    one step more would wait forever in its allreduce), and in SPMD mode it is required at world
    size > 1: it lays the model's state out on the global mesh
    (``deepspark.distributed._jax.place_on_mesh``).

    Args:
        root: The rank whose state wins.
        collectives: A ``CommunicationBackend``; defaults to the active one.
        backend: Deprecated spelling of ``collectives``.
    """

    def __init__(
        self,
        root: int = 0,
        *,
        collectives: CommunicationBackend | None = None,
        backend: CommunicationBackend | None = None,
    ):
        super().__init__()
        self.root = root
        self.backend = renamed_argument(collectives, backend)

    def on_train_begin(self, logs=None):
        backend = self.backend or get_backend()
        if backend.name == "jax":
            if backend.size > 1:
                self._check_steps(backend)
                self._broadcast_on_jax(backend)
            return
        broadcast_variables(self.model.weights, backend, root=self.root)
        optimizer = self.model.optimizer
        if optimizer is not None and optimizer.variables:
            broadcast_variables(optimizer.variables, backend, root=self.root)

    def _check_steps(self, backend: CommunicationBackend) -> None:
        from deepspark.distributed import _jax

        steps = int(self.params.get("steps") or 0)
        if not _jax.all_equal(steps, backend):
            raise UserInputError(
                "On JAX every rank must run the same number of training steps per epoch; give "
                "every rank the same number of rows (deepspark's shards do). "
                f"Received: steps={steps} on rank {backend.rank}"
            )

    def _broadcast_on_jax(self, backend: CommunicationBackend) -> None:
        from deepspark.distributed import _jax

        if backend.spmd:
            _jax.place_on_mesh(self.model, root=self.root)
        else:
            _jax.broadcast_state(self.model, backend, root=self.root)


class MetricAverage(keras.callbacks.Callback):
    """Training and validation metrics of all ranks together, identical on every rank.

    Keras turns metric state into logs at two points: after the last training batch of an epoch
    and after the last batch of an evaluation. On torch this callback reduces the metric state
    (sums and counts) over ranks right there, so the epoch's logs, the validation logs, early
    stopping and checkpoints all see the figures of the whole data; each rank may run a
    different number of validation batches (shards of different sizes). Works with ``fit`` and
    with ``evaluate(..., callbacks=[MetricAverage()])``.

    On JAX on CPU (host collectives) it does the same, on NumPy values. In JAX's SPMD mode the
    metric state is already that of the global batch (reducing it would count every row ``size``
    times). There this callback makes validation shards of different sizes work inside ``fit``
    (every rank must run the same batches): smaller shards are padded with copies
    of one row, that row's share of the metric state is measured on its own (one row per rank)
    and subtracted before the state becomes logs, so validation loss and metrics stay exact.
    Exact for the same metrics as on torch: those whose state adds up across rows.
    """

    # Keras' own hook for "metric state -> logs" (called exactly at those two points by every
    # backend's trainer); tested by the exactness tests, which fail if Keras stops calling it.
    _HOOK = "_get_metrics_result_or_logs"

    def __init__(
        self,
        *,
        collectives: CommunicationBackend | None = None,
        backend: CommunicationBackend | None = None,
    ):
        super().__init__()
        self.backend = renamed_argument(collectives, backend)
        self._in_fit = False
        self._correction = None  # (factor, metric state) to subtract at the next read

    def on_train_begin(self, logs=None):
        self._in_fit = True
        self._install()
        backend = self.backend or get_backend()
        if backend.spmd:
            self._pad_validation(backend)

    def on_train_end(self, logs=None):
        self._in_fit = False
        self._uninstall()
        vars(self.model).pop("evaluate", None)

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
        if backend.size == 1:
            return
        if backend.spmd:

            def reduce_then_read(step_logs):
                self._take_out_padding()
                return keras_hook(step_logs)
        else:
            if backend.name == "jax":
                from deepspark.distributed._jax import allreduce_metric_state as reduce_state
            else:
                reduce_state = allreduce_metric_state

            def reduce_then_read(step_logs):
                reduce_state(model, backend)
                return keras_hook(step_logs)

        object.__setattr__(model, self._HOOK, reduce_then_read)

    def _uninstall(self) -> None:
        vars(self.model).pop(self._HOOK, None)

    def _pad_validation(self, backend: CommunicationBackend) -> None:
        """Route ``fit``'s validation through rows padded to the same count on every rank."""
        from deepspark.distributed import _jax

        model = self.model
        evaluate = model.evaluate
        cache: dict = {}

        def evaluate_on_equal_rows(x=None, y=None, *, sample_weight=None, **kwargs):
            kwargs.pop("_use_cached_eval_dataset", None)  # that cache holds the unpadded rows
            key = (id(x), id(y), id(sample_weight))
            if cache.get("key") != key:
                cache.update(key=key, keep=(x, y, sample_weight))
                cache["rows"] = _jax.pad_to_common_rows(x, y, sample_weight, backend)
            rows = cache["rows"]
            if rows.padding_rows:
                row_x, row_y, row_weight = rows.row
                evaluate(row_x, row_y, sample_weight=row_weight, batch_size=1, verbose=0)
                # That pass saw the row once per rank; the padding holds it padding_rows times.
                share = rows.padding_rows / backend.size
                self._correction = (share, _jax.metric_state(model))
            try:
                return evaluate(x=rows.x, y=rows.y, sample_weight=rows.sample_weight, **kwargs)
            finally:
                self._correction = None

        object.__setattr__(model, "evaluate", evaluate_on_equal_rows)

    def _take_out_padding(self) -> None:
        if self._correction is not None:
            from deepspark.distributed._jax import subtract_metric_state

            share, state = self._correction
            self._correction = None
            subtract_metric_state(self.model, state, share)


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
            set_learning_rate(self.model, self.target_learning_rate)

    def on_train_batch_begin(self, batch, logs=None):
        if self._epoch >= self.warmup_epochs:
            return
        fraction = self.initial_fraction
        if fraction is None:
            fraction = 1.0 / get_backend().size
        steps = self.params.get("steps") or 1
        progress = (self._epoch + batch / steps) / self.warmup_epochs
        rate = self.target_learning_rate * (fraction + (1.0 - fraction) * progress)
        set_learning_rate(self.model, rate)


class DistributedNanGuard(NanGuard):
    """``NanGuard`` that stops every rank at the same step.

    On torch, and on JAX on CPU, it reads the "some rank's loss (or gradients) is not finite"
    flag that ``DistributedOptimizer`` reduces with the gradients (the same on every rank),
    instead of this rank's own loss. In JAX's SPMD mode the loss in the logs already is the
    global batch's, the same on every rank.
    """

    def on_train_batch_end(self, batch, logs=None):
        optimizer = self.model.optimizer
        if getattr(optimizer, "_deepspark_reduces_loss_flag", False):
            wait = getattr(optimizer, "wait_for_reduction", None)
            if wait is not None:
                wait()
            flag = getattr(optimizer, "nonfinite_loss_on_any_rank", None)
            if flag is not None:  # None: nothing was reduced (a world of one on JAX)
                if bool(flag > 0):
                    self._failed((self.epoch, batch))
                return
        super().on_train_batch_end(batch, logs)


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
    collectives: CommunicationBackend | None = None,
    backend: CommunicationBackend | None = None,
) -> list:
    """The callbacks a data-parallel ``fit`` needs, in the order they must run.

    Args:
        warmup_epochs: Add ``LearningRateWarmup`` over this many epochs (needs
            ``target_learning_rate``).
        target_learning_rate: The rate warmup ends at.
        collectives: A ``CommunicationBackend``; defaults to the active one.
        backend: Deprecated spelling of ``collectives``.

    Returns:
        ``[BroadcastInitialState, MetricAverage]`` plus ``LearningRateWarmup`` when asked.
    """
    collectives = renamed_argument(collectives, backend)
    callbacks = [
        BroadcastInitialState(collectives=collectives),
        MetricAverage(collectives=collectives),
    ]
    if warmup_epochs:
        if target_learning_rate is None:
            raise UserInputError(
                "Warmup needs the rate it ends at; pass target_learning_rate. "
                f"Received: target_learning_rate={target_learning_rate}"
            )
        callbacks.append(LearningRateWarmup(target_learning_rate, warmup_epochs=warmup_epochs))
    return callbacks
