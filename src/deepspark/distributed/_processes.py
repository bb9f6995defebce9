"""Launchers that start worker processes on this machine: ``local`` (torchrun-style environment
rendezvous for jax.distributed or torch.distributed) and ``horovod`` (``horovodrun --gloo``).

The job (function and arguments) goes to the workers as a cloudpickle file in a job folder; each
worker runs ``deepspark.distributed._entry JOB_DIR`` (forked from a zygote that imported Keras
and deepspark once, ``_zygote``, or ``python -m`` in a fresh interpreter); rank 0 writes its
return value there, and a worker that raises writes its exception there before exiting 1. A
worker that exits any other way (signal, crash) is lost, and the job may be restarted. While
they run, the driver's ``ProgressMonitor`` judges the startup timeout and the watchdog; either
stops them all with a ``WorkerTimeoutError``.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from deepspark.distributed import _zygote
from deepspark.distributed.backends import free_port
from deepspark.distributed.launch import WorkerFailedError, WorkerLostError, worker_settings
from deepspark.distributed.progress import PROGRESS_ENV, ProgressMonitor
from deepspark.errors import WorkerTimeoutError

logger = logging.getLogger("deepspark.distributed")

JOB_FILE = "job.pkl"
RESULT_FILE = "result.pkl"
WORKERS_FILE = "workers.txt"
ERROR_PREFIX = "error-rank-"
POLL_SECONDS = 0.05
GRACE_SECONDS = 3.0


def launch(
    job: bytes,
    *,
    workers: int,
    launcher: str,
    collectives: str,
    attempt: int,
    monitor: ProgressMonitor,
):
    """Start the workers, wait for them, return rank 0's value (see module docstring)."""
    import cloudpickle  # comes with MLflow, a core dependency

    job_dir = Path(tempfile.mkdtemp(prefix="deepspark-job-"))
    try:
        (job_dir / JOB_FILE).write_bytes(job)
        env = {**os.environ, **worker_settings(collectives, attempt), PROGRESS_ENV: monitor.address}
        if launcher == "horovod":
            monitor.rendezvous = "horovodrun's Gloo rendezvous on this machine"
            processes = [_start_horovodrun(job_dir, workers, env)]
        else:
            processes = _start_local(job_dir, workers, env)
        (job_dir / WORKERS_FILE).write_text("\n".join(str(p.pid) for p in processes))
        _supervise(processes, job_dir, monitor)
        return cloudpickle.loads((job_dir / RESULT_FILE).read_bytes())
    finally:
        shutil.rmtree(job_dir, ignore_errors=True)


def entry_command(job_dir: Path) -> list[str]:
    return [sys.executable, "-m", "deepspark.distributed._entry", str(job_dir)]


def _start_local(job_dir: Path, workers: int, env: dict[str, str]) -> list:
    """One process per rank: forked from the zygote (``_zygote``) or a fresh interpreter."""
    from deepspark.distributed.cores import pinning_settings

    rendezvous = {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
        "WORLD_SIZE": str(workers),
        "LOCAL_WORLD_SIZE": str(workers),
    }
    processes = []
    for rank in range(workers):
        rank_env = {
            **env,
            **rendezvous,
            **pinning_settings(rank, workers),
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
        }
        # stdout of workers goes to stderr: the CLI's stdout carries one JSON document only.
        if _zygote.enabled():
            try:
                name = f"deepspark-rank{rank}"
                processes.append(_zygote.start_worker(entry_command(job_dir), rank_env, name))
                continue
            except OSError as error:  # the zygote died or hung: a fresh interpreter still works
                logger.warning("%s; rank %d starts in a fresh interpreter", error, rank)
        processes.append(
            subprocess.Popen(
                entry_command(job_dir), env=rank_env, stdout=2, preexec_fn=die_with_parent
            )
        )
    return processes


def _start_horovodrun(job_dir: Path, workers: int, env: dict[str, str]) -> subprocess.Popen:
    horovodrun = Path(sys.executable).with_name("horovodrun")
    if not horovodrun.exists():
        horovodrun = Path(shutil.which("horovodrun") or "horovodrun")
    command = [str(horovodrun), "--gloo", "-np", str(workers), "-H", f"localhost:{workers}"]
    command += ["--gloo-timeout-seconds", "60", *entry_command(job_dir)]
    return subprocess.Popen(
        command, env=env, stdout=2, start_new_session=True, preexec_fn=die_with_parent
    )


def die_with_parent() -> None:
    """In the child before exec: if the launcher is SIGKILLed, its workers must not train on
    (and write checkpoints) as orphans; Linux delivers SIGKILL to them when it dies."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _supervise(processes: list[subprocess.Popen], job_dir: Path, monitor: ProgressMonitor) -> None:
    """Wait for every worker; on the first failure stop the rest (they would wait forever in a
    collective) and raise ``WorkerFailedError`` or ``WorkerLostError``; when the monitor says
    ranks are late or stuck, stop them all and raise ``WorkerTimeoutError``."""
    try:
        while True:
            codes = [process.poll() for process in processes]
            if all(code == 0 for code in codes):
                return
            if any(code not in (None, 0) for code in codes):
                break
            monitor.verdict = monitor.failure()
            if monitor.verdict:
                raise WorkerTimeoutError(monitor.verdict)
            time.sleep(POLL_SECONDS)
        # Give the others a moment to notice and report on their own, then stop them.
        deadline = time.monotonic() + GRACE_SECONDS
        while time.monotonic() < deadline and any(p.poll() is None for p in processes):
            time.sleep(POLL_SECONDS)
        exits = [process.poll() for process in processes]
    finally:
        _stop(processes)
    _raise_failure(exits, job_dir)


def _raise_failure(exits: list[int | None], job_dir: Path) -> None:
    import cloudpickle

    error_files = sorted(job_dir.glob(f"{ERROR_PREFIX}*.pkl"), key=lambda p: p.stat().st_mtime_ns)
    died = [
        f"worker {index} exited {code}"
        for index, code in enumerate(exits)
        if code is not None and code != 0 and (_killed(code) or not error_files)
    ]
    if died or not error_files:
        raise WorkerLostError(", ".join(died) or "a worker was lost")
    error, remote_traceback = cloudpickle.loads(error_files[0].read_bytes())
    logger.debug("worker traceback:\n%s", remote_traceback)
    if isinstance(error, Exception):
        error.add_note(f"raised in a worker:\n{remote_traceback}")
        raise error
    raise WorkerFailedError(str(error))


def _killed(code: int) -> bool:
    """Died by a signal that says "lost" (killed, crashed). Not SIGABRT: jax.distributed aborts
    the survivors when a peer that raised has exited; the raising worker's error wins."""
    return code < 0 and code != -signal.SIGABRT


def _stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        if process.poll() is None:
            _signal(process, signal.SIGTERM)
    deadline = time.monotonic() + GRACE_SECONDS
    for process in processes:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal(process, signal.SIGKILL)
            process.wait()


def _signal(process: subprocess.Popen, signum: int) -> None:
    """horovodrun leads its own process group (its workers are in it); local workers are not."""
    try:
        if os.getpgid(process.pid) == process.pid:
            os.killpg(process.pid, signum)
        else:
            process.send_signal(signum)
    except ProcessLookupError:
        pass
