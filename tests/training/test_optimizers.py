"""``make_optimizer``: names, default rates, weight decay and the cosine schedule."""

from __future__ import annotations

import keras
import pytest

from deepspark.config import OPTIMIZERS, make_config
from deepspark.errors import UserInputError
from deepspark.training.optimizers import DEFAULT_LEARNING_RATES, make_optimizer


def _rate(optimizer) -> float:
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_keeps_its_default_rate_and_takes_weight_decay(name):
    assert _rate(make_optimizer(name)) == pytest.approx(DEFAULT_LEARNING_RATES[name])
    assert make_optimizer(name, 0.1, weight_decay=0.05).weight_decay == pytest.approx(0.05)


def test_weight_decay_defaults_stay_keras_own():
    assert make_optimizer("adam").weight_decay is None
    assert make_optimizer("adamw").weight_decay == pytest.approx(0.004)


def test_cosine_schedule_decays_to_zero_over_the_budget():
    optimizer = make_optimizer("adamw", 0.01, schedule="cosine", total_steps=100)
    schedule = optimizer._learning_rate
    assert float(schedule(0)) == pytest.approx(0.01)
    assert float(schedule(50)) == pytest.approx(0.005, rel=1e-4)
    assert float(schedule(100)) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="total_steps=None"):
        make_optimizer("adam", schedule="cosine")


def test_schedule_and_weight_decay_settings_are_validated():
    assert make_config({"data": "x", "lr_schedule": "cosine"}).lr_schedule == "cosine"
    with pytest.raises(UserInputError, match="lr-schedule: unknown value"):
        make_config({"data": "x", "lr_schedule": "step"})
    with pytest.raises(UserInputError, match="weight-decay"):
        make_config({"data": "x", "weight_decay": -0.1})
