"""Activation functions and their derivatives, in NumPy.

Each function matches its Keras 3 counterpart (``keras.activations.*`` or, for PReLU, the
``keras.layers.PReLU`` layer) and each ``*_derivative`` is the derivative with respect to the input,
evaluated element-wise. At a kink (``x == 0``) the derivative takes the value from the ``x <= 0``
side, which is what torch autograd, and so Keras on the torch backend, uses.

Example::

    import numpy as np
    from deepspark.fundamentals import sigmoid, sigmoid_derivative

    x = np.linspace(-5, 5, 11)
    sigmoid(x), sigmoid_derivative(x)
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from deepspark.errors import UserInputError

Array = np.ndarray

#: Keras 3's ``keras.activations.leaky_relu`` default slope (the ``LeakyReLU`` layer uses 0.3).
LEAKY_RELU_ALPHA = 0.2


def sigmoid(x: Array) -> Array:
    """Logistic function ``1 / (1 + exp(-x))``, computed without overflow for large ``|x|``."""
    x = np.asarray(x, dtype=float)
    exp_neg_abs = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + exp_neg_abs), exp_neg_abs / (1.0 + exp_neg_abs))


def sigmoid_derivative(x: Array) -> Array:
    """``sigmoid(x) * (1 - sigmoid(x))``: at most 0.25 (at 0), vanishing for large ``|x|``."""
    s = sigmoid(x)
    return s * (1.0 - s)


def tanh(x: Array) -> Array:
    """Hyperbolic tangent: zero-centred, range (-1, 1)."""
    return np.tanh(np.asarray(x, dtype=float))


def tanh_derivative(x: Array) -> Array:
    """``1 - tanh(x)**2``: at most 1 (at 0)."""
    return 1.0 - np.tanh(np.asarray(x, dtype=float)) ** 2


def relu(x: Array) -> Array:
    """Rectified linear unit ``max(x, 0)``."""
    return np.maximum(np.asarray(x, dtype=float), 0.0)


def relu_derivative(x: Array) -> Array:
    """1 where ``x > 0``, else 0: a unit whose input stays negative gets no gradient ("dead")."""
    return (np.asarray(x, dtype=float) > 0).astype(float)


def leaky_relu(x: Array, alpha: float = LEAKY_RELU_ALPHA) -> Array:
    """``x`` for ``x > 0``, else ``alpha * x`` (Keras' ``negative_slope``)."""
    x = np.asarray(x, dtype=float)
    return np.where(x > 0, x, alpha * x)


def leaky_relu_derivative(x: Array, alpha: float = LEAKY_RELU_ALPHA) -> Array:
    """1 where ``x > 0``, else ``alpha``: never exactly zero, so units cannot die."""
    return np.where(np.asarray(x, dtype=float) > 0, 1.0, alpha)


def prelu(x: Array, alpha: Array | float) -> Array:
    """Parametric ReLU: a leaky ReLU whose slope ``alpha`` is learned (broadcast against ``x``)."""
    x = np.asarray(x, dtype=float)
    return np.where(x > 0, x, np.asarray(alpha, dtype=float) * x)


def prelu_derivative(x: Array, alpha: Array | float) -> Array:
    """Derivative of :func:`prelu` with respect to the input ``x``."""
    x = np.asarray(x, dtype=float)
    return np.where(x > 0, 1.0, np.broadcast_to(np.asarray(alpha, dtype=float), x.shape))


def prelu_alpha_gradient(x: Array, alpha: Array | float, upstream: Array | None = None) -> Array:
    """Gradient of ``sum(upstream * prelu(x, alpha))`` with respect to ``alpha``.

    Args:
        x: Inputs; a leading batch axis is summed over when ``alpha`` has fewer dimensions.
        alpha: The slopes, shaped like ``x`` without its batch axes (or a scalar).
        upstream: Gradient flowing in from the layer above; ones when ``None``.

    Returns:
        An array shaped like ``alpha``: ``sum(upstream * min(x, 0))`` over the broadcast axes.
    """
    x = np.asarray(x, dtype=float)
    alpha = np.asarray(alpha, dtype=float)
    upstream = np.ones_like(x) if upstream is None else np.asarray(upstream, dtype=float)
    return _sum_to_shape(upstream * np.where(x > 0, 0.0, x), alpha.shape)


def _sum_to_shape(values: Array, shape: tuple[int, ...]) -> Array:
    """Undo broadcasting: sum ``values`` over the axes that were broadcast to reach its shape."""
    values = values.sum(axis=tuple(range(values.ndim - len(shape))))
    broadcast = tuple(
        axis for axis, size in enumerate(shape) if size == 1 and values.shape[axis] != 1
    )
    return values.sum(axis=broadcast, keepdims=True) if broadcast else values


def elu(x: Array, alpha: float = 1.0) -> Array:
    """Exponential linear unit: ``x`` for ``x > 0``, else ``alpha * (exp(x) - 1)``."""
    x = np.asarray(x, dtype=float)
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0.0)))


def elu_derivative(x: Array, alpha: float = 1.0) -> Array:
    """1 where ``x > 0``, else ``alpha * exp(x)``: small but nonzero for negative inputs."""
    x = np.asarray(x, dtype=float)
    return np.where(x > 0, 1.0, alpha * np.exp(np.minimum(x, 0.0)))


#: Name -> (function, derivative) for the activations that take no learned parameter.
ACTIVATIONS: dict[str, tuple[Callable[[Array], Array], Callable[[Array], Array]]] = {
    "sigmoid": (sigmoid, sigmoid_derivative),
    "tanh": (tanh, tanh_derivative),
    "relu": (relu, relu_derivative),
    "leaky_relu": (leaky_relu, leaky_relu_derivative),
    "elu": (elu, elu_derivative),
}


def get_activation(name: str) -> tuple[Callable[[Array], Array], Callable[[Array], Array]]:
    """Look up an activation and its derivative by name.

    Args:
        name: One of ``sigmoid``, ``tanh``, ``relu``, ``leaky_relu``, ``elu``.

    Returns:
        ``(function, derivative)``.

    Raises:
        UserInputError: When the name is not one of the above.
    """
    if name not in ACTIVATIONS:
        raise UserInputError(
            f"Unknown activation; use one of {', '.join(ACTIVATIONS)}. "
            f"Received: activation={name!r}"
        )
    return ACTIVATIONS[name]
