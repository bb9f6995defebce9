"""DistributedOptimizer in this process (a world of one): same training as the optimizer it
wraps, serialized as that optimizer, checkpoints keep its state."""

import numpy as np
import pytest

from deepspark._backend import import_keras
from deepspark.distributed import DistributedOptimizer, size
from deepspark.distributed.optimizer import is_distributed
from deepspark.errors import UserInputError
from tests.distributed.rank_functions import compiled_model, dataset

keras = import_keras()

pytestmark = pytest.mark.parity  # also run on torch (make test)


def fitted(optimizer):
    x, y, _, _ = dataset()
    model = compiled_model(optimizer)
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    return model


def test_world_of_one_trains_exactly_like_the_wrapped_optimizer():
    plain = fitted(keras.optimizers.Adam(0.01))
    distributed = fitted(DistributedOptimizer(keras.optimizers.Adam(0.01)))
    assert size() == 1
    for got, expected in zip(distributed.get_weights(), plain.get_weights(), strict=True):
        np.testing.assert_array_equal(got, expected)


def test_wraps_in_place_and_serializes_as_the_original(tmp_path):
    optimizer = keras.optimizers.Adam(0.01)
    wrapped = DistributedOptimizer(optimizer)
    assert wrapped is optimizer and is_distributed(wrapped)
    assert isinstance(wrapped, keras.optimizers.Adam)
    assert DistributedOptimizer(wrapped) is wrapped  # idempotent
    model = fitted(wrapped)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert type(loaded.optimizer).__name__ == "Adam" and not is_distributed(loaded.optimizer)
    for got, expected in zip(loaded.optimizer.variables, model.optimizer.variables, strict=True):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(got), keras.ops.convert_to_numpy(expected)
        )


def test_rejects_what_is_not_a_keras_optimizer():
    with pytest.raises(UserInputError, match="wraps a Keras optimizer.*Received: optimizer="):
        DistributedOptimizer("adam")


def test_unknown_backend_is_a_user_error():
    with pytest.raises(UserInputError, match="Received: backend='mpi'"):
        with pytest.warns(FutureWarning, match="'backend' argument is deprecated"):
            DistributedOptimizer(keras.optimizers.SGD(0.1), backend="mpi")
    with pytest.raises(UserInputError, match="Received: collectives='mpi'"):
        DistributedOptimizer(keras.optimizers.SGD(0.1), collectives="mpi")


def test_collectives_of_the_other_keras_backend_are_a_user_error():
    other = "torch" if keras.backend.backend() == "jax" else "jax"
    with pytest.raises(UserInputError, match=f"Received: collectives='{other}'"):
        DistributedOptimizer(keras.optimizers.SGD(0.1), collectives=other)
