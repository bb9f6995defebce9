"""Distributed callbacks in a world of one, and which callbacks each rank gets."""

import pytest

from deepspark._backend import import_keras
from deepspark.config import TrainConfig
from deepspark.distributed import DistributedOptimizer, LearningRateWarmup
from deepspark.errors import UserInputError
from deepspark.training import callbacks as ds_callbacks
from deepspark.training.checkpoint import CheckpointStore
from deepspark.training.fit import default_callbacks
from tests.distributed.rank_functions import compiled_model, dataset

keras = import_keras()

pytestmark = pytest.mark.parity  # also run on torch (make test)


class RecordRate(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.rates = []

    def on_train_batch_begin(self, batch, logs=None):
        # Keras' JAX fit keeps the state off the variables during an epoch: read it from there.
        if getattr(self.model, "_jax_state", None) is not None:
            self.model.jax_state_sync()
            self.model._jax_state_synced = True
        self.rates.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))


def test_warmup_rises_linearly_then_holds_the_target():
    x, y, _, _ = dataset()
    model = compiled_model(DistributedOptimizer(keras.optimizers.SGD(0.01)))
    record = RecordRate()
    warmup = LearningRateWarmup(0.4, warmup_epochs=1, initial_fraction=0.5)
    model.fit(x[:64], y[:64], batch_size=16, epochs=2, verbose=0, callbacks=[warmup, record])
    assert record.rates == pytest.approx([0.2, 0.25, 0.3, 0.35, 0.4, 0.4, 0.4, 0.4])


def test_only_rank_zero_writes(tmp_path):
    config = TrainConfig(data="diabetes")
    store = CheckpointStore(tmp_path)
    writers = (ds_callbacks.EpochCheckpoint, ds_callbacks.MlflowEpochLogger)
    rank_zero = default_callbacks(config, store, writer=True, run_id="r").callbacks
    others = default_callbacks(config, store, writer=False, run_id="r").callbacks
    assert sum(isinstance(callback, writers) for callback in rank_zero) == 2
    assert not any(
        isinstance(callback, (*writers, ds_callbacks.EpochProgress)) for callback in others
    )


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"workers": 0}, "Received: workers=0"),
        ({"launcher": "mpirun"}, "Received: launcher='mpirun'"),
        # (formerly --backend) collectives: the Keras backend's own, horovod with its launchers
        (
            {"workers": 2, "collectives": "horovod", "keras_backend": "torch"},
            "need --launcher horovod.*Received: collectives='horovod'",
        ),
        (
            {"launcher": "horovod", "collectives": "torch", "keras_backend": "torch"},
            "Received: collectives='torch'",
        ),
        ({"workers": 2, "collectives": "torch", "keras_backend": "jax"}, "Keras runs on jax"),
        ({"launcher": "horovod", "keras_backend": "jax"}, "Received: launcher='horovod'"),
        ({"max_restarts": -1}, "Received: max_restarts=-1"),
    ],
)
def test_distributed_settings_are_validated(settings, message):
    with pytest.raises(UserInputError, match=message):
        TrainConfig(data="diabetes", **settings)


def test_old_backend_setting_still_reads_as_collectives():
    document = {"data": "diabetes", "workers": 2, "backend": "torch", "keras_backend": "torch"}
    config = TrainConfig.from_dict(document)
    assert config.collectives == "torch"


def test_nan_guard_reads_the_reduced_loss_flag():
    from deepspark.distributed import DistributedNanGuard

    x, y, _, _ = dataset()
    y = y.copy()
    y[40] = float("nan")  # the third batch of 16 has a NaN loss
    model = compiled_model(DistributedOptimizer(keras.optimizers.SGD(0.01)))
    guard = DistributedNanGuard()
    model.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0, callbacks=[guard])
    assert guard.failed_at == (0, 2)
