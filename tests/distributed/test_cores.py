"""Each worker runs on its share of the host's cores (XLA and torch size their thread pools to
the cores a process may use; unpinned workers oversubscribe a shared host)."""

import json
import os

import pytest

from deepspark.distributed import run
from deepspark.distributed.cores import pinning_settings, worker_cores
from tests.distributed import rank_functions


def test_shares_are_disjoint_and_cover_the_host(monkeypatch):
    monkeypatch.delenv("DEEPSPARK_CORES_PER_WORKER", raising=False)
    available = sorted(os.sched_getaffinity(0))
    shares = [worker_cores(rank, len(available)) for rank in range(len(available))]
    assert sorted(core for share in shares for core in share) == available
    assert worker_cores(0, 1) == available
    assert worker_cores(0, 4, per_worker=1) == available[:1]
    monkeypatch.setenv("DEEPSPARK_PIN_CORES", "0")
    assert pinning_settings(0, 2) == {}


@pytest.mark.distributed
def test_local_workers_are_pinned_to_their_own_cores(tmp_path, monkeypatch):
    monkeypatch.delenv("DEEPSPARK_CORES_PER_WORKER", raising=False)
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        pytest.skip("needs at least 2 cores to give each worker its own")
    run(rank_functions.report_cores, (str(tmp_path),), workers=2, launcher="local")
    reports = [json.loads((tmp_path / f"rank-{rank}.json").read_text()) for rank in (0, 1)]
    share = len(available) // 2
    assert [len(report["cores"]) for report in reports] == [share, share]
    assert not set(reports[0]["cores"]) & set(reports[1]["cores"])
    assert reports[0]["omp"] == str(share)


def test_pinning_after_start_reaches_threads_already_running(monkeypatch):
    import threading

    from deepspark.distributed.cores import WORKER_CORES_ENV, pin_this_process

    kept = os.sched_getaffinity(0)
    seen, go = {}, threading.Event()

    def worker():
        go.wait()
        seen["cores"] = os.sched_getaffinity(0)

    thread = threading.Thread(target=worker)
    thread.start()  # a pool thread started before the pinning
    first = min(kept)
    monkeypatch.setenv(WORKER_CORES_ENV, str(first))
    try:
        pin_this_process(all_threads=True)
        go.set()
        thread.join()
        assert seen["cores"] == {first}
        assert os.sched_getaffinity(0) == {first}
    finally:
        for task in os.listdir("/proc/self/task"):
            os.sched_setaffinity(int(task), kept)
