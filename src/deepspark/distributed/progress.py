"""Per-rank progress and the two timeouts that turn a silent hang into one line naming the rank.

Every launcher starts a ``ProgressMonitor`` (a small TCP server on the driver) and tells its
workers where it is (``PROGRESS_ENV``, or an argument of ``run_packed``). Each rank reports, best
effort (a rank that cannot reach the driver trains on unheard):

- ``started``: the worker process runs (with the rendezvous address it will join);
- ``connected``: it joined the process group;
- ``first batch`` and each ``epoch`` (``progress_callback`` in the fit loop), and a heartbeat
  at most every ``HEARTBEAT_S`` seconds of batches;
- ``done``: its function returned.

The driver logs the first three kinds and each epoch per rank on stderr, and ``failure()`` says
why a job must stop:

- **startup timeout** (``--startup-timeout`` / ``STARTUP_TIMEOUT_ENV``, default 300 s): some
  rank has not connected that long after the launch: "rank 1 never connected to HOST:PORT
  within 300 s: ...", or "never started" when its process never ran;
- **watchdog** (``--watchdog`` / ``WATCHDOG_ENV``; off for ``run``, ``DEFAULT_TRAIN_WATCHDOG_S``
  for ``deepspark.train``): a connected rank reported nothing (no batch) for that long.

The launchers stop the workers and raise ``WorkerTimeoutError`` (not retried: starting again
would wait again).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import socketserver
import threading
import time
from typing import Any

from deepspark.errors import UserInputError

logger = logging.getLogger("deepspark.distributed")

PROGRESS_ENV = "DEEPSPARK_PROGRESS"  # host:port of the driver's ProgressMonitor
STARTUP_TIMEOUT_ENV = "DEEPSPARK_STARTUP_TIMEOUT"
WATCHDOG_ENV = "DEEPSPARK_WATCHDOG"
# Test-only: "RANK" or "RANK:SECONDS" makes that rank sleep before it starts (default 3600 s).
STALL_ENV = "DEEPSPARK_TEST_STALL_RANK"
DEFAULT_STARTUP_TIMEOUT_S = 300.0
DEFAULT_TRAIN_WATCHDOG_S = 1800.0
HEARTBEAT_S = 2.0
_CONNECT_TIMEOUT_S = 2.0


def timeout_seconds(value: float | None, *, env: str, default: float, name: str) -> float:
    """``value``, else the ``env`` variable, else ``default``; 0 means off.

    Raises:
        UserInputError: For a negative or non-numeric value.
    """
    raw = value if value is not None else os.environ.get(env) or default
    try:
        seconds = float(raw)
    except (TypeError, ValueError):
        seconds = -1.0
    if seconds < 0:
        raise UserInputError(
            f"{name} must be a number of seconds >= 0 (0: off; also settable as ${env}). "
            f"Received: {name}={raw!r}"
        )
    return seconds


def startup_timeout(value: float | None = None) -> float:
    """The startup timeout in seconds (``value``, ``$DEEPSPARK_STARTUP_TIMEOUT`` or 300)."""
    return timeout_seconds(
        value, env=STARTUP_TIMEOUT_ENV, default=DEFAULT_STARTUP_TIMEOUT_S, name="startup_timeout"
    )


def watchdog_seconds(value: float | None = None, *, default: float = 0.0) -> float:
    """The watchdog in seconds (``value``, ``$DEEPSPARK_WATCHDOG`` or ``default``; 0: off)."""
    return timeout_seconds(value, env=WATCHDOG_ENV, default=default, name="watchdog")


class _RankState:
    def __init__(self):
        self.started: float | None = None
        self.connected: float | None = None
        self.done = False
        self.last_seen: float | None = None
        self.last_event = "nothing"
        self.rendezvous: str | None = None


class ProgressMonitor:
    """The driver's side: receives the ranks' reports, logs them, and judges the timeouts.

    Args:
        workers: Number of ranks.
        startup_timeout: Seconds from ``start`` until every rank must have connected (0: off).
        watchdog: Seconds a connected rank may report nothing (0: off).
        bind: Address to listen on (``0.0.0.0`` when ranks run on other hosts).
        advertise: The host the ranks connect to (default: ``bind``).
        rendezvous: Where ranks meet, for the messages, until a rank reports its own.
    """

    def __init__(
        self,
        workers: int,
        *,
        startup_timeout: float,
        watchdog: float,
        bind: str = "127.0.0.1",
        advertise: str | None = None,
        rendezvous: str | None = None,
    ):
        self.workers = int(workers)
        self.startup_timeout = float(startup_timeout)
        self.watchdog = float(watchdog)
        self.rendezvous = rendezvous
        self.verdict: str | None = None  # the failure a launcher acted on, once it did
        self._advertise = advertise or bind
        self._ranks = {rank: _RankState() for rank in range(self.workers)}
        self._lock = threading.Lock()
        self._started_at = time.monotonic()
        self._server = _Server((bind, 0), _Handler)
        self._server.monitor = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="deepspark-progress", daemon=True
        )

    @property
    def address(self) -> str:
        """``host:port`` for ``PROGRESS_ENV``."""
        return f"{self._advertise}:{self._server.server_address[1]}"

    def __enter__(self) -> ProgressMonitor:
        self._started_at = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._server.shutdown()
        self._server.server_close()

    def receive(self, message: dict[str, Any]) -> None:
        """One report of a rank (see the module docstring)."""
        try:
            rank = int(message["rank"])
        except (KeyError, TypeError, ValueError):
            return
        state = self._ranks.get(rank)
        if state is None:
            return
        event, now = message.get("event"), time.monotonic()
        with self._lock:
            state.last_seen = now
            if event == "started":
                state.started = now
                state.rendezvous = message.get("rendezvous") or state.rendezvous
            elif event == "connected":
                state.started = state.started or now
                state.connected = now
            elif event == "done":
                state.done = True
            if event != "heartbeat":
                state.last_event = _describe(message)
        self._log(rank, event, message, now)

    def _log(self, rank: int, event: str | None, message: dict, now: float) -> None:
        after = f"{now - self._started_at:.1f} s after launch"
        if event == "connected":
            logger.info("rank %d connected (%s ranks, %s)", rank, message.get("size", "?"), after)
        elif event == "first_batch":
            logger.info("rank %d: first batch done (%s)", rank, after)
        elif event == "epoch":
            logger.info("rank %d: %s done (%s)", rank, _describe(message), after)
        elif event == "started":
            logger.debug("rank %d started (%s)", rank, after)

    def failure(self) -> str | None:
        """Why the job must stop now (one line naming the ranks), or ``None``."""
        now = time.monotonic()
        with self._lock:
            if self.startup_timeout and now - self._started_at > self.startup_timeout:
                message = self._startup_failure()
                if message:
                    return message
            if self.watchdog:
                return self._watchdog_failure(now)
        return None

    def _startup_failure(self) -> str | None:
        waiting = [rank for rank, state in self._ranks.items() if state.connected is None]
        if not waiting:
            return None
        seconds = f"{self.startup_timeout:g} s"
        never_started = [rank for rank in waiting if self._ranks[rank].started is None]
        if never_started:
            return (
                f"{_ranks(never_started)} never started within {seconds}: fewer free slots "
                "(cores, Spark task slots, GPUs) than workers, or a worker process that cannot "
                "start; free slots, lower --workers or raise --startup-timeout. "
                f"Received: workers={self.workers}, startup_timeout={self.startup_timeout:g}"
            )
        rendezvous = self._rendezvous(waiting) or "the rendezvous"
        return (
            f"{_ranks(waiting)} never connected to {rendezvous} within {seconds}: a firewall "
            "between executors, or fewer free slots than workers (a peer that never came). "
            f"Received: workers={self.workers}, startup_timeout={self.startup_timeout:g}"
        )

    def _watchdog_failure(self, now: float) -> str | None:
        stalled = [
            rank
            for rank, state in self._ranks.items()
            if state.connected is not None
            and not state.done
            and now - (state.last_seen or state.connected) > self.watchdog
        ]
        if not stalled:
            return None
        last = "; ".join(f"rank {rank}: {self._ranks[rank].last_event}" for rank in stalled)
        return (
            f"{_ranks(stalled)} made no progress for {self.watchdog:g} s (last: {last}): a rank "
            "stuck in a collective (a peer that died, or ranks that disagree on what to "
            "exchange), or a batch slower than --watchdog; raise --watchdog or set it to 0 "
            f"to turn it off. Received: watchdog={self.watchdog:g}"
        )

    def _rendezvous(self, ranks: list[int]) -> str | None:
        for rank in ranks:
            if self._ranks[rank].rendezvous:
                return self._ranks[rank].rendezvous
        return next(
            (state.rendezvous for state in self._ranks.values() if state.rendezvous),
            self.rendezvous,
        )


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    monitor: ProgressMonitor


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        for line in self.rfile:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if isinstance(message, dict):
                self.server.monitor.receive(message)


def _ranks(ranks: list[int]) -> str:
    if len(ranks) == 1:
        return f"rank {ranks[0]}"
    return "ranks " + ", ".join(str(rank) for rank in ranks)


def _describe(message: dict) -> str:
    event = message.get("event")
    if event == "epoch":
        logs = message.get("logs") or {}
        figures = " ".join(f"{name}={value:.4g}" for name, value in sorted(logs.items()))
        epochs = f"/{message['epochs']}" if message.get("epochs") else ""
        return f"epoch {message.get('epoch')}{epochs}" + (f" {figures}" if figures else "")
    if event == "first_batch":
        return "first batch"
    return str(event)


# ---- the ranks' side --------------------------------------------------------------------------


class _Reporter:
    """One connection per worker process to the driver's monitor; silent when unreachable."""

    def __init__(self):
        self.address: str | None = None
        self.rank: int | None = None
        self._socket: socket.socket | None = None
        self._broken = False
        self._lock = threading.Lock()

    def send(self, event: str, **fields: Any) -> None:
        address = self.address or os.environ.get(PROGRESS_ENV)
        rank = self.rank if self.rank is not None else _rank_from_env()
        if not address or rank is None or self._broken:
            return
        line = json.dumps({"rank": rank, "event": event, **fields}, default=str) + "\n"
        with self._lock:
            try:
                if self._socket is None:
                    host, port = address.rsplit(":", 1)
                    self._socket = socket.create_connection(
                        (host, int(port)), timeout=_CONNECT_TIMEOUT_S
                    )
                self._socket.sendall(line.encode())
            except OSError as error:
                self._broken = True  # one try: training must not wait on its reports
                logger.debug("progress reports to %s are off: %s", address, error)


