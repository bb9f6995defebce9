"""Data-parallel training is exact: 2 workers with plain SGD, no shuffling and the same global
batch end with the weights of 1 process, and report the metrics of the whole validation set
(shards of different sizes).

On the default backend (JAX: jax.distributed and Keras' data-parallel distribution, every step
one SPMD program over the global batch) and, in the torch parity set, on torch.distributed
(gradients averaged by ``DistributedOptimizer``, metric sums and counts reduced) and Horovod.
"""

import pytest

from deepspark.distributed import run
from tests.distributed.checks import assert_matches_single_process, torch_only
from tests.distributed.rank_functions import fit_on_shard

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


@pytest.mark.parity
def test_two_workers_equal_one(workdir):
    result = run(fit_on_shard, workers=2, launcher="local")
    assert result["optimizer_class"] == "SGD"
    assert_matches_single_process(result)


@pytest.mark.parity
@pytest.mark.horovod
@torch_only
def test_horovod_two_workers_equal_one(workdir):
    pytest.importorskip("horovod.torch", reason="Horovod is not built; run `make horovod`")
    result = run(fit_on_shard, workers=2, launcher="horovod")
    assert_matches_single_process(result)
