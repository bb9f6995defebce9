"""Each NumPy optimizer step equals keras.optimizers.SGD / Adam, for one and for several steps."""

from __future__ import annotations

import numpy as np
import pytest

from deepspark.errors import UserInputError
from deepspark.fundamentals import optimizers
from tests.conftest import float64_keras

keras = pytest.importorskip("keras")

SHAPES = [(3, 2), (2,)]

CASES = [
    (
        "sgd",
        optimizers.sgd_step,
        {"learning_rate": 0.1},
        lambda: keras.optimizers.SGD(learning_rate=0.1),
    ),
    (
        "momentum",
        optimizers.momentum_step,
        {"learning_rate": 0.05, "momentum": 0.9},
        lambda: keras.optimizers.SGD(learning_rate=0.05, momentum=0.9),
    ),
    (
        "nesterov",
        optimizers.nesterov_step,
        {"learning_rate": 0.05, "momentum": 0.8},
        lambda: keras.optimizers.SGD(learning_rate=0.05, momentum=0.8, nesterov=True),
    ),
    ("adam", optimizers.adam_step, {}, lambda: keras.optimizers.Adam()),
    (
        "adam-custom",
        optimizers.adam_step,
        {"learning_rate": 0.02, "beta_1": 0.8, "beta_2": 0.99, "epsilon": 1e-3},
        lambda: keras.optimizers.Adam(learning_rate=0.02, beta_1=0.8, beta_2=0.99, epsilon=1e-3),
    ),
]


def gradient_sequence(steps: int) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(7)
    # Small gradients too, so Adam's epsilon and bias correction both matter.
    return [
        [rng.normal(scale=10.0 ** -(step % 4), size=shape) for shape in SHAPES]
        for step in range(steps)
    ]


def keras_trajectory(make_optimizer, params, gradients) -> list[list[np.ndarray]]:
    with float64_keras():
        variables = [keras.Variable(param, dtype="float64") for param in params]
        optimizer = make_optimizer()
        trajectory = []
        for grads in gradients:
            optimizer.apply(
                [keras.ops.convert_to_tensor(grad, dtype="float64") for grad in grads], variables
            )
            trajectory.append([keras.ops.convert_to_numpy(variable) for variable in variables])
    return trajectory


@pytest.mark.parametrize("steps", [1, 6], ids=["one-step", "six-steps"])
@pytest.mark.parametrize(
    ("name", "step_function", "hyperparameters", "make_optimizer"),
    CASES,
    ids=[case[0] for case in CASES],
)
def test_step_matches_keras(name, step_function, hyperparameters, make_optimizer, steps):
    rng = np.random.default_rng(3)
    params = [rng.normal(size=shape) for shape in SHAPES]
    gradients = gradient_sequence(steps)
    expected = keras_trajectory(make_optimizer, params, gradients)
    state = optimizers.init_state(name.split("-")[0], params)
    for grads, keras_params in zip(gradients, expected, strict=True):
        params, state = step_function(params, grads, state, **hyperparameters)
        for ours, theirs in zip(params, keras_params, strict=True):
            np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6)
    assert state["step"] == steps


def test_steps_do_not_modify_their_inputs():
    params, grads = [np.ones(3)], [np.full(3, 0.5)]
    state = optimizers.init_state("adam", params)
    optimizers.adam_step(params, grads, state)
    np.testing.assert_array_equal(params[0], np.ones(3))
    assert state["step"] == 0 and not state["m"][0].any()


def test_minimize_stops_when_parameters_blow_up():
    with np.errstate(over="ignore"):
        trajectory = optimizers.minimize(
            lambda params: [params[0] ** 3],
            [np.array(10.0)],
            optimizer="sgd",
            steps=50,
            learning_rate=1.0,
        )
    assert len(trajectory) < 51
    assert not np.isfinite(trajectory[-1][0])


def test_unknown_optimizer_is_a_user_error():
    with pytest.raises(
        UserInputError,
        match=r"Unknown optimizer; use one of sgd, momentum, "
        r"nesterov, adam\. Received: optimizer='rmsprop'",
    ):
        optimizers.init_state("rmsprop", [np.zeros(2)])


def test_mismatched_gradients_are_a_user_error():
    with pytest.raises(UserInputError, match="one array per parameter"):
        optimizers.sgd_step([np.zeros(2)], [np.zeros(3)], {"step": 0})
