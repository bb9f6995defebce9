"""Activations equal Keras 3 (values) and autograd through Keras (derivatives), on the backend
Keras runs on (JAX by default, torch in the backend-parity run)."""

from __future__ import annotations

import numpy as np
import pytest

from deepspark.errors import UserInputError
from deepspark.fundamentals import activations as act
from deepspark.fundamentals.mlp import numerical_gradient
from tests.conftest import float64_keras

keras = pytest.importorskip("keras")

# Avoid x == 0 exactly: the derivative is a convention there, not a value to compare.
X = np.concatenate([np.linspace(-12.0, 12.0, 96), [-1e-3, 1e-3, 0.3, -0.3]])


def keras_value_and_derivative(function, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Value and elementwise derivative of a Keras function in float64, by the backend's
    autograd."""
    if keras.backend.backend() == "jax":
        import jax

        with float64_keras():
            tensor = jax.numpy.asarray(x, dtype=jax.numpy.float64)
            value = function(tensor)
            gradient = jax.grad(lambda t: function(t).sum())(tensor)
            return np.asarray(value), np.asarray(gradient)
    import torch

    tensor = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    output = function(tensor)
    output.sum().backward()
    return output.detach().numpy(), tensor.grad.numpy()


CASES = [
    ("sigmoid", act.sigmoid, act.sigmoid_derivative, keras.activations.sigmoid),
    ("tanh", act.tanh, act.tanh_derivative, keras.activations.tanh),
    ("relu", act.relu, act.relu_derivative, keras.activations.relu),
    ("leaky_relu", act.leaky_relu, act.leaky_relu_derivative, keras.activations.leaky_relu),
    (
        "leaky_relu_0.05",
        lambda x: act.leaky_relu(x, 0.05),
        lambda x: act.leaky_relu_derivative(x, 0.05),
        lambda x: keras.activations.leaky_relu(x, negative_slope=0.05),
    ),
    ("elu", act.elu, act.elu_derivative, keras.activations.elu),
    (
        "elu_0.5",
        lambda x: act.elu(x, 0.5),
        lambda x: act.elu_derivative(x, 0.5),
        lambda x: keras.activations.elu(x, alpha=0.5),
    ),
]


@pytest.mark.parametrize(
    ("name", "function", "derivative", "keras_function"), CASES, ids=[case[0] for case in CASES]
)
def test_activation_and_derivative_match_keras(name, function, derivative, keras_function):
    expected_value, expected_derivative = keras_value_and_derivative(keras_function, X)
    np.testing.assert_allclose(function(X), expected_value, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(derivative(X), expected_derivative, rtol=1e-6, atol=1e-6)


def test_prelu_matches_keras_layer():
    alpha = np.array([0.1, 0.25, -0.3])
    inputs = np.random.default_rng(0).normal(size=(8, 3))
    with float64_keras():
        layer = keras.layers.PReLU(
            alpha_initializer=keras.initializers.Constant(alpha), dtype="float64"
        )
        expected = keras.ops.convert_to_numpy(layer(inputs))
    np.testing.assert_allclose(act.prelu(inputs, alpha), expected, rtol=1e-6, atol=1e-6)


def test_prelu_input_derivative_matches_autograd():
    alpha = np.array([0.1, 0.25, -0.3])
    inputs = np.random.default_rng(1).normal(size=(8, 3))
    with float64_keras():
        layer = keras.layers.PReLU(
            alpha_initializer=keras.initializers.Constant(alpha), dtype="float64"
        )
    _, expected = keras_value_and_derivative(layer, inputs)
    np.testing.assert_allclose(act.prelu_derivative(inputs, alpha), expected, atol=1e-6)


@pytest.mark.parametrize(
    "alpha",
    [np.array([0.1, 0.25, -0.3]), np.array(0.2), np.array([[0.3]])],
    ids=["per-feature", "scalar", "broadcast"],
)
def test_prelu_alpha_gradient_matches_numerical(alpha):
    rng = np.random.default_rng(2)
    inputs, upstream = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    analytic = act.prelu_alpha_gradient(inputs, alpha, upstream)
    numeric = numerical_gradient(
        lambda params: float(np.sum(upstream * act.prelu(inputs, params[0]))), [alpha]
    )[0]
    assert analytic.shape == alpha.shape
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)


def test_sigmoid_is_stable_for_large_inputs():
    with np.errstate(over="raise"):
        values = act.sigmoid(np.array([-1000.0, 1000.0]))
    np.testing.assert_allclose(values, [0.0, 1.0])


def test_get_activation_rejects_unknown_name():
    with pytest.raises(
        UserInputError, match=r"Unknown activation; use one of .*Received: activation='swish'"
    ):
        act.get_activation("swish")