_reporter = _Reporter()


def _rank_from_env() -> int | None:
    for name in ("RANK", "HOROVOD_RANK", "OMPI_COMM_WORLD_RANK"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return None


def _rendezvous_from_env() -> str | None:
    pairs = (
        ("MASTER_ADDR", "MASTER_PORT"),
        ("HOROVOD_GLOO_RENDEZVOUS_ADDR", "HOROVOD_GLOO_RENDEZVOUS_PORT"),
    )
    for host, port in pairs:
        if os.environ.get(host) and os.environ.get(port):
            return f"{os.environ[host]}:{os.environ[port]}"
    return None


def report_started(address: str | None = None) -> None:
    """In a worker, first thing: this process runs (after a test-only stall, ``STALL_ENV``)."""
    if address:
        _reporter.address = address
    _stall_if_asked()
    _reporter.send("started", rendezvous=_rendezvous_from_env(), pid=os.getpid())


def report_connected(rank: int, size: int) -> None:
    """In a worker: it joined the process group as ``rank`` of ``size``."""
    _reporter.rank = rank
    _reporter.send("connected", size=size)


def report(event: str, **fields: Any) -> None:
    """In a worker: any other report (``first_batch``, ``epoch``, ``heartbeat``, ``done``)."""
    _reporter.send(event, **fields)


def _stall_if_asked() -> None:
    asked = os.environ.get(STALL_ENV)
    if not asked:
        return
    rank, _, seconds = asked.partition(":")
    if str(_rank_from_env()) == rank:
        time.sleep(float(seconds or 3600))


def progress_callback(epochs: int | None = None):
    """A Keras callback that reports this rank's first batch, a heartbeat every ``HEARTBEAT_S``
    seconds of batches (what the watchdog watches) and each epoch's figures to the driver."""
    from deepspark._backend import import_keras

    keras = import_keras()

    class ProgressReporter(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self._first = True
            self._last = 0.0

        def on_test_batch_end(self, batch, logs=None):
            if time.monotonic() - self._last >= HEARTBEAT_S:
                report("heartbeat")
                self._last = time.monotonic()

        def on_train_batch_end(self, batch, logs=None):
            now = time.monotonic()
            if self._first:
                self._first = False
                report("first_batch")
            elif now - self._last >= HEARTBEAT_S:
                report("heartbeat")
            else:
                return
            self._last = now

        def on_epoch_end(self, epoch, logs=None):
            figures = {}
            for name, value in (logs or {}).items():
                try:
                    figures[name] = float(value)
                except (TypeError, ValueError):
                    continue
            report("epoch", epoch=epoch + 1, epochs=epochs, logs=figures)
            self._last = time.monotonic()

    return ProgressReporter()
