"""Distributed feedback (issue 20, item 7): each rank's progress on stderr, and one line naming
the rank and the likely cause, instead of a silent hang, when ranks never start or connect
(startup timeout) or stop making progress (watchdog).

Real worker processes on the local launcher (a rank held back by the test-only
``DEEPSPARK_TEST_STALL_RANK`` hook), a real ``deepspark.train`` on 2 workers, and the driver's
``ProgressMonitor`` fed real reports over its socket.
"""

from __future__ import annotations

import logging
import socket
import sys
import time

import cloudpickle
import pytest

from deepspark.distributed import WorkerTimeoutError, run
from deepspark.distributed.progress import STALL_ENV, ProgressMonitor, startup_timeout
from deepspark.errors import UserInputError

cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = [pytest.mark.distributed]


def rank_one_hangs_before_its_first_batch() -> int:
    """Rank 0 returns at once; rank 1 joins the group and then reports nothing."""
    from deepspark.distributed import rank

    if rank() == 1:
        time.sleep(600)
    return rank()


def rank_one_stops_after_one_epoch() -> int:
    """Both ranks report like deepspark's fit loop (``progress_callback``) does; rank 1 stops
    reporting after its first epoch, as a rank stuck in a collective would."""
    from deepspark.distributed import rank
    from deepspark.distributed.progress import report

    report("first_batch")
    report("epoch", epoch=1, epochs=2, logs={"loss": 0.5})
    if rank() == 1:
        time.sleep(600)
    report("epoch", epoch=2, epochs=2, logs={"loss": 0.25})
    return rank()


def send(address: str, *messages: dict) -> None:
    import json

    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port))) as connection:
        connection.sendall("".join(json.dumps(m) + "\n" for m in messages).encode())


def wait_for(condition, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.mark.slow
def test_a_rank_that_never_starts_fails_the_launch_naming_it(monkeypatch):
    monkeypatch.setenv(STALL_ENV, "1")
    started = time.monotonic()
    # Rank 0 is named too only when it took all 10 s to start (a very busy machine).
    never_started = r"^ranks? (0, )?1 never started within 10 s: fewer free slots"
    with pytest.raises(WorkerTimeoutError, match=never_started):
        run(rank_one_hangs_before_its_first_batch, workers=2, startup_timeout=10)
    assert time.monotonic() - started < 40


@pytest.mark.slow
def test_ranks_report_progress_and_the_watchdog_names_a_rank_that_stops(caplog):
    with caplog.at_level(logging.INFO, logger="deepspark.distributed"):
        with pytest.raises(
            WorkerTimeoutError,
            match=r"^rank 1 made no progress for 3 s \(last: rank 1: epoch 1/2 loss=[0-9.e-]+\)",
        ):
            run(rank_one_stops_after_one_epoch, workers=2, watchdog=3)
    lines = [record.getMessage() for record in caplog.records]
    for rank in (0, 1):
        assert any(line.startswith(f"rank {rank} connected (2 ranks, ") for line in lines), lines
        assert any(line.startswith(f"rank {rank}: first batch done (") for line in lines), lines
        assert any(line.startswith(f"rank {rank}: epoch 1/2 loss=") for line in lines), lines
    assert any(line.startswith("rank 0: epoch 2/2 loss=") for line in lines), lines


def test_monitor_names_the_rendezvous_ranks_never_reached():
    with ProgressMonitor(2, startup_timeout=0.5, watchdog=0) as monitor:
        send(
            monitor.address,
            {"rank": 0, "event": "started", "rendezvous": "10.0.0.5:29500"},
            {"rank": 1, "event": "started", "rendezvous": "10.0.0.5:29500"},
            {"rank": 0, "event": "connected", "size": 2},
        )
        wait_for(lambda: monitor._ranks[0].connected is not None)
        assert monitor.failure() is None  # within the startup timeout
        time.sleep(0.6)
        assert monitor.failure() == (
            "rank 1 never connected to 10.0.0.5:29500 within 0.5 s: a firewall between "
            "executors, or fewer free slots than workers (a peer that never came). "
            "Received: workers=2, startup_timeout=0.5"
        )


def test_monitor_watchdog_counts_from_the_last_report():
    with ProgressMonitor(2, startup_timeout=0, watchdog=0.5) as monitor:
        send(
            monitor.address,
            {"rank": 0, "event": "connected", "size": 2},
            {"rank": 1, "event": "connected", "size": 2},
            {"rank": 1, "event": "done"},
            {"rank": 0, "event": "epoch", "epoch": 2, "epochs": 8, "logs": {"loss": 0.25}},
        )
        wait_for(lambda: monitor._ranks[0].last_event.startswith("epoch"))
        time.sleep(0.6)
        message = monitor.failure()
    assert message.startswith(
        "rank 0 made no progress for 0.5 s (last: rank 0: epoch 2/8 loss=0.25): a rank stuck"
    )


def test_startup_timeout_comes_from_the_environment_and_is_checked(monkeypatch):
    assert startup_timeout() == 300
    monkeypatch.setenv("DEEPSPARK_STARTUP_TIMEOUT", "12.5")
    assert startup_timeout() == 12.5
    assert startup_timeout(0) == 0
    with pytest.raises(UserInputError, match=r"Received: startup_timeout='soon'"):
        startup_timeout("soon")


def test_the_fit_loop_callback_reports_first_batch_heartbeats_and_epochs(monkeypatch, caplog):
    import keras
    import numpy as np

    from deepspark.distributed import progress

    monkeypatch.setattr(progress, "_reporter", progress._Reporter())
    monkeypatch.setenv("RANK", "0")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    rows = np.ones((32, 3), dtype="float32")
    with caplog.at_level(logging.INFO, logger="deepspark.distributed"):
        with ProgressMonitor(1, startup_timeout=0, watchdog=60) as monitor:
            monkeypatch.setenv(progress.PROGRESS_ENV, monitor.address)
            progress.report_connected(0, 1)
            callback = progress.progress_callback(epochs=2)
            model.fit(rows, rows[:, :1], epochs=2, batch_size=8, verbose=0, callbacks=[callback])
            wait_for(lambda: monitor._ranks[0].last_event.startswith("epoch 2"))
            assert monitor.failure() is None
    lines = [record.getMessage() for record in caplog.records]
    assert lines[0].startswith("rank 0 connected (1 ranks, ")
    assert lines[1].startswith("rank 0: first batch done (")
    assert lines[2].startswith("rank 0: epoch 1/2 loss=")
    assert lines[3].startswith("rank 0: epoch 2/2 loss=")
