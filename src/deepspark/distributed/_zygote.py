"""Local worker processes forked from a process that imported Keras and deepspark once.

A worker started as ``python -m deepspark.distributed._entry`` spends several seconds of CPU
importing Keras, its backend, MLflow and deepspark before it reads its job. The local launcher
instead keeps one *zygote* per driver process and Keras backend: a child started once
(``python -m deepspark.distributed._zygote FD``) that imports all that, runs nothing on a backend
(no device, no thread pool: a fork is safe, as in PySpark's daemon, ``spark.daemon``), and forks
a worker for each rank of each launch. Restarts, the fine-tuning phase and later runs in the same
driver (a notebook, ``tune``) start their workers in milliseconds.

A forked worker is what the spawned one was: its own process (``ps`` shows ``deepspark-rankN``),
the rank's environment and working directory, stdout and stderr on the driver's stderr at launch
time (passed with each request), killed when the zygote dies, which is killed when the driver
dies (``PR_SET_PDEATHSIG``). The zygote reaps the workers and reports their exit codes;
``ForkedWorker`` answers ``poll``/``wait``/``send_signal`` like ``subprocess.Popen``.

``DEEPSPARK_WORKER_PRELOAD=0`` turns this off (each worker a fresh interpreter). It is off where
``os.fork`` is missing and outside the driver's main thread (the zygote dies with the thread that
started it).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time

logger = logging.getLogger("deepspark.distributed")

PRELOAD_ENV = "DEEPSPARK_WORKER_PRELOAD"
#: Seconds the zygote may take to import everything and answer its first request.
START_TIMEOUT = 300.0
# Environment a module may read while it is imported: a zygote serves only launches that agree.
_IMPORT_TIME_PREFIXES = ("KERAS_", "JAX_", "XLA_", "TF_", "PYTHON", "TORCH", "CUDA")
_MESSAGE_BYTES = 1 << 20


def enabled() -> bool:
    """Fork local workers from a zygote (see the module docstring)?"""
    return (
        os.environ.get(PRELOAD_ENV, "1") != "0"
        and hasattr(os, "fork")
        and sys.platform.startswith("linux")
        and threading.current_thread() is threading.main_thread()
    )


def start_worker(command: list[str], env: dict[str, str], name: str) -> ForkedWorker:
    """Fork ``python -m deepspark.distributed._entry JOB_DIR`` (``command``) with ``env``."""
    key = _import_key(env)
    zygote = _ZYGOTES.get(key)
    if zygote is None or not zygote.alive():
        zygote = _ZYGOTES[key] = Zygote(env)
    return zygote.fork(command[-1], env, name)


class ForkedWorker:
    """A worker forked by a ``Zygote``; the ``subprocess.Popen`` methods the launcher uses."""

    def __init__(self, zygote: Zygote | None, pid: int):
        self.zygote, self.pid = zygote, pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self.zygote.exit_code(self.pid)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(f"deepspark worker {self.pid}", timeout)
            time.sleep(0.02)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, signum)
            except ProcessLookupError:
                pass


class Zygote:
    """The driver's end of one zygote process."""

    def __init__(self, env: dict[str, str]):
        from deepspark.distributed._processes import die_with_parent

        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.socket = ours
        self.process = subprocess.Popen(
            [sys.executable, "-m", "deepspark.distributed._zygote", str(theirs.fileno())],
            env=env,
            stdin=subprocess.DEVNULL,
            pass_fds=(theirs.fileno(),),
            preexec_fn=die_with_parent,
        )
        theirs.close()
        self.exits: dict[int, int] = {}
        self.started: dict[int, int] = {}
        self.changed = threading.Condition()
        self.requests = 0
        self.reader = threading.Thread(target=self._read, name="deepspark-zygote", daemon=True)
        self.reader.start()
        atexit.register(self.close)

    def alive(self) -> bool:
        return self.process.poll() is None and self.reader.is_alive()

    def fork(self, job_dir: str, env: dict[str, str], name: str) -> ForkedWorker:
        self.requests += 1
        request = {
            "id": self.requests,
            "job": job_dir,
            "env": env,
            "cwd": os.getcwd(),
            "name": name,
        }
        sys.stderr.flush()
        socket.send_fds(self.socket, [json.dumps(request).encode()], [2])
        deadline = time.monotonic() + START_TIMEOUT
        with self.changed:
            while self.requests not in self.started:
                if not self.alive() or time.monotonic() > deadline:
                    raise OSError(
                        f"the preloaded worker process (pid {self.process.pid}) did not "
                        f"fork a worker within {START_TIMEOUT:.0f} s or exited"
                    )
                self.changed.wait(0.5)
            return ForkedWorker(self, self.started.pop(self.requests))

    def exit_code(self, pid: int) -> int | None:
        with self.changed:
            if pid in self.exits:
                return self.exits[pid]
        if not self.alive():  # the zygote died: its workers were killed with it
            return self.exits.get(pid, -signal.SIGKILL)
        return None

    def close(self) -> None:
        try:  # shutdown wakes the reader and tells the zygote (EOF), which then exits
            self.socket.shutdown(socket.SHUT_RDWR)
            self.socket.close()
            self.process.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            pass

    def _read(self) -> None:
        while True:
            try:
                message = self.socket.recv(_MESSAGE_BYTES)
            except OSError:
                return
            if not message:
                return
            kind, first, second = message.decode().split()
            with self.changed:
                if kind == "started":
                    self.started[int(first)] = int(second)
                else:
                    self.exits[int(first)] = int(second)
                self.changed.notify_all()


_ZYGOTES: dict[tuple, Zygote] = {}


