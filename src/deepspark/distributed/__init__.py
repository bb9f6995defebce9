"""Horovod-style data-parallel training for Keras 3, on JAX and on torch: the one-line change.

Common case (every rank runs this, e.g. through ``deepspark.distributed.run``)::

    from deepspark.distributed import DistributedOptimizer, distributed_callbacks, rank, size

    model.compile(optimizer=DistributedOptimizer(keras.optimizers.Adam(1e-3)), loss="mse")
    model.fit(x[rank()::size()], y[rank()::size()], callbacks=distributed_callbacks())

Or let deepspark do all of it: ``deepspark.train(..., workers=2, launcher="local")``.

On JAX (``collectives="jax"``) the ranks average gradients with one host allreduce per step on
CPU, or run one SPMD program over ``jax.distributed`` on accelerators; on torch they communicate
through ``torch.distributed`` or Horovod; ``run``, ``init`` and
``DistributedOptimizer`` pick the Keras backend's own by default.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from deepspark._lazy import lazy_attributes

__all__ = [
    "BroadcastInitialState",
    "DistributedNanGuard",
    "DistributedOptimizer",
    "LearningRateWarmup",
    "MetricAverage",
    "WorkerFailedError",
    "WorkerLostError",
    "WorkerTimeoutError",
    "distributed_callbacks",
    "init",
    "rank",
    "run",
    "scale_learning_rate",
    "shutdown",
    "size",
]

if TYPE_CHECKING:
    from deepspark.distributed.backends import init, shutdown
    from deepspark.distributed.callbacks import (
        BroadcastInitialState,
        DistributedNanGuard,
        LearningRateWarmup,
        MetricAverage,
        distributed_callbacks,
        scale_learning_rate,
    )
    from deepspark.distributed.launch import WorkerFailedError, WorkerLostError, run
    from deepspark.distributed.optimizer import DistributedOptimizer
    from deepspark.errors import WorkerTimeoutError

_LAZY = {
    "init": "deepspark.distributed.backends",
    "shutdown": "deepspark.distributed.backends",
    "BroadcastInitialState": "deepspark.distributed.callbacks",
    "DistributedNanGuard": "deepspark.distributed.callbacks",
    "LearningRateWarmup": "deepspark.distributed.callbacks",
    "MetricAverage": "deepspark.distributed.callbacks",
    "distributed_callbacks": "deepspark.distributed.callbacks",
    "scale_learning_rate": "deepspark.distributed.callbacks",
    "WorkerFailedError": "deepspark.distributed.launch",
    "WorkerLostError": "deepspark.distributed.launch",
    "run": "deepspark.distributed.launch",
    "DistributedOptimizer": "deepspark.distributed.optimizer",
    "WorkerTimeoutError": "deepspark.errors",
}


def rank() -> int:
    """This process's rank (0 outside any launcher)."""
    from deepspark.distributed.backends import get_backend

    return get_backend().rank


def size() -> int:
    """Number of ranks (1 outside any launcher)."""
    from deepspark.distributed.backends import get_backend

    return get_backend().size


__getattr__ = lazy_attributes(__name__, _LAZY)
