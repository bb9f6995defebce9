"""``DistributedOptimizer``: Horovod's one-line change, for any Keras 3 optimizer on torch.

Keras' torch trainer computes gradients with ``loss.backward()`` and hands them to
``optimizer.apply(grads, variables)``. The distributed optimizer averages those gradients over all
ranks (one allreduce of one flat buffer per step) and then lets the wrapped optimizer do exactly
what it always does, so an unchanged ``model.fit()`` trains data-parallel::

    model.compile(optimizer=DistributedOptimizer(keras.optimizers.Adam(1e-3)), loss="mse")

The optimizer is changed in place (its class becomes a subclass of its own class), so built state,
e.g. the moments of a checkpoint being resumed, is kept. It serializes exactly like the optimizer
it wraps: a saved ``.keras`` file holds a plain ``Adam`` and loads without deepspark.
"""

from __future__ import annotations

import logging

from deepspark.distributed.backends import CommunicationBackend, get_backend, init
from deepspark.errors import UserInputError

logger = logging.getLogger("deepspark.distributed")

_WRAPPED_CLASSES: dict[type, type] = {}


class _DistributedApply:
    """Methods mixed into the wrapped optimizer's class (ahead of its own ``apply``)."""

    _deepspark_distributed = True
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
    backend: str | CommunicationBackend | None = None,
):
    """Make ``optimizer`` average gradients across workers before every update.

    Args:
        optimizer: Any Keras 3 optimizer instance (built or not).
        backend: ``"torch"``, ``"horovod"``, a ``CommunicationBackend``, or ``None`` for the
            backend this process already joined (``torch.distributed`` from the environment when
            none: a world of one process outside any launcher).

    Returns:
        The same optimizer object, now distributed (``isinstance`` checks still hold).

    Raises:
        UserInputError: When ``optimizer`` is not a Keras optimizer.

    Example:
        >>> optimizer = DistributedOptimizer(keras.optimizers.SGD(0.01))
        >>> model.compile(optimizer=optimizer, loss="mse")
        >>> model.fit(x_shard, y_shard, callbacks=distributed_callbacks())
    """
    from deepspark._backend import import_keras

    keras = import_keras()
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        raise UserInputError(
            "DistributedOptimizer wraps a Keras optimizer such as keras.optimizers.Adam(1e-3). "
            f"Received: optimizer={optimizer!r}"
        )
    if isinstance(backend, CommunicationBackend):
        resolved = backend
    else:
        resolved = init(backend) if backend else get_backend()
    if not getattr(optimizer, "_deepspark_distributed", False):
        optimizer.__class__ = _distributed_class(type(optimizer))
    optimizer._deepspark_backend = resolved
    optimizer.nonfinite_loss_on_any_rank = None
    return optimizer


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


def _distributed_class(optimizer_class: type) -> type:
    """A subclass of ``optimizer_class`` with the averaging ``apply``; same name and module, so
    Keras serializes it as the original optimizer."""
    if optimizer_class not in _WRAPPED_CLASSES:
        _WRAPPED_CLASSES[optimizer_class] = type(
            optimizer_class.__name__,
            (_DistributedApply, optimizer_class),
            {
                "__module__": optimizer_class.__module__,
                "__qualname__": optimizer_class.__qualname__,
            },
        )
    return _WRAPPED_CLASSES[optimizer_class]
