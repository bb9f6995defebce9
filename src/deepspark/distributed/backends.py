"""Collectives: how ranks communicate. ``jax`` (``jax.distributed``, Keras on JAX),
``torch`` (``torch.distributed``, gloo on CPU, nccl on GPU) and ``horovod`` (``horovod.torch``);
the last two for Keras on torch.

All expose the same five collectives deepspark needs, so ``DistributedOptimizer`` and the
distributed callbacks never care which one runs underneath::

    backend = deepspark.distributed.init()        # the collectives of the Keras backend
    backend.rank, backend.size
    backend.allreduce_sum_(tensor, name="grads")  # in place, every rank gets the sum
    backend.broadcast_(tensor, root=0, name="w")  # in place
    backend.broadcast_object(obj, root=0)         # any picklable object

Tensors are torch tensors for ``torch`` and ``horovod``, NumPy arrays for ``jax`` (see
``deepspark.distributed._jax``: on CPU its collectives run on the host through torch's gloo).

``jax`` and ``torch``: rendezvous from ``MASTER_ADDR`` / ``MASTER_PORT`` / ``RANK`` /
``WORLD_SIZE`` (what the local and spark launchers, torchrun and Spark's TorchDistributor set);
without them, a world of one process. ``horovod``: ``hvd.init()`` under ``horovodrun`` or
``horovod.spark.run``.
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
import warnings

from deepspark._optional import require
from deepspark.config import COLLECTIVES
from deepspark.errors import MissingDependencyError, UserInputError

logger = logging.getLogger("deepspark.distributed")

TIMEOUT_ENV = "DEEPSPARK_DIST_TIMEOUT"
# Set by the launchers for their workers: the collectives ``get_backend()`` joins.
COLLECTIVES_ENV = "DEEPSPARK_COLLECTIVES"

_active: dict[str, CommunicationBackend | None] = {"backend": None}


class CommunicationBackend:
    """The collectives deepspark uses; subclasses implement them for one library."""

    name = ""
    rank = 0
    size = 1
    local_rank = 0
    spmd = False  # training runs as one SPMD program over all ranks (JAX on accelerators)

    def allreduce_sum_(self, tensor, *, name: str):
        """Sum ``tensor`` over all ranks, in place; returns it.

        ``name`` says what is reduced; the same name for the same kind of tensor each step lets
        Horovod reuse its negotiation (its response cache), torch ignores it.
        """
        raise NotImplementedError

    def broadcast_(self, tensor, *, root: int = 0, name: str):
        """Overwrite ``tensor`` with ``root``'s copy, in place; returns it."""
        raise NotImplementedError

    def broadcast_object(self, value, *, root: int = 0):
        """Return ``root``'s ``value`` on every rank (any picklable object)."""
        raise NotImplementedError

    def barrier(self) -> None:
        """Wait until every rank reaches this point."""
        raise NotImplementedError

    def shutdown(self) -> None:
        """Leave the process group."""


class TorchDistributedBackend(CommunicationBackend):
    """``torch.distributed`` with gloo on CPU and nccl when CUDA is available."""

    name = "torch"

    def __init__(self):
        import torch
        import torch.distributed as dist

        self._dist = dist
        if not dist.is_initialized():
            self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
            use_cuda = torch.cuda.is_available()
            if use_cuda:
                torch.cuda.set_device(self.local_rank % torch.cuda.device_count())
            timeout = datetime.timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, "600")))
            dist.init_process_group(
                "nccl" if use_cuda else "gloo", timeout=timeout, **_rendezvous_arguments()
            )
        self.rank, self.size = dist.get_rank(), dist.get_world_size()
        self.local_rank = int(os.environ.get("LOCAL_RANK", str(self.rank)))
        self.process_group_backend = dist.get_backend()

    def allreduce_sum_(self, tensor, *, name: str):
        self._dist.all_reduce(tensor, op=self._dist.ReduceOp.SUM)
        return tensor

    def broadcast_(self, tensor, *, root: int = 0, name: str):
        self._dist.broadcast(tensor, src=root)
        return tensor

    def broadcast_object(self, value, *, root: int = 0):
        holder = [value]
        self._dist.broadcast_object_list(holder, src=root)
        return holder[0]

    def barrier(self) -> None:
        self._dist.barrier()

    def shutdown(self) -> None:
        if self._dist.is_initialized():
            self._dist.destroy_process_group()


