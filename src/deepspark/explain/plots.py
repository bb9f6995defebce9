"""PNG plots of an ``Explanation``: global importance bar, beeswarm summary, per-row waterfall,
LIME condition bars. Matplotlib figures are made without pyplot, so no global state is touched.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from deepspark.explain.base import Explanation

_POSITIVE, _NEGATIVE = "#d62728", "#1f77b4"
_DPI = 110


def _figure(rows: int):
    from matplotlib.figure import Figure

    return Figure(figsize=(7.5, 1.2 + 0.38 * max(rows, 3)), dpi=_DPI)


def _save(figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path)
    return path


def importance_order(explanation: Explanation) -> list[str]:
    """Features by mean |attribution|, largest first."""
    importance = explanation.attributions.abs().mean(axis=0)
    return list(importance.sort_values(ascending=False).index.map(str))


def importance_bar(explanation: Explanation, path: Path) -> Path:
    """Mean |attribution| per raw column."""
    order = importance_order(explanation)[::-1]
    values = explanation.attributions.abs().mean(axis=0)[order]
    figure = _figure(len(order))
    axes = figure.add_subplot()
    axes.barh(order, values.to_numpy(), color=_NEGATIVE)
    axes.set_xlabel(f"mean |attribution| ({explanation.method})")
    axes.set_title("Global feature importance")
    return _save(figure, path)


def beeswarm(explanation: Explanation, path: Path) -> Path:
    """Every row's attribution per feature, coloured by the feature's value (low blue, high red)."""
    order = importance_order(explanation)[::-1]
    figure = _figure(len(order))
    axes = figure.add_subplot()
    rng = np.random.default_rng(0)
    for position, name in enumerate(order):
        values = explanation.attributions[name].to_numpy(dtype=np.float64)
        colour = _colour_values(explanation.features[name])
        jitter = rng.uniform(-0.25, 0.25, size=len(values))
        axes.scatter(values, position + jitter, c=colour, cmap="coolwarm", vmin=0, vmax=1, s=9)
    axes.set_yticks(range(len(order)), order)
    axes.axvline(0.0, color="grey", linewidth=0.8)
    axes.set_xlabel("attribution (colour: feature value, low → high; categories by level)")
    axes.set_title("Attributions per row")
    return _save(figure, path)


def _colour_values(column: pd.Series) -> np.ndarray:
    numeric = pd.to_numeric(column, errors="coerce")
    if numeric.notna().any() and not (column.notna() & numeric.isna()).any():
        low, high = np.nanmin(numeric), np.nanmax(numeric)
        scaled = (numeric - low) / (high - low) if high > low else numeric * 0 + 0.5
        return scaled.fillna(0.5).to_numpy(dtype=np.float64)
    codes, levels = pd.factorize(column.astype(object), sort=True)
    return np.where(codes >= 0, codes / max(len(levels) - 1, 1), 0.5)


def waterfall(explanation: Explanation, position: int, path: Path) -> Path:
    """From the baseline to the prediction of one row, one bar per feature."""
    attributions = explanation.attributions.iloc[position]
    order = list(attributions.abs().sort_values().index)
    baseline = float(explanation.baseline[position])
    figure = _figure(len(order) + 1)
    axes = figure.add_subplot()
    running = baseline
    for index, name in enumerate(order):
        value = float(attributions[name])
        axes.barh(index, value, left=running, color=_POSITIVE if value >= 0 else _NEGATIVE)
        axes.text(running + value, index, f" {value:+.4g}", va="center", fontsize=8)
        running += value
    features = explanation.features.iloc[position]
    axes.set_yticks(range(len(order)), [f"{name} = {_short(features[name])}" for name in order])
    axes.axvline(baseline, color="grey", linestyle=":", linewidth=1)
    prediction = float(explanation.prediction[position])
    axes.axvline(prediction, color="black", linewidth=1)
    row_id = int(explanation.row_ids[position])
    axes.set_title(f"Row {row_id}: baseline {baseline:.4g} → prediction {prediction:.4g}")
    return _save(figure, path)


def _short(value) -> str:
    if isinstance(value, float | np.floating):
        return "missing" if np.isnan(value) else f"{value:.4g}"
    return "missing" if value is None else str(value)


def lime_bars(conditions: list[tuple[str, float]], row_id: int, path: Path) -> Path:
    """LIME's local-model weights for one row, one bar per condition."""
    ordered = sorted(conditions, key=lambda item: abs(item[1]))
    figure = _figure(len(ordered))
    axes = figure.add_subplot()
    weights = [weight for _, weight in ordered]
    colours = [_POSITIVE if weight >= 0 else _NEGATIVE for weight in weights]
    axes.barh([text for text, _ in ordered], weights, color=colours)
    axes.axvline(0.0, color="grey", linewidth=0.8)
    axes.set_xlabel("LIME local weight")
    axes.set_title(f"LIME explanation of row {row_id}")
    return _save(figure, path)
