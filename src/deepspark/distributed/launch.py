"""``run``: call a function on every rank of a fresh process group, with restarts when a worker
dies.

A launcher starts ``workers`` processes and a backend connects them:

=========  ===========================================  ===============================
launcher   backend ``torch`` (default)                  backend ``horovod``
=========  ===========================================  ===============================
local      N processes here, torchrun-style env         (not supported)
spark      Spark barrier tasks via ``TorchDistributor``  ``horovod.spark.run``
horovod    (not supported)                              ``horovodrun --gloo`` here
=========  ===========================================  ===============================

A worker that *dies* (killed, out of memory, lost executor) makes ``run`` start the whole job
again, up to ``max_restarts`` times; the function is expected to continue from its last
checkpoint (``deepspark.train`` does). A worker that *raises* fails the job at once: running the
same code again would raise again.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

from deepspark.config import resolve_collectives
from deepspark.distributed import backends
from deepspark.errors import DeepsparkError, UserInputError

logger = logging.getLogger("deepspark.distributed")

RESTART_ENV = "DEEPSPARK_RESTART"
LOG_LEVEL_ENV = "DEEPSPARK_WORKER_LOG_LEVEL"
# Marks a worker exception in a launcher's error text: such failures are not retried.
NO_RETRY_MARKER = "[deepspark worker raised]"


class WorkerLostError(DeepsparkError):
    """A worker process died without raising (killed, crashed, executor lost): retried."""


class WorkerFailedError(DeepsparkError):
    """A worker raised an exception (text in the message): not retried."""


def default_backend(launcher: str) -> str:
    """``horovod`` for the horovod launcher, ``torch`` otherwise."""
    return "horovod" if launcher == "horovod" else "torch"


def check_launch(*, workers: int, launcher: str, backend: str, max_restarts: int) -> None:
    """Raise ``UserInputError`` for a launch that cannot work."""
    resolve_collectives(launcher, backend)
    if int(workers) < 1 or int(max_restarts) < 0:
        raise UserInputError(
            "workers must be >= 1 and max_restarts >= 0. "
            f"Received: workers={workers}, max_restarts={max_restarts}"
        )


def run(
    train_fn: Callable[..., Any],
    args: Sequence[Any] = (),
    *,
    workers: int = 2,
    launcher: str = "local",
    backend: str | None = None,
    max_restarts: int = 0,
    on_restart: Callable[[int], None] | None = None,
) -> Any:
    """Run ``train_fn(*args)`` on every rank; return what rank 0 returned.

    Inside ``train_fn`` the process group is already joined: ``deepspark.distributed.rank()``,
    ``size()``, ``DistributedOptimizer(...)`` and the distributed callbacks just work.

    Args:
        train_fn: A picklable function (module level, or anything cloudpickle can ship).
        args: Positional arguments for ``train_fn`` (picklable).
        workers: Number of ranks.
        launcher: ``local``, ``spark`` or ``horovod`` (see the module docstring).
        backend: ``torch`` or ``horovod``; default follows the launcher.
        max_restarts: Times to start the job again after a worker dies.
        on_restart: Called with the restart number (1, 2...) before each restart.

    Returns:
        Rank 0's return value.

    Raises:
        UserInputError: For an impossible combination of launcher, backend and workers.
        WorkerFailedError: A worker raised; the message has its error.
        WorkerLostError: Workers kept dying after ``max_restarts`` restarts.

    Example:
        >>> def train_fn(rows):
        ...     model.compile(optimizer=DistributedOptimizer(keras.optimizers.SGD(0.1)), loss="mse")
        ...     model.fit(x[rank()::size()], y[rank()::size()], callbacks=distributed_callbacks())
        ...     return model.get_weights()
        >>> weights = deepspark.distributed.run(train_fn, workers=2)
    """
    backend = backend or default_backend(launcher)
    check_launch(workers=workers, launcher=launcher, backend=backend, max_restarts=max_restarts)
    for attempt in range(int(max_restarts) + 1):
        try:
            return _launch_once(train_fn, tuple(args), workers, launcher, backend, attempt)
        except WorkerLostError as error:
            if attempt == max_restarts:
                raise WorkerLostError(
                    f"{error} (gave up after {max_restarts} restart(s); raise --max-restarts "
                    f"to retry more). Received: max_restarts={max_restarts}"
                ) from error
            logger.warning("%s; restart %d of %d", error, attempt + 1, max_restarts)
            if on_restart is not None:
                on_restart(attempt + 1)
    raise AssertionError("unreachable")


def _launch_once(train_fn, args, workers: int, launcher: str, backend: str, attempt: int):
    if launcher == "spark":
        from deepspark.distributed import _spark

        return _spark.launch(train_fn, args, workers=workers, backend=backend, attempt=attempt)
    from deepspark.distributed import _processes

    return _processes.launch(train_fn, args, workers=workers, launcher=launcher, attempt=attempt)


def run_rank(train_fn: Callable[..., Any], args: Sequence[Any], backend: str) -> Any:
    """What every rank runs: join the group, call ``train_fn``, leave the group.

    Exceptions are re-raised with ``NO_RETRY_MARKER`` in front, so launchers that only see the
    text of a failure (Spark) know not to retry it.
    """
    _configure_worker_logging()
    joined = backends.init(backend)
    try:
        result = train_fn(*args)
    except Exception as error:
        # No orderly shutdown here: the group stays up until this process has reported its
        # error and exits, so the peers' "connection reset" errors come after the real one.
        raise RuntimeError(f"{NO_RETRY_MARKER} {type(error).__name__}: {error}") from error
    if joined.name == "torch":
        backends.shutdown()
    return result


def _configure_worker_logging() -> None:
    level = os.environ.get(LOG_LEVEL_ENV, "INFO")
    root = logging.getLogger("deepspark")
    if not root.handlers:
        handler = logging.StreamHandler()
        rank = os.environ.get("RANK", os.environ.get("HOROVOD_RANK", "?"))
        handler.setFormatter(logging.Formatter(f"[rank {rank}] %(message)s"))
        root.addHandler(handler)
        root.setLevel(level)
        root.propagate = False
