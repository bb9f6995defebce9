"""A tiny multi-layer perceptron in NumPy: forward pass, backpropagation, gradient check, training.

Parameters are a flat list ``[W1, b1, W2, b2, ...]`` (``W`` shaped ``(inputs, units)``), which is
what the optimizers in :mod:`deepspark.fundamentals.optimizers` update. Hidden layers apply the
activation; the output layer is linear; the loss is the mean squared error over every output.

Example::

    import numpy as np
    from deepspark.fundamentals import init_mlp, fit_mlp, mlp_predict

    x = np.linspace(-2, 2, 64)[:, None]
    params = init_mlp([1, 16, 1], seed=0)
    params, history = fit_mlp(params, x, np.sin(2 * x), steps=500, learning_rate=0.02)
    mlp_predict(params, x)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from deepspark.errors import UserInputError
from deepspark.fundamentals.activations import get_activation
from deepspark.fundamentals.losses import mse, mse_gradient
from deepspark.fundamentals.optimizers import adam_step, init_state

Params = list[np.ndarray]


def init_mlp(layer_sizes: Sequence[int], *, seed: int = 0) -> Params:
    """Glorot-uniform weights and zero biases for dense layers of the given sizes.

    Args:
        layer_sizes: Units per layer including input and output, e.g. ``[1, 16, 1]``.
        seed: Seed of the NumPy generator that draws the weights.

    Returns:
        ``[W1, b1, W2, b2, ...]``.

    Raises:
        UserInputError: With fewer than two sizes or a size below 1.
    """
    sizes = list(layer_sizes)
    if len(sizes) < 2 or min(sizes) < 1:
        raise UserInputError(
            "layer_sizes needs at least an input and an output size, each >= 1, e.g. [1, 16, 1]. "
            f"Received: layer_sizes={sizes}"
        )
    rng = np.random.default_rng(seed)
    params: Params = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        params.append(rng.uniform(-limit, limit, size=(fan_in, fan_out)))
        params.append(np.zeros(fan_out))
    return params


def mlp_forward(
    params: Sequence[np.ndarray], inputs: np.ndarray, *, activation: str = "tanh"
) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """Run the network forward, keeping what backpropagation needs.

    Args:
        params: ``[W1, b1, W2, b2, ...]``.
        inputs: ``(rows, features)`` array.
        activation: Name of the hidden-layer activation (see ``get_activation``).

    Returns:
        ``(outputs, cache)``; ``cache`` holds ``(layer input, pre-activation)`` per layer.
    """
    function, _ = get_activation(activation)
    hidden = np.asarray(inputs, dtype=float)
    cache = []
    layer_count = len(params) // 2
    for layer in range(layer_count):
        weights, bias = params[2 * layer], params[2 * layer + 1]
        pre_activation = hidden @ weights + bias
        cache.append((hidden, pre_activation))
        hidden = pre_activation if layer == layer_count - 1 else function(pre_activation)
    return hidden, cache


def mlp_predict(
    params: Sequence[np.ndarray], inputs: np.ndarray, *, activation: str = "tanh"
) -> np.ndarray:
    """The network's outputs for ``inputs``."""
    return mlp_forward(params, inputs, activation=activation)[0]


def mlp_loss_and_gradients(
    params: Sequence[np.ndarray],
    inputs: np.ndarray,
    targets: np.ndarray,
    *,
    activation: str = "tanh",
) -> tuple[float, Params]:
    """Mean squared error of the network and its gradient for every parameter (backprop).

    Args:
        params: ``[W1, b1, W2, b2, ...]``.
        inputs: ``(rows, features)`` array.
        targets: ``(rows, outputs)`` array.
        activation: Name of the hidden-layer activation.

    Returns:
        ``(loss, grads)`` with ``grads`` shaped like ``params``.
    """
    _, derivative = get_activation(activation)
    outputs, cache = mlp_forward(params, inputs, activation=activation)
    targets = np.asarray(targets, dtype=float).reshape(outputs.shape)
    upstream = mse_gradient(targets, outputs)  # dLoss/dOutput
    grads: Params = [np.empty(0)] * len(params)
    for layer in reversed(range(len(cache))):
        layer_input, pre_activation = cache[layer]
        if layer != len(cache) - 1:
            upstream = upstream * derivative(pre_activation)
        grads[2 * layer] = layer_input.T @ upstream
        grads[2 * layer + 1] = upstream.sum(axis=0)
        upstream = upstream @ params[2 * layer].T
    return mse(targets, outputs), grads


