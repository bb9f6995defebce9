"""Heatmaps drawn over images: NumPy and PIL only (hundreds of overlays, no figure per image).

Grad-CAM maps (never negative) use a sequential colour map scaled to the map's maximum. Signed
attributions (integrated gradients, SHAP, LIME) use a diverging map, red for evidence for the
explained class and blue against, scaled to the 99th percentile of ``|value|`` so a few extreme
pixels do not wash out the rest; the colour's opacity follows the magnitude, so pixels that do
not matter show the image itself.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

MIN_PIXELS = 192  # small images are enlarged (nearest neighbour) to be seen
SEQUENTIAL = "jet"
DIVERGING = "RdBu_r"
OPACITY = 0.5  # Grad-CAM: every pixel
SIGNED_OPACITY = 0.8  # signed maps: at the scale's end, fading to 0 where nothing matters
_PERCENTILE = 99.0


def is_signed(heatmaps: np.ndarray) -> bool:
    """Whether the maps hold negative values (signed attributions) or not (Grad-CAM)."""
    return bool(np.nanmin(heatmaps) < 0) if heatmaps.size else False


def scale_of(heatmap: np.ndarray, *, signed: bool) -> float:
    """The magnitude mapped to the colour map's end."""
    magnitude = np.abs(heatmap[np.isfinite(heatmap)])
    if not magnitude.size:
        return 1.0
    value = np.percentile(magnitude, _PERCENTILE) if signed else magnitude.max()
    return float(value) if value > 0 else 1.0


def overlay(image: np.ndarray, heatmap: np.ndarray, *, signed: bool) -> np.ndarray:
    """``image`` (uint8, HxWxC) with ``heatmap`` (HxW) blended over it, uint8 RGB."""
    from matplotlib import colormaps

    rgb = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image
    base = rgb.astype(np.float64) / 255.0
    scale = scale_of(heatmap, signed=signed)
    values = np.nan_to_num(heatmap / scale)
    if signed:
        colours = colormaps[DIVERGING]((np.clip(values, -1, 1) + 1) / 2)[..., :3]
        opacity = SIGNED_OPACITY * np.clip(np.abs(values), 0, 1)[..., None]
    else:
        colours = colormaps[SEQUENTIAL](np.clip(values, 0, 1))[..., :3]
        opacity = np.full((*heatmap.shape, 1), OPACITY)
    blended = (1 - opacity) * base + opacity * colours
    return np.clip(np.rint(blended * 255), 0, 255).astype(np.uint8)


def enlarged(pixels: np.ndarray) -> np.ndarray:
    """Nearest-neighbour enlargement of a small image to at least ``MIN_PIXELS`` a side."""
    factor = max(1, math.ceil(MIN_PIXELS / max(pixels.shape[:2])))
    if factor == 1:
        return pixels
    return np.repeat(np.repeat(pixels, factor, axis=0), factor, axis=1)


def save_png(path: Path, pixels: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(pixels).save(path)


def grid_figure(explanation, path: Path, *, limit: int = 24) -> int:
    """Original and overlay of the first ``limit`` images, with classes; returns how many."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = min(limit, len(explanation))
    heatmaps = explanation.heatmaps()[:count]
    signed = is_signed(heatmaps)
    pairs_per_row = 4
    rows = max(1, math.ceil(count / pairs_per_row))
    figure, axes = plt.subplots(rows, 2 * pairs_per_row, figsize=(16, 2.3 * rows), squeeze=False)
    for axis in axes.ravel():
        axis.axis("off")
    for position in range(count):
        image = explanation.images[position]
        shown = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image
        left = axes[position // pairs_per_row, 2 * (position % pairs_per_row)]
        right = axes[position // pairs_per_row, 2 * (position % pairs_per_row) + 1]
        left.imshow(shown)
        left.set_title(f"row {int(explanation.row_ids[position])}", fontsize=8)
        right.imshow(overlay(image, heatmaps[position], signed=signed))
        right.set_title(_caption(explanation, position), fontsize=8)
    figure.suptitle(f"{explanation.method}: explained class over each image", fontsize=11)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return count


def _caption(explanation, position: int) -> str:
    predicted = explanation.predicted_class[position]
    explained = explanation.explained_class[position]
    probability = explanation.prediction[position]
    if str(predicted) == str(explained):
        return f"{explained} ({probability:.2f})"
    return f"{explained} ({probability:.2f}); predicted {predicted}"
