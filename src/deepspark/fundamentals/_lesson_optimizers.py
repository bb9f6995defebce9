"""Lesson ``optimizers``: local minima, ill-conditioning and the learning rate, in trajectories."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from deepspark.fundamentals._plotting import new_figure, save_figure
from deepspark.fundamentals.optimizers import minimize

# f(x) = x**4 - 3 x**2 + x: a local minimum near x = 1.13 and the global one near x = -1.30.
LOCAL_MINIMUM_X = 1.1309
GLOBAL_MINIMUM_X = -1.3008
BUMPY_START = 2.0
BUMPY_STEPS = 200
BUMPY_LEARNING_RATE = 0.01

# f(x, y) = (x**2 + CONDITION * y**2) / 2: curvature 100 times larger along y than along x.
CONDITION = 100.0
VALLEY_START = (-4.0, 1.0)
VALLEY_STEPS = 100
VALLEY_TOLERANCE = 1e-2
# Plain SGD diverges along y above 2 / CONDITION; 95 % of that is its best stable choice.
VALLEY_SGD_LEARNING_RATE = 0.95 * 2.0 / CONDITION
VALLEY_ADAM_LEARNING_RATE = 0.1

# f(x) = x**2 with three learning rates: stable above 0, diverges above 1.
RATE_START = 3.0
RATE_STEPS = 50
LEARNING_RATES = {"too_low": 1e-3, "good": 0.1, "too_high": 1.1}


def _bumpy(x: np.ndarray) -> np.ndarray:
    return x**4 - 3.0 * x**2 + x


def _bumpy_gradient(params: list[np.ndarray]) -> list[np.ndarray]:
    x = params[0]
    return [4.0 * x**3 - 6.0 * x + 1.0]


def _valley(point: np.ndarray) -> float:
    return float(0.5 * (point[0] ** 2 + CONDITION * point[1] ** 2))


def _valley_gradient(params: list[np.ndarray]) -> list[np.ndarray]:
    point = params[0]
    return [np.array([point[0], CONDITION * point[1]])]


def run(output_dir: Path) -> dict[str, Any]:
    """Run SGD, momentum, Nesterov and Adam on three small problems and report where they end."""
    bumpy, bumpy_paths = _local_minimum()
    valley, valley_paths = _ill_conditioned()
    rates, rate_losses = _learning_rates()
    figures: dict[str, Any] = {**bumpy, **valley, **rates}
    figures["plots"] = [
        _plot_bumpy(output_dir, bumpy_paths),
        _plot_valley(output_dir, valley_paths),
        _plot_rates(output_dir, rate_losses),
    ]
    return figures


def _local_minimum() -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Same start, same learning rate: momentum carries the ball over the bump, SGD stops in it."""
    runs = {
        "sgd": {},
        "momentum": {"momentum": 0.9},
        "nesterov": {"momentum": 0.9},
        "adam": {"learning_rate": 0.1},
    }
    figures: dict[str, Any] = {
        "bumpy_function": "x**4 - 3*x**2 + x",
        "bumpy_start_x": BUMPY_START,
        "bumpy_steps": BUMPY_STEPS,
        "bumpy_learning_rate": BUMPY_LEARNING_RATE,
        "bumpy_adam_learning_rate": runs["adam"]["learning_rate"],
        "local_minimum_x": LOCAL_MINIMUM_X,
        "global_minimum_x": GLOBAL_MINIMUM_X,
    }
    paths = {}
    for name, hyperparameters in runs.items():
        settings = {"learning_rate": BUMPY_LEARNING_RATE, **hyperparameters}
        trajectory = minimize(
            _bumpy_gradient, [np.array(BUMPY_START)], optimizer=name, steps=BUMPY_STEPS, **settings
        )
        path = np.array([params[0] for params in trajectory])
        paths[name] = path
        figures[f"{name}_final_x"] = float(path[-1])
        figures[f"{name}_final_loss"] = float(_bumpy(path[-1]))
    return figures, paths


