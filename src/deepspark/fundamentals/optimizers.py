"""Gradient-descent optimizers as pure NumPy functions, with Keras 3's exact update rules.

Every step function has the shape ``(params, grads, state, *, hyperparameters) -> (params, state)``:
``params`` and ``grads`` are lists of arrays (one per weight), ``state`` is the dictionary made by
:func:`init_state`. Nothing is modified in place, so a trajectory is just a loop.

The formulas are those of ``keras.optimizers.SGD`` and ``keras.optimizers.Adam``:

- SGD: ``w -= lr * g``.
- Momentum: ``m = momentum * m - lr * g; w += m``.
- Nesterov: ``m = momentum * m - lr * g; w += momentum * m - lr * g``.
- Adam: ``m += (g - m) * (1 - beta_1); v += (g**2 - v) * (1 - beta_2);
  w -= lr * sqrt(1 - beta_2**t) / (1 - beta_1**t) * m / (sqrt(v) + epsilon)``. The bias
  correction is folded into the step size and ``epsilon`` is added to the *uncorrected*
  ``sqrt(v)`` ("epsilon hat" in Kingma & Ba), which is why Keras' default epsilon is 1e-7.

Example::

    import numpy as np
    from deepspark.fundamentals import adam_step, init_state

    params = [np.array([3.0])]
    state = init_state("adam", params)
    for _ in range(100):
        grads = [2 * params[0]]                  # d/dx of x**2
        params, state = adam_step(params, grads, state, learning_rate=0.1)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from deepspark.errors import UserInputError

Params = list[np.ndarray]
State = dict[str, Any]

OPTIMIZER_NAMES = ("sgd", "momentum", "nesterov", "adam")


def _as_arrays(values: Sequence[np.ndarray]) -> Params:
    return [np.asarray(value, dtype=float) for value in values]


def _check_matching(params: Params, grads: Params) -> None:
    shapes = [param.shape for param in params]
    grad_shapes = [grad.shape for grad in grads]
    if shapes != grad_shapes:
        raise UserInputError(
            "grads must have one array per parameter, shaped like it; compute one gradient "
            f"per weight. Received: param shapes={shapes}, grad shapes={grad_shapes}"
        )


def init_state(optimizer: str, params: Sequence[np.ndarray]) -> State:
    """The starting state of an optimizer for these parameters.

    Args:
        optimizer: ``sgd``, ``momentum``, ``nesterov`` or ``adam``.
        params: The parameters the optimizer will update (only their shapes are used).

    Returns:
        ``{"step": 0}`` plus zero-filled slots: ``velocity`` for momentum and Nesterov,
        ``m`` and ``v`` for Adam.

    Raises:
        UserInputError: For an unknown optimizer name.
    """
    zeros = [np.zeros_like(param) for param in _as_arrays(params)]
    if optimizer == "sgd":
        return {"step": 0}
    if optimizer in ("momentum", "nesterov"):
        return {"step": 0, "velocity": zeros}
    if optimizer == "adam":
        return {"step": 0, "m": zeros, "v": [zero.copy() for zero in zeros]}
    raise UserInputError(
        f"Unknown optimizer; use one of {', '.join(OPTIMIZER_NAMES)}. "
        f"Received: optimizer={optimizer!r}"
    )


def sgd_step(
    params: Sequence[np.ndarray],
    grads: Sequence[np.ndarray],
    state: State,
    *,
    learning_rate: float = 0.01,
) -> tuple[Params, State]:
    """Plain gradient descent: ``w -= learning_rate * g``."""
    params, grads = _as_arrays(params), _as_arrays(grads)
    _check_matching(params, grads)
    new_params = [param - learning_rate * grad for param, grad in zip(params, grads, strict=True)]
    return new_params, {**state, "step": state["step"] + 1}


def _velocity_step(
    params: Params,
    grads: Params,
    state: State,
    *,
    learning_rate: float,
    momentum: float,
    nesterov: bool,
) -> tuple[Params, State]:
    _check_matching(params, grads)
    new_params, velocities = [], []
    for param, grad, velocity in zip(params, grads, state["velocity"], strict=True):
        velocity = momentum * velocity - learning_rate * grad
        # Keras' Nesterov looks ahead by applying the fresh velocity once more, minus the gradient.
        update = momentum * velocity - learning_rate * grad if nesterov else velocity
        new_params.append(param + update)
        velocities.append(velocity)
    return new_params, {**state, "step": state["step"] + 1, "velocity": velocities}


def momentum_step(
    params: Sequence[np.ndarray],
    grads: Sequence[np.ndarray],
    state: State,
    *,
    learning_rate: float = 0.01,
    momentum: float = 0.9,
) -> tuple[Params, State]:
    """SGD with momentum (``keras.optimizers.SGD(momentum=...)``)."""
    return _velocity_step(
        _as_arrays(params),
        _as_arrays(grads),
        state,
        learning_rate=learning_rate,
        momentum=momentum,
        nesterov=False,
    )


def nesterov_step(
    params: Sequence[np.ndarray],
    grads: Sequence[np.ndarray],
    state: State,
    *,
    learning_rate: float = 0.01,
    momentum: float = 0.9,
) -> tuple[Params, State]:
    """SGD with Nesterov momentum (``keras.optimizers.SGD(momentum=..., nesterov=True)``)."""
    return _velocity_step(
        _as_arrays(params),
        _as_arrays(grads),
        state,
        learning_rate=learning_rate,
        momentum=momentum,
        nesterov=True,
    )


def adam_step(
    params: Sequence[np.ndarray],
    grads: Sequence[np.ndarray],
    state: State,
    *,
    learning_rate: float = 0.001,
    beta_1: float = 0.9,
    beta_2: float = 0.999,
    epsilon: float = 1e-7,
) -> tuple[Params, State]:
    """Adam with bias correction, exactly as ``keras.optimizers.Adam`` (no AMSGrad)."""
    params, grads = _as_arrays(params), _as_arrays(grads)
    _check_matching(params, grads)
    step = state["step"] + 1
    step_size = learning_rate * np.sqrt(1.0 - beta_2**step) / (1.0 - beta_1**step)
    new_params, firsts, seconds = [], [], []
    for param, grad, first, second in zip(params, grads, state["m"], state["v"], strict=True):
        first = first + (grad - first) * (1.0 - beta_1)
        second = second + (grad**2 - second) * (1.0 - beta_2)
        new_params.append(param - step_size * first / (np.sqrt(second) + epsilon))
        firsts.append(first)
        seconds.append(second)
    return new_params, {**state, "step": step, "m": firsts, "v": seconds}


STEP_FUNCTIONS: dict[str, Callable[..., tuple[Params, State]]] = {
    "sgd": sgd_step,
    "momentum": momentum_step,
    "nesterov": nesterov_step,
    "adam": adam_step,
}


def minimize(
    gradient: Callable[[Params], Params],
    params: Sequence[np.ndarray],
    *,
    optimizer: str,
    steps: int,
    **hyperparameters: float,
) -> list[Params]:
    """Run an optimizer for a number of steps and return the whole trajectory.

    Args:
        gradient: Maps the current parameters to their gradients.
        params: Starting parameters.
        optimizer: ``sgd``, ``momentum``, ``nesterov`` or ``adam``.
        steps: How many updates to make; stops early once a parameter is no longer finite.
        **hyperparameters: Forwarded to the step function (``learning_rate``, ``momentum``, ...).

    Returns:
        The parameters before the first step and after every step (``steps + 1`` entries, fewer
        when the run diverged).

    Raises:
        UserInputError: For an unknown optimizer name.
    """
    state = init_state(optimizer, params)
    step_function = STEP_FUNCTIONS[optimizer]
    current = _as_arrays(params)
    trajectory = [current]
    for _ in range(steps):
        current, state = step_function(current, gradient(current), state, **hyperparameters)
        trajectory.append(current)
        if not all(np.all(np.isfinite(param)) for param in current):
            break
    return trajectory
