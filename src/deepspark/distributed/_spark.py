"""The ``spark`` launcher: ranks run as Spark barrier tasks on whatever master the session uses.

``jax`` collectives: one barrier task per rank (``rdd.barrier().mapPartitions``); each task
starts a fresh ``python -m deepspark.distributed._entry`` process (``jax.distributed`` joins once
per process, and Spark reuses its Python workers) with the torchrun-style environment: rank =
partition id, rendezvous at rank 0's host on a port rank 0 picked and shared with ``allGather``.
The job travels in the task's closure; rank 0's task returns the result. ``torch``:
``pyspark.ml.torch.distributor.TorchDistributor`` (each task starts a torchrun process).
``horovod``: ``horovod.spark.run`` (Horovod's own task service and Gloo rendezvous).

Spark reports a failed barrier stage as text; a failure carrying ``NO_RETRY_MARKER`` is a worker
that raised (``WorkerFailedError``), anything else (a killed Python worker, a lost executor) is a
lost worker (``WorkerLostError``), which ``run`` may retry. The ranks report their progress to a
``ProgressMonitor`` on the driver (at ``spark.driver.host``); when it says ranks are late or
stuck, every Spark job of the session is cancelled and ``WorkerTimeoutError`` raised.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from deepspark._optional import require
from deepspark.distributed.launch import (
    NO_RETRY_MARKER,
    WorkerFailedError,
    WorkerLostError,
    run_packed,
    worker_settings,
)
from deepspark.distributed.progress import PROGRESS_ENV, ProgressMonitor
from deepspark.errors import WorkerTimeoutError

logger = logging.getLogger("deepspark.distributed")
_TAIL_CHARACTERS = 2000
# Spark fails a barrier stage with the first task failure it hears of; tasks report this long
# after their worker failed, so that the first error (the cause, not a peer's "connection
# closed") is the one heard first.
_REPORT_DELAY_S = 1.0
_PEER_GONE_REPORT_DELAY_S = 3.0
_PEER_GONE = ("Gloo", "Connection closed by peer", "Connection reset by peer")


def launch(job: bytes, *, workers: int, collectives: str, attempt: int, limits: dict):
    """Run the pickled job on ``workers`` barrier tasks; return rank 0's value (``limits``:
    the ``ProgressMonitor``'s ``startup_timeout`` and ``watchdog``)."""
    require("pyspark", feature="The spark launcher")
    from deepspark.spark.session import get_session

    session = get_session()
    host = session.conf.get("spark.driver.host", None) or socket.gethostname()
    with ProgressMonitor(workers, bind="0.0.0.0", advertise=host, **limits) as monitor:
        with _cancelled_when_late(session, monitor):
            return _launch_monitored(session, job, workers, collectives, attempt, monitor)


def _launch_monitored(session, job, workers, collectives, attempt, monitor: ProgressMonitor):
    import cloudpickle

    logger.info(
        "launching %d ranks on Spark (%s, %s collectives)",
        workers,
        session.sparkContext.master,
        collectives,
    )
    settings = {**worker_settings(collectives, attempt), PROGRESS_ENV: monitor.address}
    if collectives == "horovod":
        horovod_spark = require("horovod.spark", feature="The spark launcher with Horovod")
        job_fn = functools.partial(
            horovod_spark.run,
            run_packed,
            args=(job, "horovod", monitor.address),
            num_proc=workers,
            start_timeout=int(monitor.startup_timeout) or None,
            use_gloo=True,
            verbose=0,
            env={**os.environ, **settings},
        )
    elif collectives == "torch":
        job_fn = functools.partial(
            _torch_distributor(session, workers).run, run_packed, job, "torch", monitor.address
        )
    else:
        job_fn = functools.partial(_run_barrier_tasks, session, job, workers, settings)
    # Set-up errors (above) propagate as they are; failures of the job itself are classified.
    try:
        with _signal_handlers_kept():
            results = job_fn()
    except Exception as error:  # noqa: BLE001  Spark gives failures as text; classify them
        if monitor.verdict:  # the watcher cancelled the job: late or stuck ranks
            raise WorkerTimeoutError(monitor.verdict) from error
        text = str(error)
        if NO_RETRY_MARKER in text:
            # The worker's own error line, not the JVM's stack trace around it.
            message = text[text.index(NO_RETRY_MARKER) :].splitlines()[0]
            raise WorkerFailedError(_tail(message)) from error
        raise WorkerLostError(f"a Spark task failed: {_tail(text)}") from error
    if collectives == "horovod":
        return results[0]
    if collectives == "jax":
        return cloudpickle.loads(results[0])
    return results


