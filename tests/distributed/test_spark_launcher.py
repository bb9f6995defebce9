"""The spark launcher: ranks as Spark barrier tasks (on JAX one worker process per task; on torch
TorchDistributor), on local[2] with the same exactness as the local launcher. Horovod's
collectives (horovod.spark.run) are in test_horovod_spark.py, a file of its own so that the
torch parity set runs the two slowest Spark launches side by side. On the multi-host cluster
(executors that cannot see the driver's folders) the launcher trains through `deepspark train
--launcher spark` in tests/cluster/test_cluster.py."""

import pytest

from deepspark.distributed import run
from tests.distributed.checks import assert_matches_single_process
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
