"""Lesson ``approximation``: one hidden layer fits a wiggly curve better as it gets wider."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from deepspark.fundamentals._plotting import new_figure, save_figure
from deepspark.fundamentals.losses import mse
from deepspark.fundamentals.mlp import fit_mlp, init_mlp, mlp_predict

WIDTHS = (1, 4, 16, 64)
DOMAIN = (-3.0, 3.0)
TRAIN_ROWS = 128
STEPS = 2000
LEARNING_RATE = 0.02
TARGET = "sin(3x) + 0.5 sin(7x)"


def _target(x: np.ndarray) -> np.ndarray:
    return np.sin(3.0 * x) + 0.5 * np.sin(7.0 * x)


def _spread_hidden_units(params: list[np.ndarray], width: int, seed: int) -> list[np.ndarray]:
    """Place each tanh unit's transition somewhere inside the domain, with a random steepness.

    Glorot weights keep every unit nearly linear over [-3, 3], so wide layers start with many
    copies of the same feature and need far more steps; spreading them lets width show its worth
    within a fixed, small budget.
    """
    rng = np.random.default_rng(seed)
    slopes = rng.normal(0.0, 2.0, size=(1, width))
    centres = rng.uniform(*DOMAIN, size=width)
    return [slopes, -slopes[0] * centres, *params[2:]]


def run(output_dir: Path) -> dict[str, Any]:
    """Train a 1-hidden-layer tanh MLP of each width with Adam and measure its error on a grid."""
    x_train = np.linspace(*DOMAIN, TRAIN_ROWS)[:, None]
    x_grid = np.linspace(*DOMAIN, 1001)[:, None]
    y_train, y_grid = _target(x_train), _target(x_grid)
    figures: dict[str, Any] = {
        "target": TARGET,
        "domain": list(DOMAIN),
        "train_rows": TRAIN_ROWS,
        "adam_steps": STEPS,
        "learning_rate": LEARNING_RATE,
        "activation": "tanh",
        "hidden_units": list(WIDTHS),
    }
    predictions, grid_errors, train_errors = {}, [], []
    for width in WIDTHS:
        params = _spread_hidden_units(init_mlp([1, width, 1], seed=0), width, seed=1)
        params, history = fit_mlp(
            params, x_train, y_train, steps=STEPS, learning_rate=LEARNING_RATE
        )
        predictions[width] = mlp_predict(params, x_grid)
        grid_errors.append(mse(y_grid, predictions[width]))
        train_errors.append(mse(y_train, mlp_predict(params, x_train)))
        figures[f"mse_{width}_units"] = grid_errors[-1]
    figures["grid_mse_by_units"] = grid_errors
    figures["train_mse_by_units"] = train_errors
    figures["target_variance"] = float(y_grid.var())
    figures["unexplained_variance_by_units"] = [
        error / float(y_grid.var()) for error in grid_errors
    ]
    figures["error_reduction_1_to_64_units"] = grid_errors[0] / grid_errors[-1]
    figures["plots"] = [
        _plot_fits(output_dir, x_grid, y_grid, predictions),
        _plot_errors(output_dir, grid_errors),
    ]
    return figures


def _plot_fits(
    output_dir: Path, x_grid: np.ndarray, y_grid: np.ndarray, predictions: dict[int, np.ndarray]
) -> str:
    figure, axes = new_figure(rows=2, columns=2, size=(9.0, 6.0))
    for axis, (width, prediction) in zip(axes.ravel(), predictions.items(), strict=True):
        axis.plot(x_grid[:, 0], y_grid[:, 0], color="black", linewidth=1, label="target")
        axis.plot(x_grid[:, 0], prediction[:, 0], label="MLP")
        axis.set_title(f"{width} hidden unit{'s' if width > 1 else ''}")
        axis.legend(fontsize=8)
    return save_figure(figure, output_dir, "approximation_fits.png")


def _plot_errors(output_dir: Path, grid_errors: list[float]) -> str:
    figure, axis = new_figure()
    axis.plot(WIDTHS, grid_errors, "o-")
    axis.set_xscale("log", base=2)
    axis.set_yscale("log")
    axis.set_xlabel("hidden units")
    axis.set_ylabel("MSE on a dense grid")
    return save_figure(figure, output_dir, "approximation_error.png")
