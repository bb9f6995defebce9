"""The shared flow of image explainers: decode, predict, choose the class, attribute.

An image explainer takes the same raw rows as the model (a ``path`` or ``image`` / ``content``
column), so pandas, Spark and the CLI feed it alike. Subclasses implement ``attribute`` on an
``ImageBatch`` (decoded pixels, probabilities, the explained class of each image).
"""

from __future__ import annotations

import abc
import dataclasses
import logging
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from deepspark.data.image_inputs import PATH_COLUMN, decode_rows, image_column
from deepspark.errors import UserInputError
from deepspark.explain.base import IMAGE, Explainer, class_index
from deepspark.explain.images.explanation import ImageExplanation

logger = logging.getLogger(__name__)

_TINY_SPREAD = 1e-12


@dataclasses.dataclass(frozen=True)
class ImageBatch:
    """Decoded images with the model's outputs and the class each one explains.

    Attributes:
        row_ids: Row id of each decoded image.
        sources: File path of each image (``None`` for bytes without one).
        images: uint8 ``(n, height, width, channels)``.
        probabilities: ``(n, classes)``.
        columns: The explained class position of each image.
        bad: ``{"row_id", "source", "error"}`` for each row that did not decode.
    """

    row_ids: np.ndarray
    sources: list
    images: np.ndarray
    probabilities: np.ndarray
    columns: np.ndarray
    bad: list[dict[str, Any]]

    def __len__(self) -> int:
        return len(self.row_ids)

    @property
    def prediction(self) -> np.ndarray:
        return self.probabilities[np.arange(len(self)), self.columns]


@dataclasses.dataclass(frozen=True)
class Attribution:
    """What a method computed for a batch: per-pixel values, the baseline output per image,
    extra per-image numbers and method-level facts."""

    values: np.ndarray
    baseline: np.ndarray
    per_image: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    details: dict[str, Any] = dataclasses.field(default_factory=dict)


class ImageExplainer(Explainer):
    """Explains an image model's predictions pixel by pixel.

    ``background``: decoded background images (uint8, NHWC), or ``None`` for methods with
    ``needs_background = False``. Additive methods measure their additivity error against the
    spread of the explained probability over the background.
    """

    modality: ClassVar[str] = IMAGE

    def __init__(self, model, background, **settings):
        super().__init__(model, background, **settings)
        self._cache: dict[str, Any] = {}

    def validate(self) -> None:
        if not self.model.model_kind.reads_images:
            raise UserInputError(
                f"Method {self.method!r} explains image models and this model takes tables; "
                "use gradient, kernel, permutation or lime. Received: model kind "
                f"{self.model.kind!r}"
            )
        super().validate()

    @property
    def binary(self) -> bool:
        return self.model.schema.task == "binary"

    def explain(self, frame: pd.DataFrame, *, row_ids=None) -> ImageExplanation:
        batch = self.prepare(frame, row_ids)
        result = self.attribute(batch)
        details = {**result.details}
        if batch.bad:
            details["bad_images"] = batch.bad
        scale = self.spread(batch.columns) if self.additive else np.full(len(batch), np.nan)
        labels = self.model.schema.class_labels
        return ImageExplanation(
            method=self.method,
            row_ids=batch.row_ids,
            sources=batch.sources,
            images=batch.images,
            attributions=np.asarray(result.values, dtype=np.float32),
            prediction=batch.prediction,
            predicted_class=[labels[int(c)] for c in np.argmax(batch.probabilities, axis=1)],
            explained_class=[labels[int(column)] for column in batch.columns],
            baseline=np.asarray(result.baseline, dtype=np.float64),
            additive=self.additive,
            additivity_scale=scale,
            per_image=result.per_image,
            details=details,
        )

    @abc.abstractmethod
    def attribute(self, batch: ImageBatch) -> Attribution:
        """Attributions of the batch's images for their explained classes."""

    def prepare(self, frame: pd.DataFrame, row_ids=None) -> ImageBatch:
        """Decode the rows' images (bad ones left out and listed), predict, choose classes."""
        spec = self.model.schema.image
        column = image_column(frame, self.model.schema)
        values = [None if _missing(value) else value for value in frame[column].tolist()]
        ids = np.arange(len(frame)) if row_ids is None else np.asarray(row_ids, dtype=np.int64)
        names = _source_names(frame, column)
        decoded = decode_rows(values, spec)
        bad = [
            {"row_id": int(ids[index]), "source": names[index], "error": reason}
            for index, reason in decoded.errors
        ]
        for item in bad:
            logger.warning(
                "image %s (row %d) left out: %s", item["source"], item["row_id"], item["error"]
            )
        probabilities = self.probabilities(decoded.images)
        return ImageBatch(
            row_ids=ids[decoded.ok],
            sources=[name for name, ok in zip(names, decoded.ok, strict=True) if ok],
            images=decoded.images,
            probabilities=probabilities,
            columns=self._columns(probabilities),
            bad=bad,
        )

    def _columns(self, probabilities: np.ndarray) -> np.ndarray:
        if self.explained_class is not None:
            chosen = class_index(self.model.schema, self.explained_class)
            return np.full(len(probabilities), chosen, dtype=np.int64)
        return np.argmax(probabilities, axis=1).astype(np.int64)

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """``(n, classes)`` class probabilities of uint8 images."""
        from deepspark.models.inference import class_probabilities, predict_arrays

        output = predict_arrays(self.model.keras_model, images)
        return class_probabilities(output, self.model.schema.task)

    def pixel_network(self):
        """The model on float pixels (see ``network.pixel_network``), built once."""
        if "pixels" not in self._cache:
            from deepspark.explain.images.network import pixel_network

            self._cache["pixels"] = pixel_network(self.model.keras_model, binary=self.binary)
        return self._cache["pixels"]

    def pixel_outputs(self, pixels: np.ndarray) -> np.ndarray:
        """Class probabilities of float pixels (masked, blended or perturbed images)."""
        from deepspark.data.image_inputs import chunk_rows
        from deepspark.runtime import forward

        pixels = np.asarray(pixels, dtype=np.float32)
        return forward(self.pixel_network(), pixels, batch_rows=chunk_rows(self.model.schema.image))

    def spread(self, columns: np.ndarray) -> np.ndarray:
        """Per image: the standard deviation of its explained probability over the background
        (1 where the background does not vary)."""
        if "spread" not in self._cache:
            per_class = self.probabilities(self.background).std(axis=0)
            self._cache["spread"] = np.where(per_class > _TINY_SPREAD, per_class, 1.0)
        return self._cache["spread"][np.asarray(columns, dtype=np.int64)]


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _source_names(frame: pd.DataFrame, column: str) -> list:
    """A readable name per row: its path (a ``path`` column, or the image column when it holds
    paths), else ``None``."""
    for name in (PATH_COLUMN, column):
        if name in frame.columns:
            values = frame[name].tolist()
            if all(value is None or isinstance(value, str) for value in values):
                return [value if isinstance(value, str) else None for value in values]
    return [None] * len(frame)
