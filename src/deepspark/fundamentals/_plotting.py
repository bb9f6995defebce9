"""Matplotlib for the lessons, loaded only when a lesson draws, without touching pyplot's state."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any


def new_figure(*, rows: int = 1, columns: int = 1, size: tuple[float, float] = (6.0, 4.0)):
    """A standalone figure and its axes (a 2-D array of them when ``rows * columns > 1``).

    Uses ``matplotlib.figure.Figure`` directly, so nothing is registered with pyplot and an
    interactive session's backend is left alone; the Agg backend is selected only when pyplot has
    not been imported yet.
    """
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=size, layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=rows * columns == 1)
    return figure, axes


def save_figure(figure: Any, output_dir: Path, name: str) -> str:
    """Write ``figure`` as ``output_dir / name`` (PNG) and return that path as a string."""
    path = Path(output_dir) / name
    figure.savefig(path, dpi=90)
    return str(path)
