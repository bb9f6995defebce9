"""``DistributedOptimizer``: Horovod's one-line change, for any Keras 3 optimizer, on torch and on
JAX, so an unchanged ``model.fit()`` trains data-parallel::

    model.compile(optimizer=DistributedOptimizer(keras.optimizers.Adam(1e-3)), loss="mse")

On torch, Keras' trainer computes gradients with ``loss.backward()`` and hands them to
``optimizer.apply(grads, variables)``. The distributed optimizer averages those gradients over all
ranks (one allreduce of one flat buffer per step) and then lets the wrapped optimizer do exactly
what it always does.

On JAX there is nothing to average by hand: the optimizer makes sure the process joined
``jax.distributed`` and Keras' data-parallel distribution spans every process's devices; each step
is then one SPMD program over the global batch, whose loss (a mean over the global batch) has the
averaged gradients. ``BroadcastInitialState`` puts the model's state on that global mesh when
``fit`` begins (see ``deepspark.distributed._jax``).

The optimizer is changed in place (its class becomes a subclass of its own class), so built state,
e.g. the moments of a checkpoint being resumed, is kept. It serializes exactly like the optimizer
it wraps: a saved ``.keras`` file holds a plain ``Adam`` and loads without deepspark.
"""

from __future__ import annotations

import logging

from deepspark.distributed.backends import (
    CommunicationBackend,
    check_collectives,
    get_backend,
    init,
    keras_backend_for,
    renamed_argument,
)
from deepspark.errors import UserInputError

logger = logging.getLogger("deepspark.distributed")

_WRAPPED_CLASSES: dict[tuple[type, type], type] = {}


class _DataParallelOnJax:
    """Mixed into the wrapped optimizer's class on JAX: a marker, the optimizer is unchanged."""

    _deepspark_distributed = True


class _DistributedApply:
    """Methods mixed into the wrapped optimizer's class on torch (ahead of its own ``apply``)."""

    _deepspark_distributed = True
    # DistributedNanGuard reads the flag reduced with the gradients.
    _deepspark_reduces_loss_flag = True
    _deepspark_loss_flag = None

    def scale_loss(self, loss):
        # Keras' trainer hands every step's loss through here before backward(): remember
        # whether it is finite (a tensor, no device sync) to reduce it with the gradients.
        import torch

        self._deepspark_loss_flag = torch.isfinite(loss.detach()).logical_not().reshape(1)
        return super().scale_loss(loss)

    def apply(self, grads, trainable_variables=None):
        flag, self._deepspark_loss_flag = self._deepspark_loss_flag, None
        grads, nonfinite = average_gradients(list(grads), self._deepspark_backend, loss_flag=flag)
        # Reduced with the gradients, so every rank holds the same value and a NaN guard stops
        # all ranks at the same step (a rank stopping alone would leave the others waiting).
        self.nonfinite_loss_on_any_rank = nonfinite
        return super().apply(grads, trainable_variables)


