"""``ImageExplanation``: attributions of images, pixel by pixel, with what the model said."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd

from deepspark.explain.base import BASELINE, EXPLAINED_CLASS, PREDICTION, ROW_ID

SOURCE = "source"
PREDICTED_CLASS = "predicted_class"
ATTRIBUTION_SUM = "attribution_sum"
ADDITIVITY_ERROR = "additivity_error"


@dataclasses.dataclass(frozen=True)
class ImageExplanation:
    """What an image explainer found for some images.

    Attributes:
        method: The method name (``gradcam``, ``gradient``...).
        row_ids: Position of each explained image in the input (bad images are left out).
        sources: Each image's file path (``None`` for bytes without one).
        images: The images as the model saw them: uint8 ``(n, height, width, channels)``.
        attributions: float32, ``(n, height, width)`` (Grad-CAM, LIME) or
            ``(n, height, width, channels)`` (integrated gradients, SHAP): one value per pixel
            (per channel), positive where the pixel raises the explained class's score.
        prediction: The explained class's probability per image.
        predicted_class: The model's predicted class per image.
        explained_class: The class whose score is explained (the predicted one unless chosen).
        baseline: The reference output per image (additive methods: the output at the baseline
            image or the masked image; LIME: its local model's intercept; Grad-CAM: NaN).
        additive: Whether ``attributions`` sum to ``prediction - baseline``.
        additivity_scale: What additivity errors are divided by: the standard deviation of the
            explained class's probability over the background images.
        per_image: Extra numbers per image (integration steps, superpixels...), table columns.
        details: Method-level facts (layer, scores, baseline image, masker...).
    """

    method: str
    row_ids: np.ndarray
    sources: list
    images: np.ndarray
    attributions: np.ndarray
    prediction: np.ndarray
    predicted_class: list
    explained_class: list
    baseline: np.ndarray
    additive: bool
    additivity_scale: np.ndarray
    per_image: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    details: dict[str, Any] = dataclasses.field(default_factory=dict)

    kind = "image"

    def __len__(self) -> int:
        return len(self.row_ids)

    def heatmaps(self) -> np.ndarray:
        """``(n, height, width)`` float64: the attributions summed over channels."""
        values = np.asarray(self.attributions, dtype=np.float64)
        return values.sum(axis=-1) if values.ndim == SPATIAL_WITH_CHANNELS else values

    def attribution_sums(self) -> np.ndarray:
        return self.heatmaps().reshape(len(self), -1).sum(axis=1)

    def additivity_errors(self) -> np.ndarray:
        """Per image: ``|sum(attributions) - (prediction - baseline)| / additivity_scale``."""
        gap = np.abs(self.attribution_sums() - (self.prediction - self.baseline))
        return gap / self.additivity_scale

    @property
    def max_additivity_error(self) -> float | None:
        """The largest relative additivity error, or ``None`` for a method that promises none."""
        if not self.additive or not len(self):
            return None
        return float(self.additivity_errors().max())

    def table(self) -> pd.DataFrame:
        """One row per image: row id, source, predicted and explained class, the explained
        probability, baseline, the attributions' sum (and the additivity error)."""
        frame = pd.DataFrame(
            {
                ROW_ID: self.row_ids.astype(np.int64),
                SOURCE: pd.Series(self.sources, dtype=object),
                PREDICTED_CLASS: [str(label) for label in self.predicted_class],
                EXPLAINED_CLASS: [str(label) for label in self.explained_class],
                PREDICTION: self.prediction.astype(np.float64),
                BASELINE: self.baseline.astype(np.float64),
                ATTRIBUTION_SUM: self.attribution_sums(),
            }
        )
        if self.additive:
            frame[ADDITIVITY_ERROR] = self.additivity_errors()
        for name, values in self.per_image.items():
            frame[name] = np.asarray(values)
        return frame


SPATIAL_WITH_CHANNELS = 4  # (n, height, width, channels)


def concat_image_explanations(parts: list[ImageExplanation]) -> ImageExplanation:
    """Join explanations of disjoint image sets (same method and model), ordered by row id."""
    first = parts[0]
    row_ids = np.concatenate([part.row_ids for part in parts])
    order = np.argsort(row_ids, kind="stable")

    def stacked(name: str) -> np.ndarray:
        return np.concatenate([getattr(part, name) for part in parts])[order]

    def listed(name: str) -> list:
        values = [value for part in parts for value in getattr(part, name)]
        return [values[position] for position in order]

    per_image = {
        name: np.concatenate([part.per_image[name] for part in parts])[order]
        for name in first.per_image
    }
    details: dict[str, Any] = {}
    for part in parts:
        for key, value in part.details.items():
            earlier = details.get(key)
            details[key] = earlier + value if isinstance(earlier, list) else value
    return dataclasses.replace(
        first,
        row_ids=row_ids[order],
        sources=listed("sources"),
        images=stacked("images"),
        attributions=stacked("attributions"),
        prediction=stacked("prediction"),
        predicted_class=listed("predicted_class"),
        explained_class=listed("explained_class"),
        baseline=stacked("baseline"),
        additivity_scale=stacked("additivity_scale"),
        per_image=per_image,
        details=details,
    )