def numerical_gradient(
    loss: Callable[[Params], float], params: Sequence[np.ndarray], *, epsilon: float = 1e-6
) -> Params:
    """Central-difference estimate of the gradient of ``loss`` at ``params``.

    Args:
        loss: Maps a parameter list to a scalar.
        params: Where to evaluate the gradient.
        epsilon: Half the finite-difference step.

    Returns:
        One array per parameter: ``(loss(p + eps) - loss(p - eps)) / (2 * eps)`` element-wise.
    """
    params = [np.array(param, dtype=float) for param in params]
    estimates = []
    for param in params:
        estimate = np.zeros_like(param)
        for index in np.ndindex(param.shape):
            original = param[index]
            param[index] = original + epsilon
            above = loss(params)
            param[index] = original - epsilon
            below = loss(params)
            param[index] = original
            estimate[index] = (above - below) / (2.0 * epsilon)
        estimates.append(estimate)
    return estimates


def gradient_check(
    params: Sequence[np.ndarray],
    inputs: np.ndarray,
    targets: np.ndarray,
    *,
    activation: str = "tanh",
    epsilon: float = 1e-6,
) -> float:
    """Relative difference between backprop and numerical gradients.

    Values around 1e-7 or below mean backpropagation is right; 1e-2 or above means a bug.

    Args:
        params: ``[W1, b1, W2, b2, ...]``.
        inputs: ``(rows, features)`` array.
        targets: ``(rows, outputs)`` array.
        activation: Name of the hidden-layer activation.
        epsilon: Finite-difference half step.

    Returns:
        ``||analytic - numeric|| / (||analytic|| + ||numeric||)`` over all parameters together.
    """
    _, analytic = mlp_loss_and_gradients(params, inputs, targets, activation=activation)
    numeric = numerical_gradient(
        lambda trial: mlp_loss_and_gradients(trial, inputs, targets, activation=activation)[0],
        params,
        epsilon=epsilon,
    )
    exact = np.concatenate([grad.ravel() for grad in analytic])
    estimate = np.concatenate([grad.ravel() for grad in numeric])
    scale = max(float(np.linalg.norm(exact) + np.linalg.norm(estimate)), 1e-12)
    return float(np.linalg.norm(exact - estimate)) / scale


def fit_mlp(
    params: Sequence[np.ndarray],
    inputs: np.ndarray,
    targets: np.ndarray,
    *,
    steps: int,
    learning_rate: float = 0.01,
    activation: str = "tanh",
) -> tuple[Params, list[float]]:
    """Full-batch training with :func:`~deepspark.fundamentals.optimizers.adam_step`.

    Args:
        params: Starting ``[W1, b1, W2, b2, ...]``.
        inputs: ``(rows, features)`` array.
        targets: ``(rows, outputs)`` array.
        steps: Number of Adam updates.
        learning_rate: Adam's step size.
        activation: Name of the hidden-layer activation.

    Returns:
        ``(trained params, training loss before each step)``.
    """
    params = [np.array(param, dtype=float) for param in params]
    state = init_state("adam", params)
    history = []
    for _ in range(steps):
        loss, grads = mlp_loss_and_gradients(params, inputs, targets, activation=activation)
        history.append(loss)
        params, state = adam_step(params, grads, state, learning_rate=learning_rate)
    return params, history
