"""Everything JAX-specific of data-parallel training, in one place.

On JAX, deepspark does not average gradients itself: every process joins one ``jax.distributed``
group (CPU collectives through gloo, NCCL on GPUs), Keras' ``DataParallel`` distribution spans the
devices of all processes, and each ``fit`` step runs as one SPMD program over the *global* batch
(the local batches of all ranks together), so the loss, its gradients and the metric state are
those of the global batch. What this module adds:

- ``JaxDistributedBackend``: the group, from the torchrun-style environment the launchers set,
  and the few host-side collectives deepspark needs (on NumPy values);
- ``use_data_parallel``: the distribution over all devices (each rank passes its own rows);
- ``place_on_mesh``: a model built before the distribution exists holds single-device arrays;
  its weights, optimizer and metric state are moved onto the global mesh (rank 0's values win)
  before the first step;
- ``pad_to_common_rows``: every rank must run the same number of batches of the same shape, so
  validation shards that differ by a row are padded with copies of one row, whose share of the
  metric state is subtracted afterwards (``MetricAverage``);
- ``outside_distribution`` / ``rank_local``: under the distribution, creating or assigning a
  Keras variable is a collective (JAX checks that every process passes the same value), so work
  that one rank does alone (rank 0 saving a checkpoint, which builds throwaway variables) runs
  without the distribution.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import pickle
import warnings
from typing import Any

import numpy as np

from deepspark.distributed.backends import TIMEOUT_ENV, CommunicationBackend

logger = logging.getLogger("deepspark.distributed")


class JaxDistributedBackend(CommunicationBackend):
    """``jax.distributed``: gloo CPU collectives on CPU, NCCL on GPUs.

    Rendezvous from ``MASTER_ADDR`` / ``MASTER_PORT`` / ``RANK`` / ``WORLD_SIZE`` (rank 0 hosts the
    coordinator); without them, a world of one process (nothing to initialize). Must join before
    JAX first touches a device in this process (the launchers' workers do so first thing).
    """

    name = "jax"

    def __init__(self):
        import jax

        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world > 1 and not jax.distributed.is_initialized():
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
            local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
            jax.distributed.initialize(
                coordinator_address=f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}",
                num_processes=world,
                process_id=int(os.environ["RANK"]),
                # Several ranks on one machine: one accelerator each (ignored on CPU).
                local_device_ids=[int(os.environ["LOCAL_RANK"])] if local_world > 1 else None,
                initialization_timeout=int(float(os.environ.get(TIMEOUT_ENV, "600"))),
            )
        self.rank, self.size = jax.process_index(), jax.process_count()
        self.local_rank = int(os.environ.get("LOCAL_RANK", str(self.rank)))
        if self.size == 1:
            self.process_group_backend = "none"  # a world of one: nothing to communicate
        else:
            self.process_group_backend = "gloo" if jax.default_backend() == "cpu" else "nccl"

    def allreduce_sum_(self, tensor, *, name: str):
        if self.size > 1:
            from jax.experimental import multihost_utils

            gathered = multihost_utils.process_allgather(np.asarray(tensor))
            np.copyto(tensor, np.sum(gathered, axis=0, dtype=tensor.dtype))
        return tensor

    def broadcast_(self, tensor, *, root: int = 0, name: str):
        if self.size > 1:
            from jax.experimental import multihost_utils

            value = multihost_utils.broadcast_one_to_all(tensor, is_source=self.rank == root)
            np.copyto(tensor, np.asarray(value))
        return tensor

    def broadcast_object(self, value, *, root: int = 0):
        if self.size == 1:
            return value
        payload = pickle.dumps(value) if self.rank == root else b""
        length = self.broadcast_(np.array([len(payload)], dtype=np.int64), root=root, name="len")
        buffer = np.zeros(int(length[0]), dtype=np.uint8)
        if self.rank == root:
            buffer[:] = np.frombuffer(payload, dtype=np.uint8)
        return pickle.loads(self.broadcast_(buffer, root=root, name="object").tobytes())

    def barrier(self) -> None:
        if self.size > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("deepspark.barrier")

    def shutdown(self) -> None:
        import jax

        if jax.distributed.is_initialized():
            jax.distributed.shutdown()


def use_data_parallel():
    """Keras' data-parallel distribution over the devices of every process (set once).

    ``auto_shard_dataset=False``: each rank passes its own rows (NumPy arrays cannot be
    auto-sharded); Keras assembles the global batch from the processes' local batches.
    """
    import jax

    from deepspark._backend import import_keras

    keras = import_keras()
    distribution = keras.distribution.distribution()
    if distribution is None:
        # Keras warns when fit compiles its step for a model built before the distribution
        # (single-device weights); place_on_mesh moves them, and compiles again, at train begin.
        warnings.filterwarnings("ignore", message="Detected a mix of local", category=UserWarning)
        distribution = keras.distribution.DataParallel(
            devices=jax.devices(), auto_shard_dataset=False
        )
        keras.distribution.set_distribution(distribution)
    return distribution


def place_on_mesh(model, *, root: int = 0) -> None:
    """Lay ``model``'s variables, optimizer slots and metric state out on the global mesh with
    ``root``'s values, then rebuild the train and test functions (Keras compiled them, with the
    old state shardings, before ``on_train_begin``)."""
    import jax
    from jax.experimental import multihost_utils

    distribution = use_data_parallel()
    optimizer = model.optimizer
    if optimizer is not None and not optimizer.built:
        optimizer.build(model.trainable_variables)
    variables = _unique(
        [*model.variables, *(optimizer.variables if optimizer else ()), *model.metrics_variables]
    )
    values = multihost_utils.broadcast_one_to_all(
        [np.asarray(variable.value) for variable in variables],
        is_source=_process_index() == root,
    )
    for variable, value in zip(variables, values, strict=True):
        layout = distribution.get_variable_layout(variable).backend_layout
        variable._layout = layout
        # Built from this process's copy: assigning a host value instead would make JAX check,
        # with one more collective per variable, that every process holds the same value.
        value = np.asarray(value)
        variable.assign(jax.make_array_from_callback(value.shape, layout, value.__getitem__))
    model.make_train_function(force=True)
    model.make_test_function(force=True)
    model.predict_function = None


def all_equal(value: int, backend: CommunicationBackend) -> bool:
    """Whether every rank passed the same integer."""
    counts = backend.allreduce_sum_(np.array([value, value * value], dtype=np.int64), name="eq")
    # sum(v)^2 == n * sum(v^2) only when all v are equal (Cauchy-Schwarz).
    return int(counts[0]) ** 2 == backend.size * int(counts[1])


@dataclasses.dataclass
class EqualRows:
    """One rank's validation data padded to the row count of the largest shard.

    The padding rows are copies of one row (rank 0's first), ``padding_rows`` of them over all
    ranks together; ``row`` is that row alone (as ``(x, y, sample_weight)``), so its share of the
    metric state can be measured and taken out again (see ``MetricAverage``).
    """

    x: Any
    y: Any
    sample_weight: Any
    padding_rows: int
    row: tuple | None


def pad_to_common_rows(x, y, sample_weight, backend: CommunicationBackend) -> EqualRows:
    """Pad this rank's rows to the largest row count of all ranks (a collective).

    Inputs that are not NumPy-like arrays (datasets, generators) come back unchanged, as do
    shards that already have equal counts (``padding_rows == 0``).
    """
    from deepspark._backend import import_keras

    tree = import_keras().tree
    leaves = [leaf for leaf in tree.flatten((x, y, sample_weight)) if leaf is not None]
    if not leaves or not all(getattr(leaf, "ndim", 0) for leaf in leaves):
        return EqualRows(x, y, sample_weight, 0, None)
    rows = int(leaves[0].shape[0])
    counts = np.zeros(backend.size, dtype=np.int64)
    counts[backend.rank] = rows
    counts = backend.allreduce_sum_(counts, name="rows")
    target, padding_rows = int(counts.max()), int(counts.max() * backend.size - counts.sum())
    if padding_rows == 0:
        return EqualRows(x, y, sample_weight, 0, None)
    row = backend.broadcast_object(
        tree.map_structure(_first_row, (x, y, sample_weight)) if backend.rank == 0 else None
    )

    def pad(array, copy):
        if array is None:
            return None
        extra = np.repeat(np.asarray(copy), target - rows, axis=0)
        return np.concatenate([np.asarray(array), extra])

    padded = (x, y, sample_weight)
    if rows < target:
        padded = tree.map_structure(pad, padded, row)
    return EqualRows(*padded, padding_rows=padding_rows, row=row)


def _first_row(leaf):
    return None if leaf is None else np.asarray(leaf[:1])


def metric_state(model) -> list[np.ndarray]:
    """The values of every metric variable (the loss tracker's too)."""
    return [np.asarray(variable.value) for variable in model.metrics_variables]


def subtract_metric_state(model, state: list[np.ndarray], factor: float) -> None:
    """``metric state -= factor * state`` on every rank (exact for additive states)."""
    for variable, value in zip(model.metrics_variables, state, strict=True):
        current = np.asarray(variable.value)
        variable.assign((current - factor * value).astype(current.dtype))


@contextlib.contextmanager
def outside_distribution():
    """Run the block as if no distribution were set (new variables stay on this process)."""
    from deepspark._backend import import_keras

    keras = import_keras()
    kept = keras.distribution.distribution()
    keras.distribution.set_distribution(None)
    try:
        yield
    finally:
        keras.distribution.set_distribution(kept)


_HOOKS = tuple(
    f"on_{stage}_{event}"
    for stage in ("train", "test", "predict", "epoch", "train_batch", "test_batch", "predict_batch")
    for event in ("begin", "end")
)


def rank_local(callback):
    """``callback`` with every hook run ``outside_distribution`` (for rank-0-only callbacks)."""
    from deepspark._backend import import_keras

    keras = import_keras()

    class RankLocal(keras.callbacks.Callback):
        def set_model(self, model):
            super().set_model(model)
            callback.set_model(model)

        def set_params(self, params):
            super().set_params(params)
            callback.set_params(params)

    def delegate(name):
        def hook(self, *args, **kwargs):
            with outside_distribution():
                return getattr(callback, name)(*args, **kwargs)

        return hook

    for name in _HOOKS:
        setattr(RankLocal, name, delegate(name))
    wrapped = RankLocal()
    wrapped.wrapped = callback
    return wrapped


def _unique(variables: list) -> list:
    seen, unique = set(), []
    for variable in variables:
        if id(variable) not in seen:
            seen.add(id(variable))
            unique.append(variable)
    return unique


def _process_index() -> int:
    import jax

    return jax.process_index()
