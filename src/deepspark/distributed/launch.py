"""``run``: call a function on every rank of a fresh process group, with restarts when a worker
dies.

A launcher starts ``workers`` processes and the collectives connect them; the collectives also
choose the workers' Keras backend (``jax`` trains on JAX, ``torch`` and ``horovod`` on torch):

- ``local``: N processes on this machine with a torchrun-style environment; ``jax`` (the default
  on JAX) or ``torch`` (the default on torch).
- ``spark``: one Spark barrier task per rank on any master; ``jax`` (each task starts one worker
  process, rank 0's host is the rendezvous), ``torch`` (Spark's ``TorchDistributor``) or
  ``horovod`` (``horovod.spark.run``).
- ``horovod``: ``horovodrun --gloo`` on this machine; ``horovod`` only.

The function and its arguments travel to the workers as one cloudpickle payload, unpickled only
after the worker has chosen its Keras backend and joined the group.

A worker that *dies* (killed, out of memory, lost executor) makes ``run`` start the whole job
again, up to ``max_restarts`` times; the function is expected to continue from its last
checkpoint (``deepspark.train`` does). A worker that *raises* fails the job at once: running the
same code again would raise again. So do ranks that never connect within the startup timeout,
or make no progress within the watchdog's time (``WorkerTimeoutError``, see ``progress``); every
launcher logs each rank's progress (connected, first batch, each epoch) on stderr.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

from deepspark.config import resolve_collectives
from deepspark.distributed import backends
from deepspark.distributed import progress as feedback
from deepspark.distributed.backends import COLLECTIVES_ENV, keras_backend_for, renamed_argument
from deepspark.distributed.progress import (
    ProgressMonitor,
    report,
    report_connected,
    report_started,
)
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


def resolve_launch(launcher: str, collectives: str | None = None) -> str:
    """The collectives of a launch: ``collectives`` checked against ``launcher`` (it also picks
    the workers' Keras backend), or, when ``None``, the default for this process's Keras backend.

    Raises:
        UserInputError: For a combination that cannot work.
    """
    keras_backend = keras_backend_for(collectives) if collectives else None
    return resolve_collectives(launcher, collectives, keras_backend)


def check_launch(*, workers: int, launcher: str, collectives: str, max_restarts: int) -> None:
    """Raise ``UserInputError`` for a launch that cannot work."""
    resolve_launch(launcher, collectives)
    if int(workers) < 1 or int(max_restarts) < 0:
        raise UserInputError(
            "workers must be >= 1 and max_restarts >= 0. "
            f"Received: workers={workers}, max_restarts={max_restarts}"
        )


def worker_settings(collectives: str, attempt: int) -> dict[str, str]:
    """Environment every worker process gets on top of its launcher's."""
    return {
        RESTART_ENV: str(attempt),
        COLLECTIVES_ENV: collectives,
        LOG_LEVEL_ENV: logging.getLevelName(logging.getLogger("deepspark").getEffectiveLevel()),
        "KERAS_BACKEND": keras_backend_for(collectives),
        "PYTHONUNBUFFERED": "1",
    }


def run(
    train_fn: Callable[..., Any],
    args: Sequence[Any] = (),
    *,
    workers: int = 2,
    launcher: str = "local",
    collectives: str | None = None,
    max_restarts: int = 0,
    on_restart: Callable[[int], None] | None = None,
    backend: str | None = None,
    startup_timeout: float | None = None,
    watchdog: float | None = None,
) -> Any:
    """Run ``train_fn(*args)`` on every rank; return what rank 0 returned.

    Inside ``train_fn`` the process group is already joined: ``deepspark.distributed.rank()``,
    ``size()``, ``DistributedOptimizer(...)`` and the distributed callbacks just work.

    Args:
        train_fn: A picklable function (module level, or anything cloudpickle can ship).
        args: Positional arguments for ``train_fn`` (picklable).
        workers: Number of ranks.
        launcher: ``local``, ``spark`` or ``horovod`` (see the module docstring).
        collectives: ``jax``, ``torch`` or ``horovod``; the workers run Keras on JAX for ``jax``
            and on torch otherwise. ``None``: this process's Keras backend and the launcher
            decide (``jax`` on JAX; ``torch``, or ``horovod`` for the horovod launcher, on torch).
        max_restarts: Times to start the job again after a worker dies.
        on_restart: Called with the restart number (1, 2...) before each restart.
        backend: Deprecated spelling of ``collectives``.
        startup_timeout: Seconds every rank has to connect (``None``:
            ``$DEEPSPARK_STARTUP_TIMEOUT``, else 300; 0: wait forever).
        watchdog: Seconds a connected rank may report no progress (``None``:
            ``$DEEPSPARK_WATCHDOG``, else off; 0: off). Ranks report batches through
            ``progress.progress_callback()`` (``deepspark.train`` adds it).

    Returns:
        Rank 0's return value.

    Raises:
        UserInputError: For an impossible combination of launcher, collectives and workers.
        WorkerFailedError: A worker raised; the message has its error.
        WorkerLostError: Workers kept dying after ``max_restarts`` restarts.
        WorkerTimeoutError: Ranks did not connect in time, or stopped making progress.

    Example:
        >>> def train_fn(rows):
        ...     model.compile(optimizer=DistributedOptimizer(keras.optimizers.SGD(0.1)), loss="mse")
        ...     model.fit(x[rank()::size()], y[rank()::size()], callbacks=distributed_callbacks())
        ...     return model.get_weights()
        >>> weights = deepspark.distributed.run(train_fn, workers=2)
    """
    import cloudpickle  # comes with MLflow, a core dependency

    collectives = renamed_argument(collectives, backend)
    check_launch(
        workers=workers, launcher=launcher, collectives=collectives, max_restarts=max_restarts
    )
    collectives = resolve_launch(launcher, collectives)
    limits = {
        "startup_timeout": feedback.startup_timeout(startup_timeout),
        "watchdog": feedback.watchdog_seconds(watchdog),
    }
    job = cloudpickle.dumps((train_fn, tuple(args)))
    for attempt in range(int(max_restarts) + 1):
        try:
            return _launch_once(job, workers, launcher, collectives, attempt, limits)
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


def _launch_once(job: bytes, workers: int, launcher: str, collectives: str, attempt, limits):
    if launcher == "spark":
        from deepspark.distributed import _spark

        return _spark.launch(
            job, workers=workers, collectives=collectives, attempt=attempt, limits=limits
        )
    from deepspark.distributed import _processes

    with ProgressMonitor(workers, **limits) as monitor:
        return _processes.launch(
            job,
            workers=workers,
            launcher=launcher,
            collectives=collectives,
            attempt=attempt,
            monitor=monitor,
        )


def run_packed(job: bytes, collectives: str, progress: str | None = None) -> Any:
    """What every rank runs: choose the Keras backend, join the group, unpickle and call the
    function (``job``: the cloudpickled ``(train_fn, args)``), leave the group.

    Exceptions are re-raised with ``NO_RETRY_MARKER`` in front, so launchers that only see the
    text of a failure (Spark) know not to retry it. ``progress``: the driver's
    ``ProgressMonitor`` address (default: ``$DEEPSPARK_PROGRESS``), told of each step.
    """
    import cloudpickle

    from deepspark._backend import use_backend

    report_started(progress)
    _configure_worker_logging()
    try:
        use_backend(keras_backend_for(collectives))  # before the job's modules import Keras
    except Exception as error:
        raise RuntimeError(f"{NO_RETRY_MARKER} {type(error).__name__}: {error}") from error
    joined = backends.init(collectives)  # before anything touches a JAX device
    report_connected(joined.rank, joined.size)
    try:
        train_fn, args = cloudpickle.loads(job)
        result = train_fn(*args)
    except Exception as error:
        # No orderly shutdown here: the group stays up until this process has reported its
        # error and exits, so the peers' "connection reset" errors come after the real one.
        raise RuntimeError(f"{NO_RETRY_MARKER} {type(error).__name__}: {error}") from error
    report("done")
    if joined.name in ("torch", "jax"):
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
