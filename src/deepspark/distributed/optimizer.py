"""``DistributedOptimizer``: Horovod's one-line change, for any Keras 3 optimizer, on torch and on
JAX, so an unchanged ``model.fit()`` trains data-parallel::

    model.compile(optimizer=DistributedOptimizer(keras.optimizers.Adam(1e-3)), loss="mse")

On torch, Keras' trainer computes gradients with ``loss.backward()`` and hands them to
``optimizer.apply(grads, variables)``. The distributed optimizer averages those gradients over all
ranks (one allreduce of one flat buffer per step) and then lets the wrapped optimizer do exactly
what it always does.

On JAX on CPU the same happens inside the compiled step: the gradients, flattened into one
buffer, go to the host for one allreduce per step. On accelerators (SPMD mode) there is nothing
to average by hand: Keras' data-parallel distribution spans every process's devices and each step
is one SPMD program over the global batch, whose loss (a mean over the global batch) has the
averaged gradients; ``BroadcastInitialState`` puts the model's state on that global mesh when
``fit`` begins (see ``deepspark.distributed._jax``).

The optimizer is changed in place (its class becomes a subclass of its own class), so built state,
e.g. the moments of a checkpoint being resumed, is kept. It serializes exactly like the optimizer
it wraps: a saved ``.keras`` file holds a plain ``Adam`` and loads without deepspark.
"""

from __future__ import annotations

import logging

from deepspark.distributed._torch import _DistributedApply, average_gradients  # noqa: F401
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
    """Mixed into the wrapped optimizer's class on JAX in SPMD mode: a marker, the optimizer is
    unchanged."""

    _deepspark_distributed = True


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
    if resolved.name == "jax" and resolved.spmd:
        from deepspark.distributed._jax import use_data_parallel

        mixin = _DataParallelOnJax
        use_data_parallel()
    elif resolved.name == "jax":
        from deepspark.distributed._jax import HostAllreduce

        mixin = HostAllreduce
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
