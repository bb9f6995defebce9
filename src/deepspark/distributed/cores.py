"""Each worker process on as many cores as it was given, no more.

XLA (JAX) and torch size their thread pools to the CPUs a process may run on. Two workers on
one host, each seeing every core, start twice as many compute threads as there are cores and
slow each other down (measured: 2 JAX workers on 2 shared cores ran at 0.34x of one). A worker
is therefore restricted (``sched_setaffinity``) to its share of the host's cores: before it
imports torch, and right after JAX created its thread pools (a JAX worker in host-collectives
mode needs more than one XLA thread, see ``distributed._jax``). ``cores per worker = cores /
workers on the host`` (local launcher), or ``spark.task.cpus`` for a Spark barrier task, on
consecutive cores by local rank.

``DEEPSPARK_CORES_PER_WORKER`` sets the share; ``DEEPSPARK_PIN_CORES=0`` leaves workers
unrestricted.
"""

from __future__ import annotations

import logging
import os

logger = logging.getLogger("deepspark.distributed")

WORKER_CORES_ENV = "DEEPSPARK_WORKER_CORES"  # set by launchers: "0,1"
CORES_PER_WORKER_ENV = "DEEPSPARK_CORES_PER_WORKER"
PIN_ENV = "DEEPSPARK_PIN_CORES"


def worker_cores(local_rank: int, local_workers: int, per_worker: int | None = None) -> list[int]:
    """The cores of worker ``local_rank`` of ``local_workers`` on this host.

    Args:
        local_rank: The worker's index among the workers of this host.
        local_workers: Workers on this host.
        per_worker: Cores each worker gets; default ``$DEEPSPARK_CORES_PER_WORKER``, else an
            equal share (at least one).
    """
    available = sorted(os.sched_getaffinity(0))
    chosen = per_worker or int(os.environ.get(CORES_PER_WORKER_ENV) or 0)
    share = chosen or max(1, len(available) // max(1, local_workers))
    share = min(share, len(available))
    start = (local_rank * share) % len(available)
    return [available[(start + offset) % len(available)] for offset in range(share)]


def pinning_settings(local_rank: int, local_workers: int, per_worker: int | None = None) -> dict:
    """The environment that tells a worker process its cores (empty when pinning is off)."""
    if os.environ.get(PIN_ENV, "1") == "0":
        return {}
    cores = worker_cores(local_rank, local_workers, per_worker)
    return {WORKER_CORES_ENV: ",".join(map(str, cores)), "OMP_NUM_THREADS": str(len(cores))}


def pin_this_process(*, all_threads: bool = False) -> None:
    """Restrict this process to ``$DEEPSPARK_WORKER_CORES``.

    Called before JAX or torch load (their pools then size themselves to those cores), or with
    ``all_threads`` after they started: every thread the process has now is pinned, and threads
    started later inherit it from theirs.
    """
    listed = os.environ.get(WORKER_CORES_ENV)
    if not listed:
        return
    cores = {int(core) for core in listed.split(",") if core.strip()}
    threads = [0]
    if all_threads:
        threads = [int(task) for task in os.listdir("/proc/self/task")] or [0]
    try:
        for thread in threads:
            os.sched_setaffinity(thread, cores)
    except OSError as error:  # cores outside this container's set: leave the process as it is
        logger.debug("could not pin to cores %s: %s", sorted(cores), error)
