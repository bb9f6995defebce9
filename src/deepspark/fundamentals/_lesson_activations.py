"""Lesson ``activations``: shapes, saturation, zero-centring and dead ReLU units, in numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from deepspark.fundamentals import activations as act
from deepspark.fundamentals._plotting import new_figure, save_figure

PRELU_ALPHA = 0.1
#: Constant biases tried for the dead-unit experiment; -3 is the "bad initialisation" headline.
BIASES = (0.0, -1.0, -2.0, -3.0, -4.0, -5.0)
BAD_BIAS = -3.0


def run(output_dir: Path) -> dict[str, Any]:
    """Plot every activation with its derivative and measure the claims made about them."""
    figures: dict[str, Any] = {}
    figures.update(_saturation())
    figures.update(_zero_centring())
    dead = _dead_units()
    figures.update(dead)
    figures["plots"] = [_plot_functions(output_dir), _plot_dead_units(output_dir, dead)]
    return figures


def _saturation() -> dict[str, float]:
    """Far from 0 sigmoid and tanh have almost no slope: gradients vanish through them."""
    x = np.linspace(-20.0, 20.0, 4001)
    far = np.abs(x) > 10.0
    return {
        "sigmoid_max_gradient": float(act.sigmoid_derivative(x).max()),
        "sigmoid_max_abs_gradient_beyond_10": float(np.abs(act.sigmoid_derivative(x[far])).max()),
        "tanh_max_gradient": float(act.tanh_derivative(x).max()),
        "tanh_max_abs_gradient_beyond_10": float(np.abs(act.tanh_derivative(x[far])).max()),
        "relu_gradient_beyond_10": float(act.relu_derivative(x[x > 10.0]).min()),
    }


def _zero_centring() -> dict[str, float]:
    """On inputs symmetric around 0, sigmoid outputs average 0.5 (all positive), tanh averages 0."""
    x = np.linspace(-5.0, 5.0, 1001)
    return {
        "sigmoid_mean_output_symmetric_inputs": float(act.sigmoid(x).mean()),
        "sigmoid_min_output_symmetric_inputs": float(act.sigmoid(x).min()),
        "tanh_mean_output_symmetric_inputs": float(act.tanh(x).mean()),
    }


def _dead_units(*, rows: int = 256, features: int = 16, units: int = 512) -> dict[str, Any]:
    """A unit is dead when its pre-activation is negative for every row: ReLU passes no gradient.

    Weights follow a unit-variance initialisation; only the bias changes, so the dead fraction
    shows what a large negative bias (a bad initialisation, or a too-large update) does.
    """
    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(rows, features))
    weights = rng.normal(scale=1.0 / np.sqrt(features), size=(features, units))
    dead_fractions: dict[str, list[float]] = {"relu": [], "leaky_relu": [], "elu": []}
    for bias in BIASES:
        pre_activation = inputs @ weights + bias
        for name, fractions in dead_fractions.items():
            gradient = act.ACTIVATIONS[name][1](pre_activation)
            fractions.append(float(np.all(gradient == 0.0, axis=0).mean()))
    bad = inputs @ weights + BAD_BIAS
    leaky_gradient = act.leaky_relu_derivative(bad)
    elu_gradient = act.elu_derivative(bad)
    return {
        "dead_unit_biases": list(BIASES),
        "relu_dead_fraction_by_bias": dead_fractions["relu"],
        "leaky_relu_dead_fraction_by_bias": dead_fractions["leaky_relu"],
        "elu_dead_fraction_by_bias": dead_fractions["elu"],
        "relu_dead_fraction_good_init": dead_fractions["relu"][0],
        "relu_dead_fraction_bad_init": dead_fractions["relu"][BIASES.index(BAD_BIAS)],
        "bad_init_bias": BAD_BIAS,
        "leaky_relu_dead_fraction_bad_init": dead_fractions["leaky_relu"][BIASES.index(BAD_BIAS)],
        "elu_dead_fraction_bad_init": dead_fractions["elu"][BIASES.index(BAD_BIAS)],
        "relu_mean_gradient_bad_init": float(act.relu_derivative(bad).mean()),
        "leaky_relu_min_gradient_bad_init": float(leaky_gradient.min()),
        "elu_min_gradient_bad_init": float(elu_gradient.min()),
        "elu_mean_gradient_bad_init": float(elu_gradient.mean()),
    }


def _plot_functions(output_dir: Path) -> str:
    x = np.linspace(-5.0, 5.0, 401)
    curves = [
        (name, function, derivative) for name, (function, derivative) in act.ACTIVATIONS.items()
    ]
    curves.append(
        (
            f"prelu (alpha={PRELU_ALPHA})",
            lambda v: act.prelu(v, PRELU_ALPHA),
            lambda v: act.prelu_derivative(v, PRELU_ALPHA),
        )
    )
    figure, axes = new_figure(rows=2, columns=3, size=(11.0, 6.5))
    for axis, (name, function, derivative) in zip(axes.ravel(), curves, strict=True):
        axis.plot(x, function(x), label="f(x)")
        axis.plot(x, derivative(x), linestyle="--", label="f'(x)")
        axis.axhline(0.0, color="grey", linewidth=0.5)
        axis.set_title(name)
        axis.legend(loc="upper left", fontsize=8)
    return save_figure(figure, output_dir, "activations.png")


def _plot_dead_units(output_dir: Path, dead: dict[str, Any]) -> str:
    figure, axis = new_figure()
    biases = [str(bias) for bias in dead["dead_unit_biases"]]
    axis.bar(biases, dead["relu_dead_fraction_by_bias"], label="ReLU")
    axis.plot(biases, dead["leaky_relu_dead_fraction_by_bias"], "o-", label="LeakyReLU")
    axis.plot(biases, dead["elu_dead_fraction_by_bias"], "x--", label="ELU")
    axis.set_xlabel("bias at initialisation")
    axis.set_ylabel("fraction of dead units (zero gradient on every row)")
    axis.legend()
    return save_figure(figure, output_dir, "activations_dead_units.png")
