"""The spark launcher: ranks as Spark barrier tasks (on JAX one worker process per task; on torch
TorchDistributor, or horovod.spark.run with Horovod collectives), on local[2] and on a
local-cluster (separate executor JVMs), with the same exactness as the local launcher."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from deepspark.distributed import run
from tests.conftest import REPO
from tests.distributed.checks import assert_matches_single_process, torch_only
from tests.distributed.rank_functions import fit_on_shard

pytestmark = [pytest.mark.spark, pytest.mark.distributed, pytest.mark.slow]


@pytest.mark.parity
def test_spark_launcher_on_local_master(spark, workdir):
    result = run(fit_on_shard, workers=2, launcher="spark")
    assert_matches_single_process(result)


@pytest.mark.parity
@pytest.mark.horovod
@torch_only
def test_horovod_spark_run_on_local_master(spark, workdir):
    pytest.importorskip("horovod.spark", reason="Horovod is not built; run `make horovod`")
    handlers = [signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)]
    result = run(fit_on_shard, workers=2, launcher="spark", collectives="horovod")
    assert_matches_single_process(result)
    # horovod.spark.run leaves its own handlers behind; Ctrl-C must still interrupt afterwards
    assert [signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)] == handlers


def test_spark_launcher_on_local_cluster(workdir):
    """One SparkContext per process: the local-cluster session lives in a child process."""
    script = textwrap.dedent(
        """
        from deepspark.distributed import run
        from deepspark.spark.session import get_session
        from tests.distributed.checks import assert_matches_single_process
        from tests.distributed.rank_functions import fit_on_shard

        spark = get_session("local-cluster[2,1,1024]")
        try:
            assert_matches_single_process(run(fit_on_shard, workers=2, launcher="spark"))
        finally:
            spark.stop()
        print("local-cluster ok")
        """
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "SPARK_WORKER_DIR": str(workdir / "spark-work"),
    }
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "local-cluster ok" in done.stdout
