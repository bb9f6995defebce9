"""Data-parallel training is exact: 2 workers with plain SGD, no shuffling and the same global
batch end with the weights of 1 process, and report the metrics of the whole validation set
(shards of different sizes).

On the default backend, JAX, in both of its modes: host collectives (CPU's default: one
allreduce of all gradients per step, metric sums and counts reduced) and SPMD (jax.distributed and
Keras' data-parallel distribution, every step one SPMD program over the global batch); in the
torch parity set, on torch.distributed (gradients averaged by ``DistributedOptimizer``, metric
sums and counts reduced) and Horovod.
"""

import pytest

from deepspark._backend import backend_name
from deepspark.distributed import run
from deepspark.distributed._jax import MODE_ENV
from tests.distributed.checks import assert_matches_single_process, torch_only
from tests.distributed.rank_functions import fit_on_shard, fit_with_nan_on_rank_one

jax_only = pytest.mark.skipif(backend_name() != "jax", reason="JAX's own collective modes")

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


@pytest.mark.parity
def test_two_workers_equal_one(workdir):
    result = run(fit_on_shard, workers=2, launcher="local")
    assert result["optimizer_class"] == "SGD"
    assert result["mode"] == ("host" if backend_name() == "jax" else None)
    assert_matches_single_process(result)


@jax_only
def test_two_workers_equal_one_in_spmd_mode(workdir, monkeypatch):
    monkeypatch.setenv(MODE_ENV, "spmd")
    result = run(fit_on_shard, workers=2, launcher="local")
    assert result["mode"] == "spmd"
    assert_matches_single_process(result)


@pytest.mark.parity
def test_a_nan_on_one_rank_stops_every_rank_at_that_step(workdir, monkeypatch):
    monkeypatch.setenv("DEEPSPARK_DIST_TIMEOUT", "60")  # a rank left waiting fails, not hangs
    result = run(fit_with_nan_on_rank_one, workers=2, launcher="local")
    assert result["failed_at"] == (0, 1)
    assert result["iterations"] == 2


@pytest.mark.parity
@pytest.mark.horovod
@torch_only
def test_horovod_two_workers_equal_one(workdir):
    pytest.importorskip("horovod.torch", reason="Horovod is not built; run `make horovod`")
    result = run(fit_on_shard, workers=2, launcher="horovod")
    assert_matches_single_process(result)
