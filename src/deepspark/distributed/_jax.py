"""Everything JAX-specific of data-parallel training, in one place.

Two ways to train data-parallel on JAX, chosen when the group is joined (``choose_mode``):

**Host collectives** (the default on CPU). Each rank compiles and runs its own training step on its
local batch; inside that step the distributed optimizer hands all gradients, flattened into one
buffer, to the host (``jax.experimental.io_callback``), where one gloo allreduce of
``torch.distributed`` averages them, like Horovod does. The reason: an SPMD program on XLA's CPU
runtime issues one gloo allreduce per gradient tensor (measured ~3.6 ms each on 2 cores), so 2
pinned CPU workers ran at 1.19x of one; with one allreduce per step they run at the rate the
torch path reaches. Needs torch installed (``deepspark[torch]``); without it, SPMD.

- ``HostAllreduce``: mixed into the wrapped optimizer's class; averages the gradients and keeps
  the "some rank's gradients are not finite" flag, identical on every rank;
- ``broadcast_state`` / ``allreduce_metric_state``: rank 0's weights and optimizer state at train
  begin, metric sums and counts over ranks, on NumPy values.

**SPMD** (GPUs and TPUs, or ``DEEPSPARK_JAX_COLLECTIVES=spmd``). Every process joins one
``jax.distributed`` group (NCCL on GPUs, gloo on CPU), Keras' ``DataParallel`` distribution spans
the devices of all processes, and each ``fit`` step runs as one SPMD program over the *global*
batch, so the loss, its gradients and the metric state are those of the global batch. Then:

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

In both modes every rank must run the same number of training steps.
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


MODE_ENV = "DEEPSPARK_JAX_COLLECTIVES"  # "host" or "spmd"; default: host on CPU, else spmd
MODES = ("host", "spmd")
# Distributions whose presence means JAX may run on an accelerator.
_ACCELERATOR_PLUGINS = ("jax-cuda", "jax_cuda", "jax-rocm", "jax_rocm", "libtpu")


class JaxDistributedBackend(CommunicationBackend):
    """The ranks of Keras-on-JAX training: host collectives on CPU, ``jax.distributed`` else.

    Rendezvous from ``MASTER_ADDR`` / ``MASTER_PORT`` / ``RANK`` / ``WORLD_SIZE`` (rank 0 hosts the
    coordinator); without them, a world of one process (nothing to initialize). Must join before
    JAX first touches a device in this process (the launchers' workers do so first thing).

    Collectives take NumPy arrays. ``spmd`` says whether training runs as one SPMD program over
    all processes (see the module docstring); the worker's cores are pinned once JAX has
    created its thread pools (``distributed.cores``).
    """

    name = "jax"

    def __init__(self):
        import jax

        from deepspark.distributed.cores import pin_this_process

        world = int(os.environ.get("WORLD_SIZE", "1"))
        self.mode = choose_mode() if world > 1 else "host"
        self._host = None
        if self.mode == "host" and world > 1:
            from deepspark.distributed.backends import TorchDistributedBackend

            self._host = TorchDistributedBackend()
            self.rank, self.size = self._host.rank, self._host.size
        elif world > 1 and not jax.distributed.is_initialized():
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
        if self._host is None:
            self.rank, self.size = jax.process_index(), jax.process_count()
        self.spmd = self.mode == "spmd" and self.size > 1
        self.local_rank = int(os.environ.get("LOCAL_RANK", str(self.rank)))
        if self.size == 1:
            self.process_group_backend = "none"  # a world of one: nothing to communicate
        elif self._host is not None:
            self.process_group_backend = "gloo (host)"
        else:
            self.process_group_backend = "gloo" if jax.default_backend() == "cpu" else "nccl"
        # Pinned only now: XLA's CPU client sizes its thread pools to the cores it sees, and with
        # a single thread a host callback waiting on a peer would block the step it serves.
        jax.devices()
        pin_this_process(all_threads=True)

    def allreduce_sum_(self, tensor, *, name: str):
        if self._host is not None:
            self._host.allreduce_sum_(_torch_view(tensor), name=name)
        elif self.size > 1:
            from jax.experimental import multihost_utils

            gathered = multihost_utils.process_allgather(np.asarray(tensor))
            np.copyto(tensor, np.sum(gathered, axis=0, dtype=tensor.dtype))
        return tensor

    def broadcast_(self, tensor, *, root: int = 0, name: str):
        if self._host is not None:
            self._host.broadcast_(_torch_view(tensor), root=root, name=name)
        elif self.size > 1:
            from jax.experimental import multihost_utils

            value = multihost_utils.broadcast_one_to_all(tensor, is_source=self.rank == root)
            np.copyto(tensor, np.asarray(value))
        return tensor

    def broadcast_object(self, value, *, root: int = 0):
        if self._host is not None:
            return self._host.broadcast_object(value, root=root)
        if self.size == 1:
            return value
        payload = pickle.dumps(value) if self.rank == root else b""
        length = self.broadcast_(np.array([len(payload)], dtype=np.int64), root=root, name="len")
        buffer = np.zeros(int(length[0]), dtype=np.uint8)
        if self.rank == root:
            buffer[:] = np.frombuffer(payload, dtype=np.uint8)
        return pickle.loads(self.broadcast_(buffer, root=root, name="object").tobytes())

    def barrier(self) -> None:
        if self._host is not None:
            self._host.barrier()
        elif self.size > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("deepspark.barrier")

    def shutdown(self) -> None:
        import jax

        if self._host is not None:
            self._host.shutdown()
        if jax.distributed.is_initialized():
            jax.distributed.shutdown()


def choose_mode() -> str:
    """``host`` or ``spmd`` (see the module docstring): ``$DEEPSPARK_JAX_COLLECTIVES`` when set,
    else host collectives when JAX runs on CPU and torch is installed."""
    import importlib.util

    from deepspark.errors import UserInputError

    chosen = os.environ.get(MODE_ENV, "").strip().lower()
    if chosen and chosen not in MODES:
        raise UserInputError(
            f"{MODE_ENV} is 'host' (one allreduce per step, the CPU default) or 'spmd' "
            f"(jax.distributed, the accelerator default). Received: {MODE_ENV}={chosen!r}"
        )
    has_torch = importlib.util.find_spec("torch") is not None
    if chosen == "host" and not has_torch:
        from deepspark.errors import MissingDependencyError

        raise MissingDependencyError(
            f"{MODE_ENV}=host needs torch for its gloo collectives; install deepspark[torch] "
            "or unset it"
        )
    if chosen:
        return chosen
    if not _runs_on_cpu():
        return "spmd"
    if not has_torch:
        logger.info(
            "data-parallel JAX on CPU runs as SPMD (one allreduce per gradient tensor); install "
            "deepspark[torch] for host collectives (one allreduce per step, faster on CPU)"
        )
        return "spmd"
    return "host"


def _runs_on_cpu() -> bool:
    """Whether JAX will run on CPU, decided without starting JAX's backends."""
    import importlib.metadata

    platforms = os.environ.get("JAX_PLATFORMS", "").strip()
    if platforms:
        return platforms.split(",")[0].strip() == "cpu"
    names = (dist.metadata["Name"] or "" for dist in importlib.metadata.distributions())
    return not any(name.lower().startswith(_ACCELERATOR_PLUGINS) for name in names)


def _torch_view(array: np.ndarray):
    """A torch tensor sharing ``array``'s memory (collectives then work in place)."""
    import torch

    return torch.from_numpy(array)


class HostAllreduce:
    """Mixed into the wrapped optimizer's class in host mode: inside the compiled step, the
    gradients are averaged over ranks by one host allreduce of one flat buffer."""

    _deepspark_distributed = True
    # DistributedNanGuard reads the flag set with the reduced gradients.
    _deepspark_reduces_loss_flag = True

    def apply(self, grads, trainable_variables=None):
        return super().apply(_averaged_gradients(list(grads), self), trainable_variables)

    def wait_for_reduction(self) -> None:
        """Block until every dispatched step's allreduce ran (its flag is then current)."""
        import jax

        if self._deepspark_backend.size > 1:
            jax.effects_barrier()


def _averaged_gradients(grads: list, optimizer) -> list:
    """The gradients averaged over ranks: flattened into one buffer (float32, or float64 when a
    gradient is), reduced on the host, split again. Sets ``nonfinite_loss_on_any_rank`` (the same
    on every rank: a NaN or inf in any rank's gradients is in the sum)."""
    import jax
    import jax.numpy as jnp
    from jax.experimental import io_callback

    backend = optimizer._deepspark_backend
    present = [index for index, grad in enumerate(grads) if grad is not None]
    if backend.size == 1 or not present:
        return grads
    wide = any(grads[index].dtype == jnp.float64 for index in present)
    dtype = jnp.float64 if wide else jnp.float32
    flat = jnp.concatenate([jnp.ravel(grads[index]).astype(dtype) for index in present])

    def on_host(values):
        buffer = np.array(values)  # writable, owned by NumPy
        backend.allreduce_sum_(buffer, name="gradients")
        optimizer.nonfinite_loss_on_any_rank = np.array([0.0 if np.isfinite(buffer).all() else 1.0])
        return np.divide(buffer, backend.size, out=buffer)

    reduced = io_callback(on_host, jax.ShapeDtypeStruct(flat.shape, dtype), flat, ordered=True)
    averaged, offset = list(grads), 0
    for index in present:
        grad = grads[index]
        piece = reduced[offset : offset + grad.size]
        averaged[index] = piece.reshape(grad.shape).astype(grad.dtype)
        offset += grad.size
    return averaged


def broadcast_state(model, backend: CommunicationBackend, *, root: int = 0) -> None:
    """Overwrite the model's weights and optimizer state with ``root``'s (one broadcast per
    dtype, NumPy values)."""
    optimizer = model.optimizer
    if optimizer is not None and not optimizer.built:
        optimizer.build(model.trainable_variables)
    variables = _unique([*model.weights, *(optimizer.variables if optimizer else ())])
    groups: dict = {}
    for variable in variables:
        groups.setdefault(np.asarray(variable.value).dtype, []).append(variable)
    for dtype, group in groups.items():
        flat = np.concatenate([np.asarray(v.value, dtype=dtype).ravel() for v in group])
        backend.broadcast_(flat, root=root, name=f"broadcast.{dtype}.{flat.size}")
        _assign_flat(group, flat)


def allreduce_metric_state(model, backend: CommunicationBackend) -> None:
    """Sum every metric's state (totals, counts) over ranks, so the results are those of all
    ranks' rows together (exact for additive states, as on torch)."""
    variables = model.metrics_variables
    if not variables:
        return
    flat = np.concatenate([np.asarray(v.value, dtype=np.float64).ravel() for v in variables])
    backend.allreduce_sum_(flat, name="metrics")
    _assign_flat(variables, flat)


def _assign_flat(variables: list, flat: np.ndarray) -> None:
    offset = 0
    for variable in variables:
        shape = tuple(variable.shape)
        count = int(np.prod(shape, dtype=np.int64))
        piece = flat[offset : offset + count].reshape(shape)
        variable.assign(piece.astype(np.asarray(variable.value).dtype))
        offset += count


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
