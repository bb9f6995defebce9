"""The spark launcher with Horovod's collectives (``horovod.spark.run``) on local[2]: the same
exactness as one process, and Ctrl-C still interrupts afterwards. Torch only (Horovod trains
Keras on torch)."""

import signal

import pytest

from deepspark.distributed import run
from tests.distributed.checks import assert_matches_single_process, torch_only
from tests.distributed.rank_functions import fit_on_shard

pytestmark = [pytest.mark.spark, pytest.mark.distributed, pytest.mark.slow]


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
