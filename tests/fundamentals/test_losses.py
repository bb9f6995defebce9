"""Losses and metrics equal their Keras 3 counterparts; gradients equal numerical ones."""

from __future__ import annotations

import numpy as np
import pytest

from deepspark.errors import UserInputError
from deepspark.fundamentals import losses
from deepspark.fundamentals.mlp import numerical_gradient
from tests.conftest import float64_keras

keras = pytest.importorskip("keras")

RNG = np.random.default_rng(0)
Y_TRUE = RNG.normal(170.0, 15.0, size=(12, 1))
Y_PRED = Y_TRUE + RNG.normal(0.0, 3.0, size=(12, 1))


def keras_value(make_loss_or_metric) -> float:
    with float64_keras():
        loss_or_metric = make_loss_or_metric()
        if isinstance(loss_or_metric, keras.metrics.Metric):
            loss_or_metric.update_state(Y_TRUE, Y_PRED)
            return float(keras.ops.convert_to_numpy(loss_or_metric.result()))
        return float(keras.ops.convert_to_numpy(loss_or_metric(Y_TRUE, Y_PRED)))


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (losses.mse, lambda: keras.losses.MeanSquaredError(dtype="float64")),
        (losses.mae, lambda: keras.losses.MeanAbsoluteError(dtype="float64")),
        (losses.rmse, lambda: keras.metrics.RootMeanSquaredError(dtype="float64")),
        (losses.mse, lambda: keras.metrics.MeanSquaredError(dtype="float64")),
        (losses.mae, lambda: keras.metrics.MeanAbsoluteError(dtype="float64")),
    ],
    ids=["mse-loss", "mae-loss", "rmse-metric", "mse-metric", "mae-metric"],
)
def test_batch_metric_matches_keras(ours, theirs):
    assert ours(Y_TRUE, Y_PRED) == pytest.approx(keras_value(theirs), rel=1e-6)


def test_sse_is_keras_sum_reduction():
    expected = keras_value(lambda: keras.losses.MeanSquaredError(reduction="sum", dtype="float64"))
    assert losses.sse(Y_TRUE, Y_PRED) == pytest.approx(expected, rel=1e-6)


def test_per_example_errors_match_keras_functions():
    with float64_keras():
        squared = keras.ops.convert_to_numpy(keras.losses.mean_squared_error(Y_TRUE, Y_PRED))
        absolute = keras.ops.convert_to_numpy(keras.losses.mean_absolute_error(Y_TRUE, Y_PRED))
    np.testing.assert_allclose(losses.squared_error(Y_TRUE, Y_PRED)[:, 0], squared, rtol=1e-6)
    np.testing.assert_allclose(losses.absolute_error(Y_TRUE, Y_PRED)[:, 0], absolute, rtol=1e-6)
    np.testing.assert_allclose(losses.error(Y_TRUE, Y_PRED), Y_PRED - Y_TRUE)


@pytest.mark.parametrize(
    ("function", "gradient"),
    [
        (lambda t, p: np.sum(losses.error(t, p)), losses.error_gradient),
        (lambda t, p: np.sum(losses.absolute_error(t, p)), losses.absolute_error_gradient),
        (lambda t, p: np.sum(losses.squared_error(t, p)), losses.squared_error_gradient),
        (losses.mse, losses.mse_gradient),
    ],
    ids=["error", "absolute", "squared", "mse"],
)
def test_gradients_match_numerical(function, gradient):
    numeric = numerical_gradient(lambda params: float(function(Y_TRUE, params[0])), [Y_PRED])[0]
    np.testing.assert_allclose(gradient(Y_TRUE, Y_PRED), numeric, rtol=1e-5, atol=1e-6)


def test_outlier_costs_100_times_under_squared_and_10_times_under_absolute():
    truth = np.zeros(2)
    misses = np.array([2.0, 20.0])
    squared, absolute = losses.squared_error(truth, misses), losses.absolute_error(truth, misses)
    assert squared[1] / squared[0] == pytest.approx(100.0)
    assert absolute[1] / absolute[0] == pytest.approx(10.0)


def test_shape_mismatch_is_a_user_error():
    with pytest.raises(UserInputError, match=r"same shape.*Received: y_true.shape=\(3,\), y_pred"):
        losses.mse(np.zeros(3), np.zeros(4))


def test_empty_input_is_a_user_error():
    with pytest.raises(UserInputError, match="empty; pass at least one value"):
        losses.mae(np.zeros(0), np.zeros(0))
