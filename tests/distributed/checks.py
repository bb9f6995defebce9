"""Assertions, markers and process lookups shared by the distributed tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deepspark._backend import backend_name
from tests.distributed.rank_functions import single_process_reference

# Horovod trains Keras on torch; its tests run in the torch parity set (`make test`).
torch_only = pytest.mark.skipif(
    backend_name() != "torch",
    reason="Horovod trains Keras on torch: runs in the torch parity set (KERAS_BACKEND=torch)",
)


def assert_matches_single_process(result: dict, *, world: int = 2) -> None:
    """Same weights and the same (global) metric history as one process on all the data; the
    last validation metrics equal those of the whole validation set."""
    assert result["world"] == world
    reference = single_process_reference()
    for got, expected in zip(result["weights"], reference["weights"], strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    for name, values in reference["history"].items():
        np.testing.assert_allclose(result["history"][name], values, rtol=1e-5, err_msg=name)
    for name, value in result["whole_val"].items():
        np.testing.assert_allclose(result["history"][f"val_{name}"][-1], value, rtol=1e-5)


def worker_pids(driver: int) -> dict[int, int]:
    """rank -> pid of the worker processes that the launcher in process ``driver`` started:
    forked by its zygote (named ``deepspark-rankN``, a grandchild) or spawned (a child running
    ``deepspark.distributed._entry`` with ``RANK`` in its environment)."""
    parents, found = {}, {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            name = (proc / "comm").read_text().strip()
            parents[int(proc.name)] = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (proc / "cmdline").read_bytes()
            environ = (proc / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if name.startswith("deepspark-rank"):
            found[int(proc.name)] = int(name.removeprefix("deepspark-rank"))
        elif b"deepspark.distributed._entry" in command:
            ranks = [int(item[5:]) for item in environ if item.startswith(b"RANK=")]
            found[int(proc.name)] = ranks[0] if ranks else -1
    mine = {}
    for pid, rank in found.items():
        ancestor = parents.get(pid)
        for _ in range(2):
            if ancestor == driver:
                mine[rank] = pid
                break
            ancestor = parents.get(ancestor)
    return mine
