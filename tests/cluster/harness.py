"""A Spark standalone cluster on this machine whose executors behave as if on other hosts.

One master and N workers started from the venv's pyspark, all bound to 127.0.0.1 on free ports.
Each worker runs in its own mount namespace (``unshare -m``) in which the driver's folders are
covered by an empty, read-only tmpfs: the worker, its executors and their Python workers cannot
see anything the driver keeps there, as on a real multi-host cluster. The network is shared, so
executors still reach the driver, the master and an S3 server on 127.0.0.1. The repository and
the venv stay visible (deepspark is installed there, as it would be on real executors).

Every process the cluster starts runs in a session of its own (``setsid``), so stopping the
cluster finds and ends all of them, executors and Python daemons included, by session id. The
master and workers also get SIGTERM when the process that started them dies.

Example:
    cluster = start_cluster(hidden=[tmp_dir], extra_env=s3_env)
    try:
        done = cluster.run_driver(["-m", "deepspark", "train", ...], tmp_dir)
    finally:
        cluster.stop()
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.cluster.processes import (
    Daemon,
    cmdline,
    die_with_parent,
    end_session,
    session_members,
    start_daemon,
    wait_for_log,
)

REPO = Path(__file__).resolve().parents[2]
SPARK_CLASS = Path(sys.executable).parent / "spark-class"
MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
EXECUTOR_CLASS = "org.apache.spark.executor.CoarseGrainedExecutorBackend"

# Variables of the test process that must not leak into the cluster's daemons: they name
# driver-side folders (MLflow stores, checkpoints) or another Spark set-up.
_PRIVATE_PREFIXES = ("MLFLOW_", "DEEPSPARK_", "PYTEST_", "SPARK_", "PYSPARK_")

# Short-lived JVMs on a busy machine: C1 only and the serial collector roughly halve the start-up
# of every JVM (measured: driver session 18-30 s -> 9-11 s at load 8-11 on 2 cores).
FAST_JVM_OPTIONS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"

# The master's REST submission server would take the fixed port 6066.
_DEFAULTS_CONF = """\
spark.master.rest.enabled false
"""


@dataclasses.dataclass
class SparkCluster:
    """A running standalone cluster; made by :func:`start_cluster`.

    Attributes:
        master_url: ``spark://127.0.0.1:PORT``.
        env: Variables a driver process needs on top of ``os.environ`` (master URL, Python,
            bind address, the workers' extra environment such as S3 settings).
        hidden: Folders the executors cannot see.
        root: The cluster's own folder (configuration, logs, worker and local dirs).
        start_seconds: How long the master and workers took to be ready.
    """

    master_url: str
    env: dict[str, str]
    hidden: tuple[Path, ...]
    root: Path
    start_seconds: float
    _master: Daemon
    _workers: list[Daemon]

    @property
    def worker_pids(self) -> list[int]:
        """The worker JVMs' process ids, in worker order."""
        return [worker.process.pid for worker in self._workers]

    def executor_pids(self, worker: int) -> list[int]:
        """Process ids of the executor JVMs running under worker ``worker`` (0-based)."""
        session = self._workers[worker].process.pid
        return [pid for pid in session_members(session) if EXECUTOR_CLASS in cmdline(pid)]

    def kill_executor(self, worker: int) -> int:
        """SIGKILL the executor JVM running under worker ``worker`` (0-based).

        Returns:
            The killed process id.

        Raises:
            LookupError: No executor runs under that worker now.
        """
        pids = self.executor_pids(worker)
        if not pids:
            raise LookupError(f"no executor runs under worker {worker}; start a driver first")
        os.kill(pids[0], signal.SIGKILL)
        return pids[0]

    def start_driver(
        self,
        args: list[str],
        cwd: str | Path,
        *,
        env: dict[str, str] | None = None,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) -> subprocess.Popen:
        """Start ``python ARGS`` as a driver of this cluster without waiting (fault tests).

        Args:
            args: Arguments after the interpreter, e.g. ``["-m", "deepspark", "train", ...]``.
            cwd: The driver's working folder (usually the test's ``tmp_path``).
            env: Extra variables, applied last.
            stdout: Where the driver's stdout goes (``subprocess.Popen``'s argument); a pipe
                by default; give a file when the caller does not read it while it runs.
            stderr: The same for stderr.

        Returns:
            The running process (text mode). It gets SIGTERM when the thread that started it
            exits, so start it from the test's own thread.
        """
        return subprocess.Popen(
            [sys.executable, *args],
            cwd=cwd,
            stdout=stdout,
            stderr=stderr,
            text=True,
            env={**os.environ, **self.env, **(env or {})},
            preexec_fn=die_with_parent,
        )

    def run_driver(
        self,
        args: list[str],
        cwd: str | Path,
        *,
        timeout: float = 300,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess:
        """Run ``python ARGS`` (a script, or ``-m deepspark ...``) as a driver of this cluster.

        Args:
            args: Arguments after the interpreter, e.g. ``["-m", "deepspark", "train", ...]``.
            cwd: The driver's working folder (usually the test's ``tmp_path``).
            timeout: Seconds before the driver is killed (``subprocess.TimeoutExpired``).
            env: Extra variables, applied last.

        Returns:
            The finished process, with text ``stdout`` and ``stderr``.
        """
        with self.start_driver(args, cwd, env=env) as process:
            try:
                stdout, stderr = process.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()
                raise
        return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)

    def logs(self) -> str:
        """The master's and workers' logs, for failure messages."""
        daemons = [self._master, *self._workers]
        return "\n".join(f"==== {d.name}\n{d.log_text()[-4000:]}" for d in daemons)

    def stop(self) -> None:
        """End every process the cluster started and remove its folder."""
        for daemon in [*self._workers, self._master]:
            end_session(daemon.process)
        shutil.rmtree(self.root, ignore_errors=True)


def start_cluster(
    *,
    hidden: list[str | Path] | tuple[str | Path, ...] = (),
    workers: int = 2,
    cores: int = 1,
    memory: str = "2g",
    extra_env: dict[str, str] | None = None,
    hidden_writable: bool = False,
    fast_jvm: bool = True,
    timeout: float = 120,
) -> SparkCluster:
    """Start a master and ``workers`` workers, each worker with ``hidden`` covered by a tmpfs.

    Args:
        hidden: Existing folders the executors must not see (the driver's working folders).
        workers: Number of workers; each gets its own mount namespace.
        cores: Cores each worker offers (one executor per worker per application).
        memory: Memory each worker offers to executors.
        extra_env: Variables for the workers, so for executors and their Python workers (S3
            endpoint and credentials); also given to drivers through ``SparkCluster.env``.
        hidden_writable: Mount the covering tmpfs read-write (writes then vanish with the
            worker, as on another host) instead of read-only (writes fail at once).
        fast_jvm: Start every JVM (daemons, executors, drivers through ``env``) with
            ``FAST_JVM_OPTIONS`` in ``JAVA_TOOL_OPTIONS``; each JVM then prints one
            "Picked up JAVA_TOOL_OPTIONS" line on stderr.
        timeout: Seconds to wait for the master and each worker to be ready.

    Returns:
        The running cluster; call ``stop()`` when done.

    Raises:
        ValueError: A hidden folder does not exist, or would hide the repository or the venv.
        RuntimeError: A daemon exited or was not ready in time (its log is in the message).
    """
    began = time.monotonic()
    hidden_folders = _check_hidden(hidden)
    extra_env = {**(extra_env or {}), **(_java_options() if fast_jvm else {})}
    root = Path(tempfile.mkdtemp(prefix="deepspark-cluster-"))
    daemon_env = _daemon_env(root, extra_env)
    started: list[Daemon] = []
    try:
        command = [str(SPARK_CLASS), MASTER_CLASS, *_bind_args()]
        master = start_daemon("master", command, root, daemon_env)
        started.append(master)
        found = wait_for_log(master, r"Starting Spark master at (spark://\S+)", timeout)
        wait_for_log(master, r"I have been elected leader", timeout)
        master_url = found.group(1)
        for index in range(workers):
            command = _worker_command(
                root / f"worker-{index}", master_url, hidden_folders, cores=cores, memory=memory,
                writable=hidden_writable,
            )  # fmt: skip
            started.append(start_daemon(f"worker-{index}", command, root, daemon_env))
        for worker in started[1:]:
            wait_for_log(worker, r"Successfully registered with master", timeout)
    except BaseException:
        for daemon in reversed(started):
            end_session(daemon.process)
        shutil.rmtree(root, ignore_errors=True)
        raise
    driver_env = {
        **extra_env,
        "DEEPSPARK_SPARK_MASTER": master_url,
        "SPARK_LOCAL_IP": "127.0.0.1",
        "PYSPARK_PYTHON": sys.executable,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    seconds = time.monotonic() - began
    return SparkCluster(
        master_url, driver_env, hidden_folders, root, seconds, started[0], started[1:]
    )


def _check_hidden(hidden) -> tuple[Path, ...]:
    folders = tuple(Path(folder).resolve() for folder in hidden)
    must_see = [REPO, Path(sys.prefix).resolve(), Path(tempfile.gettempdir()).resolve()]
    for folder in folders:
        if not folder.is_dir():
            raise ValueError(f"a hidden folder must exist; create it first. Received: {folder}")
        clash = [path for path in must_see if path == folder or folder in path.parents]
        if clash:
            raise ValueError(
                "a hidden folder must not contain the repository, the venv or the temp folder; "
                f"hide a narrower folder. Received: hidden={folder}"
            )
    return folders


def _java_options() -> dict[str, str]:
    options = " ".join(filter(None, [os.environ.get("JAVA_TOOL_OPTIONS"), FAST_JVM_OPTIONS]))
    return {"JAVA_TOOL_OPTIONS": options}


def _bind_args() -> list[str]:
    return ["--host", "127.0.0.1", "--port", "0", "--webui-port", "0"]


def _daemon_env(root: Path, extra_env: dict[str, str]) -> dict[str, str]:
    """Environment of the master and workers (and so of executors and Python workers)."""
    conf = root / "conf"
    conf.mkdir()
    (conf / "spark-defaults.conf").write_text(_DEFAULTS_CONF)
    base = {k: v for k, v in os.environ.items() if not k.startswith(_PRIVATE_PREFIXES)}
    return {
        **base,
        **extra_env,
        "SPARK_HOME": _spark_home(),
        "SPARK_CONF_DIR": str(conf),
        "SPARK_LOG_DIR": str(root / "logs"),
        "SPARK_PID_DIR": str(root / "pids"),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_DAEMON_MEMORY": "256m",
        "PYSPARK_PYTHON": sys.executable,
    }


def _spark_home() -> str:
    """The pip-installed pyspark package folder (found without importing pyspark)."""
    spec = importlib.util.find_spec("pyspark")
    if spec is None or spec.origin is None:
        raise RuntimeError("the cluster needs pyspark; install deepspark[spark]")
    return str(Path(spec.origin).parent)


def _worker_command(
    folder: Path,
    master_url: str,
    hidden: tuple[Path, ...],
    *,
    cores: int,
    memory: str,
    writable: bool,
) -> list[str]:
    """``unshare -m`` + a shell that covers ``hidden`` with a tmpfs, then execs the worker."""
    (folder / "work").mkdir(parents=True)
    (folder / "local").mkdir()
    options = "rw" if writable else "ro"
    mounts = [
        f"mount -t tmpfs -o {options},size=16m,mode=0755 deepspark-hidden {shlex.quote(str(path))}"
        for path in hidden
    ]
    worker = [
        str(SPARK_CLASS), WORKER_CLASS, *_bind_args(), "--cores", str(cores), "--memory", memory,
        "--work-dir", str(folder / "work"), master_url,
    ]  # fmt: skip
    script = " && ".join(
        [
            "set -e",
            *mounts,
            f"export SPARK_WORKER_DIR={shlex.quote(str(folder / 'work'))}",
            f"export SPARK_LOCAL_DIRS={shlex.quote(str(folder / 'local'))}",
            "exec " + shlex.join(worker),
        ]
    )
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]
