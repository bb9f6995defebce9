"""Regression losses and metrics, in NumPy.

Per-example quantities take ``(y_true, y_pred)`` and return an array; their gradients are with
respect to ``y_pred``. The error is ``y_pred - y_true`` (positive when the prediction is too high).
Batch metrics reduce over every element, which for a single output column is what
``keras.losses.MeanSquaredError`` / ``MeanAbsoluteError`` and ``keras.metrics.RootMeanSquaredError``
compute.

Example::

    import numpy as np
    from deepspark.fundamentals import mse, mae

    y_true = np.array([150.0, 160.0, 170.0])
    y_pred = np.array([152.0, 158.0, 190.0])
    mse(y_true, y_pred), mae(y_true, y_pred)   # (136.0, 8.0): the 20-lb miss dominates MSE
"""

from __future__ import annotations

import numpy as np

from deepspark.errors import UserInputError

Array = np.ndarray


def _pair(y_true: Array, y_pred: Array) -> tuple[Array, Array]:
    y_true = np.asarray(y_true, dtype=float)
    y_pred = np.asarray(y_pred, dtype=float)
    if y_true.shape != y_pred.shape:
        raise UserInputError(
            "y_true and y_pred must have the same shape; reshape one of them. "
            f"Received: y_true.shape={y_true.shape}, y_pred.shape={y_pred.shape}"
        )
    if y_true.size == 0:
        raise UserInputError(
            "y_true and y_pred are empty; pass at least one value. Received: size=0"
        )
    return y_true, y_pred


def error(y_true: Array, y_pred: Array) -> Array:
    """Signed error ``y_pred - y_true``."""
    y_true, y_pred = _pair(y_true, y_pred)
    return y_pred - y_true


def error_gradient(y_true: Array, y_pred: Array) -> Array:
    """Gradient of the signed error with respect to ``y_pred``: ones."""
    y_true, y_pred = _pair(y_true, y_pred)
    return np.ones_like(y_pred)


def absolute_error(y_true: Array, y_pred: Array) -> Array:
    """``|y_pred - y_true|``: grows linearly, so a 20-lb miss costs 10 times a 2-lb miss."""
    return np.abs(error(y_true, y_pred))


def absolute_error_gradient(y_true: Array, y_pred: Array) -> Array:
    """``sign(y_pred - y_true)`` (0 at a perfect prediction, like ``torch.abs``' gradient)."""
    return np.sign(error(y_true, y_pred))


def squared_error(y_true: Array, y_pred: Array) -> Array:
    """``(y_pred - y_true)**2``: quadratic, so a 20-lb miss costs 100 times a 2-lb miss."""
    return error(y_true, y_pred) ** 2


def squared_error_gradient(y_true: Array, y_pred: Array) -> Array:
    """``2 * (y_pred - y_true)``: large errors pull hardest."""
    return 2.0 * error(y_true, y_pred)


def sse(y_true: Array, y_pred: Array) -> float:
    """Sum of squared errors over the batch."""
    return float(np.sum(squared_error(y_true, y_pred)))


def mse(y_true: Array, y_pred: Array) -> float:
    """Mean squared error over every element of the batch."""
    return float(np.mean(squared_error(y_true, y_pred)))


def mse_gradient(y_true: Array, y_pred: Array) -> Array:
    """Gradient of :func:`mse` with respect to ``y_pred``: ``2 * error / n``."""
    errors = error(y_true, y_pred)
    return 2.0 * errors / errors.size


def rmse(y_true: Array, y_pred: Array) -> float:
    """Root mean squared error: MSE back in the target's units."""
    return float(np.sqrt(mse(y_true, y_pred)))


def mae(y_true: Array, y_pred: Array) -> float:
    """Mean absolute error over every element of the batch."""
    return float(np.mean(absolute_error(y_true, y_pred)))
