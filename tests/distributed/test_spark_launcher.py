"""The spark launcher: ranks as Spark barrier tasks (on JAX one worker process per task; on torch
TorchDistributor, or horovod.spark.run with Horovod collectives), on local[2] with the same
exactness as the local launcher. On the multi-host cluster (separate executors that cannot see
the driver's folders) the launcher trains through `deepspark train --launcher spark` in
tests/cluster/test_cluster.py."""

import signal

import pytest

from deepspark.distributed import run
from tests.distributed.checks import assert_matches_single_process, torch_only
from tests.distributed.rank_functions import fit_on_shard

pytestmark = [pytest.mark.spark, pytest.mark.distributed, pytest.mark.slow]


@pytest.mark.parity
def test_spark_launcher_on_local_master(spark, workdir):
    import keras

    result = run(fit_on_shard, workers=2, launcher="spark")
    assert_matches_single_process(result)
    if keras.backend.backend() == "jax":
        # Forked from the Python worker that deepspark's daemon preloaded, not a fresh
        # interpreter (`python`): a rank starts without importing Keras again.
        assert result["process"] == "deepspark-rank0"


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
