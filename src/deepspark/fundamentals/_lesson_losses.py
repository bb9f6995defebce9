"""Lesson ``losses``: "better off by 2 lbs than by 20" -- how outliers dominate MSE but not MAE."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from deepspark.fundamentals import losses
from deepspark.fundamentals._plotting import new_figure, save_figure

ROWS = 50
OUTLIERS = 5
TYPICAL_MISS_LBS = 2.0
OUTLIER_MISS_LBS = 20.0


def _weights_and_predictions() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Body weights (lbs) and predictions that miss by about 2 lbs, except a few 20-lb misses."""
    rng = np.random.default_rng(0)
    y_true = rng.normal(170.0, 15.0, size=ROWS)
    misses = rng.normal(0.0, TYPICAL_MISS_LBS, size=ROWS)
    outlier = np.zeros(ROWS, dtype=bool)
    outlier[rng.choice(ROWS, size=OUTLIERS, replace=False)] = True
    misses[outlier] = OUTLIER_MISS_LBS
    return y_true, y_true + misses, outlier


def run(output_dir: Path) -> dict[str, Any]:
    """Score one set of predictions with MSE, RMSE and MAE and attribute each loss to its rows."""
    y_true, y_pred, outlier = _weights_and_predictions()
    squared = losses.squared_error(y_true, y_pred)
    absolute = losses.absolute_error(y_true, y_pred)
    errors = losses.error(y_true, y_pred)
    figures: dict[str, Any] = {
        "rows": ROWS,
        "outlier_rows": OUTLIERS,
        "outlier_row_share": OUTLIERS / ROWS,
        "squared_cost_20_vs_2_lbs": OUTLIER_MISS_LBS**2 / TYPICAL_MISS_LBS**2,
        "absolute_cost_20_vs_2_lbs": OUTLIER_MISS_LBS / TYPICAL_MISS_LBS,
        "mse": losses.mse(y_true, y_pred),
        "rmse": losses.rmse(y_true, y_pred),
        "mae": losses.mae(y_true, y_pred),
        "sse": losses.sse(y_true, y_pred),
        "mse_without_outliers": losses.mse(y_true[~outlier], y_pred[~outlier]),
        "rmse_without_outliers": losses.rmse(y_true[~outlier], y_pred[~outlier]),
        "mae_without_outliers": losses.mae(y_true[~outlier], y_pred[~outlier]),
        "outlier_share_of_squared_loss": float(squared[outlier].sum() / squared.sum()),
        "outlier_share_of_absolute_loss": float(absolute[outlier].sum() / absolute.sum()),
        # The constant correction each loss would apply to every prediction: the mean error
        # minimises squared error, the median minimises absolute error.
        "mse_best_constant_correction": float(-errors.mean()),
        "mae_best_constant_correction": float(-np.median(errors)),
    }
    figures["rmse_inflation_from_outliers"] = figures["rmse"] / figures["rmse_without_outliers"]
    figures["mae_inflation_from_outliers"] = figures["mae"] / figures["mae_without_outliers"]
    figures["plots"] = [
        _plot_loss_curves(output_dir),
        _plot_contributions(output_dir, squared, absolute, outlier),
    ]
    return figures


def _plot_loss_curves(output_dir: Path) -> str:
    miss = np.linspace(-25.0, 25.0, 501)
    zeros = np.zeros_like(miss)
    figure, axis = new_figure()
    axis.plot(miss, losses.squared_error(zeros, miss), label="squared error")
    axis.plot(miss, losses.absolute_error(zeros, miss), label="absolute error")
    for value in (TYPICAL_MISS_LBS, OUTLIER_MISS_LBS):
        axis.axvline(value, color="grey", linestyle=":", linewidth=1)
    axis.set_yscale("symlog")
    axis.set_xlabel("prediction error (lbs)")
    axis.set_ylabel("loss of one row")
    axis.legend()
    return save_figure(figure, output_dir, "losses_curves.png")


def _plot_contributions(
    output_dir: Path, squared: np.ndarray, absolute: np.ndarray, outlier: np.ndarray
) -> str:
    figure, axes = new_figure(rows=1, columns=2, size=(10.0, 4.0))
    rows = np.arange(ROWS)
    for axis, values, name in zip(axes[0], (squared, absolute), ("MSE", "MAE"), strict=True):
        shares = values / values.sum()
        axis.bar(rows[~outlier], shares[~outlier], label="2-lb misses")
        axis.bar(rows[outlier], shares[outlier], color="tab:red", label="20-lb misses")
        axis.set_title(f"{name}: outliers carry {shares[outlier].sum():.0%} of the loss")
        axis.set_xlabel("row")
        axis.set_ylabel("share of the loss")
        axis.legend()
    return save_figure(figure, output_dir, "losses_contributions.png")