def DistributedOptimizer(  # noqa: N802  named like the class it stands for, as in Horovod
    optimizer,
    *,
    collectives: str | CommunicationBackend | None = None,
    backend: str | CommunicationBackend | None = None,
):
    """Make ``optimizer`` train data-parallel across workers.

    Args:
        optimizer: Any Keras 3 optimizer instance (built or not).
        collectives: ``"jax"``, ``"torch"``, ``"horovod"``, a ``CommunicationBackend``, or
            ``None`` for the group this process already joined (else the Keras backend's own:
            a world of one process outside any launcher).
        backend: Deprecated spelling of ``collectives``.

    Returns:
        The same optimizer object, now distributed (``isinstance`` checks still hold).

    Raises:
        UserInputError: When ``optimizer`` is not a Keras optimizer, or the collectives do not
            belong to the Keras backend (``jax`` on JAX; ``torch`` or ``horovod`` on torch).

    Example:
        >>> optimizer = DistributedOptimizer(keras.optimizers.SGD(0.01))
        >>> model.compile(optimizer=optimizer, loss="mse")
        >>> model.fit(x_shard, y_shard, callbacks=distributed_callbacks())
    """
    from deepspark._backend import import_keras

    keras = import_keras()
    collectives = renamed_argument(collectives, backend)
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        raise UserInputError(
            "DistributedOptimizer wraps a Keras optimizer such as keras.optimizers.Adam(1e-3). "
            f"Received: optimizer={optimizer!r}"
        )
    if isinstance(collectives, CommunicationBackend):
        resolved = collectives
        _check_keras_backend(resolved.name, keras.backend.backend())
    elif collectives:
        check_collectives(collectives)
        _check_keras_backend(collectives, keras.backend.backend())  # before joining a group
        resolved = init(collectives)
    else:
        resolved = get_backend()
    if resolved.name == "jax":
        mixin = _DataParallelOnJax
        if resolved.size > 1:
            from deepspark.distributed._jax import use_data_parallel

            use_data_parallel()
    else:
        mixin = _DistributedApply
    if not getattr(optimizer, "_deepspark_distributed", False):
        optimizer.__class__ = _distributed_class(type(optimizer), mixin)
    optimizer._deepspark_backend = resolved
    optimizer.nonfinite_loss_on_any_rank = None
    return optimizer


def _check_keras_backend(collectives: str, keras_backend: str) -> None:
    if keras_backend_for(collectives) != keras_backend:
        own = "jax" if keras_backend == "jax" else "torch or horovod"
        raise UserInputError(
            f"Keras runs on {keras_backend}, which trains with {own} collectives. "
            f"Received: collectives={collectives!r}"
        )


def is_distributed(optimizer) -> bool:
    """Whether ``optimizer`` went through ``DistributedOptimizer``."""
    return bool(getattr(optimizer, "_deepspark_distributed", False))


def average_gradients(grads: list, backend: CommunicationBackend, *, loss_flag=None):
    """Average gradients over ranks with one allreduce of one flat buffer.

    ``None`` gradients (variables the loss does not reach) stay ``None``; every rank has the same
    model, so the same ones are ``None`` everywhere.

    Args:
        grads: This rank's gradients (torch tensors or ``None``).
        backend: The process group.
        loss_flag: Optional 1-element tensor, non-zero when this rank's loss is not finite;
            summed in the same allreduce.

    Returns:
        The averaged gradients, and a 1-element tensor, positive when any rank flagged its loss
        (``None`` without ``loss_flag``).
    """
    import torch

    present = [index for index, grad in enumerate(grads) if grad is not None]
    if not present:
        return grads, None
    parts = [grads[index].reshape(-1) for index in present]
    if loss_flag is not None:
        parts.append(loss_flag.to(parts[0].dtype))
    flat = torch.cat(parts)
    backend.allreduce_sum_(flat, name="gradients")
    if backend.size > 1:  # one pass less over every gradient in a world of one
        flat.div_(backend.size)
    pieces = flat.split([part.numel() for part in parts])
    averaged = list(grads)
    for index, piece in zip(present, pieces, strict=False):
        averaged[index] = piece.view(grads[index].shape)
    return averaged, pieces[-1] if loss_flag is not None else None


def _distributed_class(optimizer_class: type, mixin: type) -> type:
    """A subclass of ``optimizer_class`` with ``mixin`` first; same name and module, so Keras
    serializes it as the original optimizer."""
    key = (optimizer_class, mixin)
    if key not in _WRAPPED_CLASSES:
        _WRAPPED_CLASSES[key] = type(
            optimizer_class.__name__,
            (mixin, optimizer_class),
            {
                "__module__": optimizer_class.__module__,
                "__qualname__": optimizer_class.__qualname__,
            },
        )
    return _WRAPPED_CLASSES[key]