class HorovodBackend(CommunicationBackend):
    """``horovod.torch`` (Horovod 0.28.1 built by ``make horovod``)."""

    name = "horovod"

    def __init__(self):
        try:
            self._hvd = require("horovod.torch", feature="The Horovod backend")
        except MissingDependencyError as error:
            # Horovod 0.28.1's sdist does not build against torch >= 2.1 as released.
            raise MissingDependencyError(
                "The Horovod backend needs Horovod 0.28.1 built for this torch; build and "
                "install it with `make horovod` (scripts/build_horovod.sh, C++17 fix, cached "
                f"wheel). Received: {error}"
            ) from error
        self._hvd.init()
        self.rank, self.size = self._hvd.rank(), self._hvd.size()
        self.local_rank = self._hvd.local_rank()
        self.process_group_backend = "gloo" if self._hvd.gloo_built() else "mpi"

    def allreduce_sum_(self, tensor, *, name: str):
        return self._hvd.allreduce_(tensor, op=self._hvd.Sum, name=f"deepspark.{name}")

    def broadcast_(self, tensor, *, root: int = 0, name: str):
        return self._hvd.broadcast_(tensor, root_rank=root, name=f"deepspark.{name}")

    def broadcast_object(self, value, *, root: int = 0):
        # One name on every rank: Horovod's default is the value's type name, which differs
        # when only the root has a value (a tuple there, None elsewhere), and ranks whose
        # names differ wait for each other forever.
        return self._hvd.broadcast_object(value, root_rank=root, name="deepspark.object")

    def barrier(self) -> None:
        self._hvd.barrier()

    def shutdown(self) -> None:
        self._hvd.shutdown()


def init(collectives: str | None = None, *, backend: str | None = None) -> CommunicationBackend:
    """Join the process group of this rank (idempotent) and make it the active backend.

    Args:
        collectives: ``"jax"`` (jax.distributed), ``"torch"`` (torch.distributed) or
            ``"horovod"`` (horovod.torch); ``None`` follows the launcher's setting, else the Keras
            backend (``jax`` for JAX, ``torch`` for torch).
        backend: Deprecated spelling of ``collectives``.

    Returns:
        The active ``CommunicationBackend``.

    Raises:
        UserInputError: For an unknown name, or a second, different group in this process.
        MissingDependencyError: ``"horovod"`` without Horovod installed.
    """
    collectives = renamed_argument(collectives, backend) or default_collectives()
    active = _active["backend"]
    if active is not None:
        if active.name != collectives:
            raise UserInputError(
                f"This process already joined a '{active.name}' process group; one kind of "
                f"collectives per process. Received: collectives={collectives!r}"
            )
        return active
    check_collectives(collectives)
    if collectives == "jax":
        from deepspark.distributed._jax import JaxDistributedBackend

        created = JaxDistributedBackend()
    else:
        created = TorchDistributedBackend() if collectives == "torch" else HorovodBackend()
    _active["backend"] = created
    logger.debug("rank %d/%d joined (%s)", created.rank, created.size, created.name)
    return created


def get_backend() -> CommunicationBackend:
    """The active backend; joins the default collectives (from the env) when none is."""
    return _active["backend"] or init()


def shutdown() -> None:
    """Leave the active process group, if any."""
    active, _active["backend"] = _active["backend"], None
    if active is not None:
        active.shutdown()


def default_collectives() -> str:
    """What a launcher chose for its workers, else the Keras backend's own collectives."""
    from deepspark._backend import backend_name

    return os.environ.get(COLLECTIVES_ENV) or ("jax" if backend_name() == "jax" else "torch")


def keras_backend_for(collectives: str) -> str:
    """The Keras backend that trains with ``collectives`` (``jax``; ``torch`` for the others)."""
    return "jax" if collectives == "jax" else "torch"


def check_collectives(collectives: str, *, parameter: str = "collectives") -> None:
    """Raise ``UserInputError`` unless ``collectives`` is one of ``COLLECTIVES``."""
    if collectives not in COLLECTIVES:
        raise UserInputError(
            f"Unknown collectives; valid values are {', '.join(COLLECTIVES)}. "
            f"Received: {parameter}={collectives!r}"
        )


def renamed_argument(collectives, backend, *, stacklevel: int = 3):
    """``collectives``, or the deprecated ``backend=`` spelling with a ``FutureWarning``."""
    if backend is None:
        return collectives
    warnings.warn(
        "The 'backend' argument is deprecated; use 'collectives' (how ranks communicate, not "
        "the Keras backend).",
        FutureWarning,
        stacklevel=stacklevel,
    )
    if collectives is not None and collectives is not backend:
        raise UserInputError(
            "Pass 'collectives' only ('backend' is its deprecated spelling). "
            f"Received: collectives={collectives!r}, backend={backend!r}"
        )
    if isinstance(backend, str):
        check_collectives(backend, parameter="backend")
    return backend


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (for a rendezvous)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def _rendezvous_arguments() -> dict:
    """torchrun-style environment when a launcher set it; otherwise a world of one process
    (without touching ``os.environ``, which child processes would inherit)."""
    if "WORLD_SIZE" in os.environ:
        return {"init_method": "env://"}
    return {"init_method": f"tcp://127.0.0.1:{free_port()}", "rank": 0, "world_size": 1}
