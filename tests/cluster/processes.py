"""Daemons started in sessions of their own, waited for through their logs, and ended with
everything they started (found by session id, which survives ``setpgid`` and reparenting)."""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import time
from pathlib import Path

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


@dataclasses.dataclass
class Daemon:
    """One started daemon (a Spark master or worker): its process (and session) and log."""

    name: str
    process: subprocess.Popen
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def start_daemon(name: str, command: list[str], root: Path, env: dict[str, str]) -> Daemon:
    """Start ``command`` in a new session, output to ``root/logs/NAME.log``, dying with us."""
    log = root / "logs" / f"{name}.log"
    log.parent.mkdir(exist_ok=True)
    with log.open("wb") as handle:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=root,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
    return Daemon(name, process, log)


def die_with_parent() -> None:
    """In the child before exec: SIGTERM when the test process dies, even by SIGKILL, so a killed
    test session leaves no JVMs behind (the worker's shutdown hook then ends its executors)."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def wait_for_log(daemon: Daemon, pattern: str, timeout: float) -> re.Match:
    """Wait until ``pattern`` appears in the daemon's log; fail early if the daemon exits."""
    deadline = time.monotonic() + timeout
    while True:
        found = re.search(pattern, daemon.log_text())
        if found:
            return found
        if daemon.process.poll() is not None:
            raise RuntimeError(
                f"Spark {daemon.name} exited with {daemon.process.returncode} before "
                f"logging {pattern!r}:\n{daemon.log_text()[-4000:]}"
            )
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"Spark {daemon.name} did not log {pattern!r} within {timeout} s:\n"
                f"{daemon.log_text()[-4000:]}"
            )
        time.sleep(0.1)


def session_members(session: int) -> list[int]:
    """Process ids whose session id is ``session`` (survives setpgid and reparenting)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[3]) == session and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def cmdline(pid: int) -> str:
    """A process's command line joined by spaces ("" once it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def end_session(process: subprocess.Popen, *, grace: float = 10) -> None:
    """SIGTERM every process of the daemon's session, then SIGKILL whatever is left."""
    session = process.pid
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in session_members(session):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            process.poll()
            if not session_members(session):
                return
            time.sleep(0.1)
