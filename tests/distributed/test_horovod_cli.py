"""``deepspark train --launcher horovod`` from the command line, as DL 06 runs it (issue 20).

It used to hang before the first batch: ranks 1..N broadcast ``None`` and rank 0 a tuple, and
Horovod's ``broadcast_object`` names its tensors after the value's type, so the ranks waited for
each other's names forever. The exactness tests call ``run`` with their own function and never
took this path. Here: the real CLI, horovodrun, the real fit loop and a real MLflow store, with
the watchdog short so a hang fails with its one line instead of the test timing out.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import make_table
from tests.distributed.checks import torch_only

pytestmark = [
    pytest.mark.parity,
    pytest.mark.horovod,
    pytest.mark.distributed,
    pytest.mark.slow,
    torch_only,
]


def test_train_with_the_horovod_launcher_from_the_cli(workdir):
    pytest.importorskip("horovod.torch", reason="Horovod is not built; run `make horovod`")
    data = workdir / "houses.csv"
    make_table(rows=120).to_csv(data, index=False)
    command = [sys.executable, "-m", "deepspark", "train", "--data", str(data), "--target", "y"]
    command += ["--hidden", "8", "--epochs", "2", "--batch-size", "16", "--workers", "2"]
    command += ["--launcher", "horovod", "--json"]
    environment = {**os.environ, "KERAS_BACKEND": "torch", "DEEPSPARK_WATCHDOG": "60"}
    done = subprocess.run(
        command,
        cwd=workdir,
        env=environment,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["epochs_completed"] == 2
    assert result["world_size"] == 2
    for rank in (0, 1):
        assert f"rank {rank} connected (2 ranks" in done.stderr, done.stderr[-3000:]
        assert f"rank {rank}: first batch done" in done.stderr
        assert f"rank {rank}: epoch 2/2 " in done.stderr