@contextlib.contextmanager
def _cancelled_when_late(session, monitor: ProgressMonitor):
    """While the job runs, a thread asks the monitor; when ranks are late or stuck it cancels
    the session's Spark jobs (the launch then fails, and ``launch`` says why)."""
    finished = threading.Event()

    def watch() -> None:
        while not finished.wait(0.5):
            monitor.verdict = monitor.failure()
            if monitor.verdict:
                logger.error("%s", monitor.verdict)
                session.sparkContext.cancelAllJobs()
                return

    watcher = threading.Thread(target=watch, name="deepspark-watchdog", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        finished.set()
        watcher.join()


def _run_barrier_tasks(session, job: bytes, workers: int, settings: dict[str, str]) -> list:
    """One barrier task per rank, each running one worker process; rank 0's result bytes."""

    def run_partition(_rows):
        yield from _barrier_task(job, workers, settings)

    ranks = session.sparkContext.parallelize(range(workers), workers)
    return ranks.barrier().mapPartitions(run_partition).collect()


def _barrier_task(job: bytes, workers: int, settings: dict[str, str]):
    """In a Spark task: rendezvous, start the worker, wait, report (see module docstring)."""
    from pyspark import BarrierTaskContext

    from deepspark.distributed._processes import (
        ERROR_PREFIX,
        JOB_FILE,
        RESULT_FILE,
    )
    from deepspark.distributed.backends import free_port

    context = BarrierTaskContext.get()
    rank = context.partitionId()
    # Rank 0 hosts the coordinator: it picks a port free on its own host.
    port = context.allGather(str(free_port("") if rank == 0 else 0))[0]
    environment = {
        **os.environ,
        **settings,
        **_device_settings(context),
        "MASTER_ADDR": context.getTaskInfos()[0].address.split(":")[0],
        "MASTER_PORT": port,
        "WORLD_SIZE": str(workers),
        "RANK": str(rank),
        "LOCAL_RANK": "0",
        "LOCAL_WORLD_SIZE": "1",
        **_task_cores(context, rank),
    }
    job_dir = Path(tempfile.mkdtemp(prefix="deepspark-task-"))
    try:
        (job_dir / JOB_FILE).write_bytes(job)
        process = _start_rank(job_dir, environment, rank)
        code = process.wait()
        if code == 0:
            if rank == 0:
                yield (job_dir / RESULT_FILE).read_bytes()
            return
        error_file = job_dir / f"{ERROR_PREFIX}{rank}.pkl"
        _wait_for_turn(error_file, code)
        if error_file.exists():
            raise RuntimeError(_worker_error_text(error_file))
        raise RuntimeError(f"rank {rank}'s worker process exited {code}")
    finally:
        shutil.rmtree(job_dir, ignore_errors=True)


def _start_rank(job_dir: Path, environment: dict[str, str], rank: int):
    """The rank's worker process: forked from this Python worker when it preloaded Keras and
    deepspark (``deepspark.spark.daemon``; a rank then starts in milliseconds instead of
    importing everything again), else a fresh ``python -m deepspark.distributed._entry``."""
    from deepspark.distributed import _zygote
    from deepspark.distributed._processes import die_with_parent, entry_command

    if _zygote.can_fork_here(environment):
        try:
            return _zygote.fork_here(str(job_dir), environment, f"deepspark-rank{rank}")
        except OSError as error:
            logger.warning("could not fork rank %d here (%s): starting a fresh one", rank, error)
    return subprocess.Popen(
        entry_command(job_dir), env=environment, stdout=2, preexec_fn=die_with_parent
    )


def _task_cores(context, rank: int) -> dict[str, str]:
    """Pin the worker to ``spark.task.cpus`` cores, chosen by its index among the tasks on the
    same host (see ``distributed.cores``)."""
    from deepspark.distributed.cores import pinning_settings

    hosts = [info.address.split(":")[0] for info in context.getTaskInfos()]
    local_rank = hosts[: rank + 1].count(hosts[rank]) - 1
    return pinning_settings(local_rank, hosts.count(hosts[rank]), max(1, int(context.cpus())))


def _wait_for_turn(error_file: Path, code: int) -> None:
    """Report failures in the order they happened (see ``_REPORT_DELAY_S``); a worker that only
    lost its peers (a collective failed, or jax.distributed aborted it) reports last."""
    if error_file.exists():
        happened = error_file.stat().st_mtime
        peer_gone = any(sign in _worker_error_text(error_file) for sign in _PEER_GONE)
    else:
        happened, peer_gone = time.time(), code == -signal.SIGABRT
    delay = _PEER_GONE_REPORT_DELAY_S if peer_gone else _REPORT_DELAY_S
    time.sleep(max(0.0, happened + delay - time.time()))


def _device_settings(context) -> dict[str, str]:
    """The GPUs Spark gave this task; none given: CPU only (as ``TorchDistributor`` does),
    unless the user chose JAX's platforms."""
    gpus = context.resources().get("gpu")
    if gpus is not None and gpus.addresses:
        return {"CUDA_VISIBLE_DEVICES": ",".join(gpus.addresses)}
    return {} if "JAX_PLATFORMS" in os.environ else {"JAX_PLATFORMS": "cpu"}


def _worker_error_text(error_file: Path) -> str:
    import cloudpickle

    error, remote_traceback = cloudpickle.loads(error_file.read_bytes())
    logger.debug("worker traceback:\n%s", remote_traceback)
    summary = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    return f"{NO_RETRY_MARKER} {summary}"


@contextlib.contextmanager
def _signal_handlers_kept():
    """horovod.spark.run installs SIGINT/SIGTERM handlers in the driver and leaves them there,
    which would make a later Ctrl-C do nothing; put the caller's handlers back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    kept = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in kept.items():
            signal.signal(number, handler)


def _torch_distributor(session, workers: int):
    import torch
    from pyspark.ml.torch.distributor import TorchDistributor

    # GPUs only when Spark hands them to tasks; otherwise TorchDistributor refuses to start.
    gpu_per_task = session.conf.get("spark.task.resource.gpu.amount", "0")
    use_gpu = torch.cuda.is_available() and float(gpu_per_task or 0) > 0
    return TorchDistributor(num_processes=workers, local_mode=False, use_gpu=use_gpu)


def _tail(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _TAIL_CHARACTERS else "..." + text[-_TAIL_CHARACTERS:]
