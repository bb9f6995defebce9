"""The JAX-specific pieces in this process: the group in a world of one, and the validation
padding that lets shards of different sizes run the same SPMD batches."""

import numpy as np
import pytest

from deepspark.distributed import run
from deepspark.distributed._jax import pad_to_common_rows
from deepspark.distributed.backends import CommunicationBackend, get_backend
from deepspark.errors import UserInputError

jax = pytest.importorskip("jax")


class SecondOfTwo(CommunicationBackend):
    """Rank 1 of 2, whose peer (rank 0) holds ``peer_rows`` rows starting with ``peer_row``."""

    name, rank, size = "fake", 1, 2

    def __init__(self, peer_rows: int, peer_row):
        self.peer_rows, self.peer_row = peer_rows, peer_row

    def allreduce_sum_(self, tensor, *, name):
        tensor[0] += self.peer_rows
        return tensor

    def broadcast_object(self, value, *, root=0):
        return self.peer_row


def test_smaller_shard_is_padded_with_rank_zeros_first_row():
    x = {"numeric": np.ones((3, 2), "float32"), "code": np.arange(3)}
    y = np.full((3, 1), 5.0, "float32")
    peer_row = ({"numeric": np.zeros((1, 2), "float32"), "code": np.array([9])}, y[:1] * 0, None)
    rows = pad_to_common_rows(x, y, None, SecondOfTwo(peer_rows=5, peer_row=peer_row))
    assert rows.padding_rows == 2 and rows.sample_weight is None
    np.testing.assert_array_equal(rows.x["code"], [0, 1, 2, 9, 9])
    np.testing.assert_array_equal(rows.x["numeric"][3:], np.zeros((2, 2)))
    assert rows.y.shape == (5, 1) and rows.row == peer_row


def test_equal_or_larger_shards_are_left_alone():
    x, y = np.ones((4, 2)), np.ones(4)
    peer_row = (np.zeros((1, 2)), np.zeros(1), None)
    rows = pad_to_common_rows(x, y, None, SecondOfTwo(peer_rows=3, peer_row=peer_row))
    assert rows.padding_rows == 1 and rows.x is x  # the peer pads, this rank does not change
    assert pad_to_common_rows(x, y, None, SecondOfTwo(4, None)).padding_rows == 0


def test_world_of_one_collectives():
    backend = get_backend()
    assert (backend.rank, backend.size) == (0, 1)
    if backend.name != "jax":
        pytest.skip("this process runs Keras on torch")
    assert backend.broadcast_object({"epoch": 3}) == {"epoch": 3}
    np.testing.assert_array_equal(backend.allreduce_sum_(np.ones(2), name="t"), np.ones(2))
    backend.barrier()


def test_run_takes_the_old_backend_argument_with_a_warning():
    with pytest.warns(FutureWarning, match="use 'collectives'"):
        with pytest.raises(UserInputError, match="Received: workers=0"):
            run(print, workers=0, backend="jax")


@pytest.mark.parametrize(
    ("environment", "mode"),
    [
        ({"JAX_PLATFORMS": "cpu"}, "host"),
        ({"JAX_PLATFORMS": "cuda,cpu"}, "spmd"),
        ({"JAX_PLATFORMS": "cpu", "DEEPSPARK_JAX_COLLECTIVES": "spmd"}, "spmd"),
        ({"JAX_PLATFORMS": "cuda", "DEEPSPARK_JAX_COLLECTIVES": "HOST"}, "host"),
    ],
)
def test_cpu_trains_with_host_collectives_accelerators_with_spmd(monkeypatch, environment, mode):
    from deepspark.distributed._jax import choose_mode

    monkeypatch.delenv("DEEPSPARK_JAX_COLLECTIVES", raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert choose_mode() == mode


def test_an_unknown_jax_collectives_mode_is_named(monkeypatch):
    from deepspark.distributed._jax import choose_mode

    monkeypatch.setenv("DEEPSPARK_JAX_COLLECTIVES", "ring")
    with pytest.raises(UserInputError, match="DEEPSPARK_JAX_COLLECTIVES='ring'"):
        choose_mode()