def _ill_conditioned() -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """SGD's step is capped by the steep direction, so it zig-zags across y and crawls along x."""
    figures: dict[str, Any] = {
        "valley_condition_number": CONDITION,
        "valley_steps": VALLEY_STEPS,
        "valley_tolerance": VALLEY_TOLERANCE,
    }
    paths = {}
    settings = {"sgd": VALLEY_SGD_LEARNING_RATE, "adam": VALLEY_ADAM_LEARNING_RATE}
    for name, learning_rate in settings.items():
        # Run long enough to see when the tolerance is reached; report the first VALLEY_STEPS.
        trajectory = minimize(
            _valley_gradient,
            [np.array(VALLEY_START)],
            optimizer=name,
            steps=10 * VALLEY_STEPS,
            learning_rate=learning_rate,
        )
        path = np.array([params[0] for params in trajectory])
        losses = np.array([_valley(point) for point in path])
        below = np.flatnonzero(losses < VALLEY_TOLERANCE)
        y_signs = np.sign(path[: VALLEY_STEPS + 1, 1])
        paths[name] = path[: VALLEY_STEPS + 1]
        figures[f"valley_{name}_learning_rate"] = learning_rate
        figures[f"valley_{name}_final_point"] = path[VALLEY_STEPS].tolist()
        figures[f"valley_{name}_final_loss"] = float(losses[VALLEY_STEPS])
        figures[f"valley_{name}_steps_to_tolerance"] = int(below[0]) if below.size else None
        figures[f"valley_{name}_y_sign_changes"] = int(np.sum(y_signs[1:] != y_signs[:-1]))
    return figures, paths


def _learning_rates() -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Too high overshoots further every step; too low barely moves; in between converges."""
    figures: dict[str, Any] = {
        "rate_function": "x**2",
        "rate_start_x": RATE_START,
        "rate_steps": RATE_STEPS,
    }
    curves = {}
    for label, learning_rate in LEARNING_RATES.items():
        trajectory = minimize(
            lambda params: [2.0 * params[0]],
            [np.array(RATE_START)],
            optimizer="sgd",
            steps=RATE_STEPS,
            learning_rate=learning_rate,
        )
        path = np.array([params[0] for params in trajectory])
        curves[label] = path**2
        figures[f"lr_{label}"] = learning_rate
        figures[f"lr_{label}_final_x"] = float(path[-1])
        figures[f"lr_{label}_final_loss"] = float(path[-1] ** 2)
        figures[f"lr_{label}_steps"] = len(path) - 1
        figures[f"lr_{label}_diverged"] = bool(abs(path[-1]) > abs(RATE_START))
    return figures, curves


def _plot_bumpy(output_dir: Path, paths: dict[str, np.ndarray]) -> str:
    x = np.linspace(-2.0, 2.2, 400)
    figure, axis = new_figure(size=(7.0, 4.5))
    axis.plot(x, _bumpy(x), color="black", linewidth=1, label="f(x) = x^4 - 3x^2 + x")
    for name, path in paths.items():
        axis.plot(path, _bumpy(path), ".-", markersize=3, linewidth=0.6, alpha=0.8, label=name)
    axis.set_ylim(-4.5, 6.0)
    axis.set_xlabel("x")
    axis.set_ylabel("f(x)")
    axis.legend(fontsize=8)
    return save_figure(figure, output_dir, "optimizers_local_minimum.png")


def _plot_valley(output_dir: Path, paths: dict[str, np.ndarray]) -> str:
    grid_x, grid_y = np.meshgrid(np.linspace(-4.5, 1.5, 200), np.linspace(-1.2, 1.2, 200))
    heights = 0.5 * (grid_x**2 + CONDITION * grid_y**2)
    figure, axis = new_figure(size=(8.0, 4.0))
    axis.contour(grid_x, grid_y, heights, levels=np.geomspace(0.01, 60.0, 12), linewidths=0.5)
    for name, path in paths.items():
        axis.plot(path[:, 0], path[:, 1], ".-", markersize=3, linewidth=0.7, label=name)
    axis.set_xlabel("x (gentle direction)")
    axis.set_ylabel("y (steep direction)")
    axis.legend()
    return save_figure(figure, output_dir, "optimizers_ill_conditioned.png")


def _plot_rates(output_dir: Path, curves: dict[str, np.ndarray]) -> str:
    figure, axis = new_figure()
    for label, losses in curves.items():
        axis.plot(losses, label=f"{label} (lr={LEARNING_RATES[label]})")
    axis.set_yscale("log")
    axis.set_xlabel("step")
    axis.set_ylabel("loss x^2")
    axis.legend()
    return save_figure(figure, output_dir, "optimizers_learning_rates.png")
