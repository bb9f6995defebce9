"""Lesson ``splits``: choosing a hyperparameter on the test set makes the test score optimistic.

Each repeat draws a small regression problem (``sin(3x)`` plus noise), fits ridge regressions on
Legendre features for a grid of penalties on the training rows, and picks a penalty two ways:

- on the **test** set, then reports that same test score (the mistake);
- on a separate **validation** set, then reports the untouched test score (the fix).

A large fresh holdout from the same distribution gives each chosen model's true error. The bias of
a strategy is ``mean(reported score) - mean(fresh score)``; for an error (MSE) a negative bias means
the reported number looks better than the model really is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from deepspark.fundamentals._plotting import new_figure, save_figure
from deepspark.fundamentals.losses import mse

REPEATS = 400
TRAIN_ROWS = 40
SELECTION_ROWS = 20  # rows in the validation set and in the test set
FRESH_ROWS = 2000
DEGREE = 8
NOISE = 0.3
PENALTIES = np.logspace(-4.0, 1.0, 21)


def _draw(rng: np.random.Generator, rows: int) -> tuple[np.ndarray, np.ndarray]:
    x = rng.uniform(-1.0, 1.0, size=rows)
    return np.polynomial.legendre.legvander(x, DEGREE), np.sin(3.0 * x) + rng.normal(0, NOISE, rows)


def _ridge_fits(features: np.ndarray, targets: np.ndarray) -> list[np.ndarray]:
    gram = features.T @ features
    identity = np.eye(features.shape[1])
    return [
        np.linalg.solve(gram + penalty * identity, features.T @ targets) for penalty in PENALTIES
    ]


def _one_repeat(seed: int) -> dict[str, tuple[float, float, float]]:
    """``{strategy: (reported score, fresh score, chosen penalty)}`` for one random problem."""
    rng = np.random.default_rng(seed)
    train, validation, test, fresh = (
        _draw(rng, rows) for rows in (TRAIN_ROWS, SELECTION_ROWS, SELECTION_ROWS, FRESH_ROWS)
    )
    fits = _ridge_fits(*train)
    test_scores = [mse(test[1], test[0] @ weights) for weights in fits]
    validation_scores = [mse(validation[1], validation[0] @ weights) for weights in fits]
    results = {}
    for strategy, selection_scores in (("test", test_scores), ("validation", validation_scores)):
        chosen = int(np.argmin(selection_scores))
        fresh_score = mse(fresh[1], fresh[0] @ fits[chosen])
        results[strategy] = (test_scores[chosen], fresh_score, float(PENALTIES[chosen]))
    return results


def run(output_dir: Path) -> dict[str, Any]:
    """Repeat both selection strategies over seeds and measure how optimistic each one is."""
    outcomes = [_one_repeat(seed) for seed in range(REPEATS)]
    figures: dict[str, Any] = {
        "repeats": REPEATS,
        "train_rows": TRAIN_ROWS,
        "validation_rows": SELECTION_ROWS,
        "test_rows": SELECTION_ROWS,
        "fresh_rows": FRESH_ROWS,
        "penalties_tried": len(PENALTIES),
        "score": "mse",
        "noise_floor_mse": NOISE**2,
    }
    gaps = {}
    for strategy in ("test", "validation"):
        reported, fresh, penalty = (
            np.array(values)
            for values in zip(*(outcome[strategy] for outcome in outcomes), strict=True)
        )
        gaps[strategy] = reported - fresh
        prefix = f"{strategy}_selected"
        figures[f"{prefix}_mean_reported_mse"] = float(reported.mean())
        figures[f"{prefix}_mean_fresh_mse"] = float(fresh.mean())
        figures[f"{prefix}_bias"] = float(reported.mean() - fresh.mean())
        figures[f"{prefix}_bias_standard_error"] = float(
            gaps[strategy].std(ddof=1) / np.sqrt(REPEATS)
        )
        figures[f"{prefix}_median_penalty"] = float(np.median(penalty))
        figures[f"{prefix}_share_optimistic"] = float(np.mean(gaps[strategy] < 0))
    figures["plots"] = [_plot_gaps(output_dir, gaps)]
    return figures


def _plot_gaps(output_dir: Path, gaps: dict[str, np.ndarray]) -> str:
    figure, axis = new_figure()
    edges = np.linspace(-0.15, 0.15, 41)
    for strategy, gap in gaps.items():
        axis.hist(
            np.clip(gap, edges[0], edges[-1]),
            bins=edges,
            alpha=0.5,
            label=f"selected on {strategy}: mean {gap.mean():+.4f}",
        )
    axis.axvline(0.0, color="black", linewidth=1)
    axis.set_xlabel("reported test MSE - fresh-holdout MSE (negative = optimistic)")
    axis.set_ylabel("repeats")
    axis.legend()
    return save_figure(figure, output_dir, "splits_selection_bias.png")