# --- forking from the calling process ------------------------------------------------------------
# A Spark barrier task runs in a PySpark worker forked from deepspark's daemon
# (``deepspark.spark.daemon``), which imported Keras and the worker modules already: that worker
# is itself a zygote, and forks the rank directly instead of starting a fresh interpreter.

# Start-up settings a fork may still change: JAX reads JAX_PLATFORMS into its config at import
# and takes a config update until its backends start; unbuffered streams can be asked for later.
_SETTABLE_AFTER_IMPORT = {"JAX_PLATFORMS", "PYTHONUNBUFFERED"}


class ForkedChild(ForkedWorker):
    """A worker forked by this process itself (reaped here, not by a zygote)."""

    def __init__(self, pid: int):
        super().__init__(None, pid)

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = _returncode(status)
        return self.returncode


def can_fork_here(env: dict[str, str]) -> bool:
    """Would a worker forked from this process be the one ``env`` starts fresh? Yes when this
    process imported Keras on JAX, started none of JAX's backends, and ``env`` agrees with this
    process on every import-time setting JAX cannot take later."""
    if not enabled() or "keras" not in sys.modules or "jax" not in sys.modules:
        return False
    if sys.modules["keras"].backend.backend() != "jax":
        return False  # torch sizes its thread pools once: not forked
    from jax._src import xla_bridge

    started = getattr(xla_bridge, "backends_are_initialized", None)
    if started is None or started():  # a JAX that cannot say, or one that runs: spawn
        return False
    differs = {key for key, _ in set(_import_key(env)) ^ set(_import_key(dict(os.environ)))}
    return differs <= {key for key in _SETTABLE_AFTER_IMPORT if key in env}


def fork_here(job_dir: str, env: dict[str, str], name: str) -> ForkedChild:
    """Fork ``python -m deepspark.distributed._entry JOB_DIR`` from this process (see
    ``can_fork_here``); the child dies with this process and writes on its stderr."""
    request = {"job": job_dir, "env": env, "cwd": os.getcwd(), "name": name}
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        _run_worker(request, [])  # never returns
    return ForkedChild(pid)


def _import_key(env: dict[str, str]) -> tuple:
    return tuple(sorted((k, v) for k, v in env.items() if k.startswith(_IMPORT_TIME_PREFIXES)))


# --- the zygote process -------------------------------------------------------------------------


def preload(*, collectives: bool = True) -> None:
    """Import what every worker needs; a failure only means the workers import it themselves.
    ``collectives=False`` leaves out torch.distributed (Spark's scoring workers, which fork a
    rank only now and then, stay light)."""
    import contextlib

    with contextlib.suppress(Exception):
        import cloudpickle  # noqa: F401
        import keras  # noqa: F401  (the backend KERAS_BACKEND names)

        import deepspark.distributed._entry  # noqa: F401
        import deepspark.distributed.training  # noqa: F401
        import deepspark.distributed.worker  # noqa: F401
        import deepspark.training.fit  # noqa: F401
    # torch.distributed: the collectives of torch workers, and JAX's host collectives on CPU
    # (gloo); importing torch is most of a JAX worker's start-up otherwise.
    if collectives and os.environ.get("DEEPSPARK_JAX_COLLECTIVES") != "spmd":
        with contextlib.suppress(Exception):
            import torch.distributed  # noqa: F401


def serve(channel: socket.socket) -> None:
    """Fork a worker per request until the driver closes the channel; report exits."""
    import select

    children: set[int] = set()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the driver and the workers
    try:
        while True:
            ready, _, _ = select.select([channel], [], [], 0.05)
            if ready:
                message, fds, _, _ = socket.recv_fds(channel, _MESSAGE_BYTES, 4)
                if not message:
                    return
                request = json.loads(message)
                pid = os.fork()
                if pid == 0:
                    channel.close()
                    _run_worker(request, fds)  # never returns
                children.add(pid)
                for fd in fds:
                    os.close(fd)
                channel.send(f"started {request['id']} {pid}".encode())
            while children:
                try:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid == 0:
                    break
                children.discard(pid)
                channel.send(f"exited {pid} {_returncode(status)}".encode())
    finally:
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _run_worker(request: dict, fds: list[int]) -> None:
    """In the forked child: become the rank's worker process, run it, exit with its code."""
    import ctypes

    code = 1
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with the zygote (or task)
        libc.prctl(15, request["name"].encode()[:15])  # PR_SET_NAME: what ps shows
        for signum in (signal.SIGTERM, signal.SIGCHLD):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        output = fds[0] if fds else 2
        os.dup2(output, 1)
        os.dup2(output, 2)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.environ.clear()
        os.environ.update(request["env"])
        if "jax" in sys.modules and "JAX_PLATFORMS" in os.environ:  # read by jax at import
            sys.modules["jax"].config.update("jax_platforms", os.environ["JAX_PLATFORMS"])
        if os.environ.get("PYTHONUNBUFFERED"):
            for stream in (sys.stdout, sys.stderr):
                stream.reconfigure(write_through=True)
        os.chdir(request["cwd"])
        sys.path[0] = request["cwd"]  # as ``python -m`` started there would have it
        sys.argv = ["deepspark.distributed._entry", request["job"]]
        from pathlib import Path

        from deepspark.distributed._entry import main

        code = main(Path(request["job"]))
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    except BaseException:  # noqa: BLE001  reported like an uncaught error in a fresh interpreter
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        try:
            atexit._run_exitfuncs()  # jax.distributed's shutdown, logging's flush
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _returncode(status: int) -> int:
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


if __name__ == "__main__":
    preload()
    serve(socket.socket(fileno=int(sys.argv[1])))
