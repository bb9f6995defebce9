"""The local launcher forks its workers from a zygote that imported Keras and deepspark once
(``distributed/_zygote.py``): each rank is still its own process with the launch's environment,
working directory and output, the zygote is reused by later launches, a killed worker is lost
(and retried) as before, and ``DEEPSPARK_WORKER_PRELOAD=0`` spawns fresh interpreters."""

import json
import os
import signal
import sys
from pathlib import Path

import cloudpickle
import pytest

from deepspark.distributed import rank, run
from deepspark.distributed.launch import WorkerLostError

pytestmark = [pytest.mark.distributed, pytest.mark.parity]

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/


def describe_rank(tag):
    """Each rank writes what it is to ``rank-N.json`` in its working directory."""
    me = {
        "pid": os.getpid(),
        "parent": os.getppid(),
        "name": Path("/proc/self/comm").read_text().strip(),
        "cwd": os.getcwd(),
        "tag": os.environ.get("DEEPSPARK_TEST_TAG"),
        "keras_loaded_before_job": tag,
    }
    print(f"rank {rank()} says hello on stdout")
    Path(f"rank-{rank()}.json").write_text(json.dumps(me))
    return me


def kill_rank_one():
    if rank() == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return "rank 0 done"


def ranks(folder: Path) -> list[dict]:
    return [json.loads((folder / f"rank-{r}.json").read_text()) for r in (0, 1)]


def test_forked_workers_are_separate_processes_with_the_launch_s_environment(
    tmp_path, monkeypatch, capfd
):
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir(), second.mkdir()
    monkeypatch.chdir(first)
    monkeypatch.setenv("DEEPSPARK_TEST_TAG", "one")
    run(describe_rank, ("a",), workers=2, launcher="local")
    # Set after the zygote started: the environment travels with each launch.
    monkeypatch.chdir(second)
    monkeypatch.setenv("DEEPSPARK_TEST_TAG", "two")
    run(describe_rank, ("b",), workers=2, launcher="local")
    one, two = ranks(first), ranks(second)
    assert [r["name"] for r in one + two] == ["deepspark-rank0", "deepspark-rank1"] * 2
    assert {r["tag"] for r in one} == {"one"} and {r["tag"] for r in two} == {"two"}
    assert {r["cwd"] for r in one} == {str(first)} and {r["cwd"] for r in two} == {str(second)}
    pids = {r["pid"] for r in one + two}
    assert len(pids) == 4 and os.getpid() not in pids
    zygotes = {r["parent"] for r in one + two}
    assert len(zygotes) == 1 and os.getpid() not in zygotes  # one zygote, reused
    # Workers' stdout goes to the driver's stderr (the CLI's stdout is one JSON document).
    assert "rank 1 says hello on stdout" in capfd.readouterr().err


def test_a_killed_forked_worker_is_lost_and_fresh_interpreters_remain_an_option(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(WorkerLostError, match="worker 1 exited -9"):
        run(kill_rank_one, workers=2, launcher="local")
    monkeypatch.setenv("DEEPSPARK_WORKER_PRELOAD", "0")
    run(describe_rank, ("c",), workers=2, launcher="local")
    spawned = ranks(tmp_path)
    assert {r["parent"] for r in spawned} == {os.getpid()}  # children of the launcher itself
    assert {r["name"] for r in spawned} == {"python"}
