"""Backpropagation of the NumPy MLP agrees with numerical gradients; training lowers the loss."""

from __future__ import annotations

import numpy as np
import pytest

from deepspark.errors import UserInputError
from deepspark.fundamentals import ACTIVATIONS
from deepspark.fundamentals.mlp import (
    fit_mlp,
    gradient_check,
    init_mlp,
    mlp_forward,
    mlp_loss_and_gradients,
    numerical_gradient,
)


@pytest.fixture
def batch() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(size=(10, 3)), rng.normal(size=(10, 2))


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_backprop_matches_numerical_gradients(batch, activation):
    inputs, targets = batch
    params = init_mlp([3, 5, 4, 2], seed=1)
    _, analytic = mlp_loss_and_gradients(params, inputs, targets, activation=activation)
    numeric = numerical_gradient(
        lambda trial: mlp_loss_and_gradients(trial, inputs, targets, activation=activation)[0],
        params,
    )
    for exact, estimate in zip(analytic, numeric, strict=True):
        np.testing.assert_allclose(exact, estimate, rtol=1e-5, atol=1e-7)
    assert gradient_check(params, inputs, targets, activation=activation) < 1e-7


def test_gradient_check_catches_a_wrong_gradient(batch, monkeypatch):
    from deepspark.fundamentals import mlp

    inputs, targets = batch
    correct = mlp.mlp_loss_and_gradients

    def broken(params, *args, **kwargs):
        loss, grads = correct(params, *args, **kwargs)
        return loss, [grad * 1.1 for grad in grads]

    params = init_mlp([3, 4, 2], seed=0)
    monkeypatch.setattr(mlp, "mlp_loss_and_gradients", broken)
    assert gradient_check(params, inputs, targets) > 1e-2


def test_forward_shapes_and_linear_output(batch):
    inputs, _ = batch
    params = init_mlp([3, 4, 2], seed=0)
    outputs, cache = mlp_forward(params, inputs, activation="relu")
    assert outputs.shape == (10, 2)
    assert len(cache) == 2
    np.testing.assert_allclose(outputs, cache[-1][1])  # no activation on the output layer


def test_fit_lowers_the_loss(batch):
    inputs, targets = batch
    _, history = fit_mlp(
        init_mlp([3, 8, 2], seed=0), inputs, targets, steps=200, learning_rate=0.01
    )
    assert history[-1] < 0.5 * history[0]


def test_init_rejects_too_few_layers():
    with pytest.raises(
        UserInputError,
        match=r"at least an input and an output.*"
        r"Received: layer_sizes=\[3\]",
    ):
        init_mlp([3])
