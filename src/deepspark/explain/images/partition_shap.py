"""``shap``: SHAP's partition explainer with its image masker, on any backend.

``shap.GradientExplainer`` and ``shap.DeepExplainer`` reach into TensorFlow or torch graphs and
break on Keras 3 models (shap #885, #1406); the partition explainer only calls a function, so it
works on the JAX and torch backends alike. Pixels are grouped by SHAP's axis-aligned hierarchy
(``shap.maskers.Image``) and a hidden region takes the mask image's pixels; the values are Owen
values of the explained class's probability, additive by construction:
``sum(values) = p_c(x) - p_c(everything masked)``.

Masks (option ``masker``): ``mean`` (default: the mean of the background images, the
"background of images" SHAP's gradient explainers use), ``black``, or ``blur`` (the image itself
box-blurred over a quarter of its side, like SHAP's ``blur(k, k)`` but without OpenCV).
``max_evals`` is SHAP's budget of model calls per image (its default, 500).
"""

from __future__ import annotations

import numpy as np

from deepspark._optional import require
from deepspark.explain.images.base import Attribution, ImageBatch, ImageExplainer
from deepspark.explain.images.options import check_options, choice, positive_int

MASKERS = ("mean", "black", "blur")
DEFAULT_MAX_EVALS = 500
_BLUR_SHARE = 0.25


class PartitionShapExplainer(ImageExplainer):
    """``shap.PartitionExplainer`` over ``shap.maskers.Image``.

    Options:
        masker: ``mean`` (default), ``black`` or ``blur``.
        max_evals: Model evaluations per image (default SHAP's 500).
        batch_size: Masked images per model call (default SHAP's own choice).
    """

    method = "shap"
    additive = True

    def validate(self) -> None:
        super().validate()
        check_options(self.method, self.options, ("masker", "max_evals", "batch_size"))
        self._masker_name()
        positive_int("max_evals", self.options.get("max_evals", DEFAULT_MAX_EVALS), minimum=3)

    def _masker_name(self) -> str:
        return choice(self.method, "masker", self.options.get("masker", "mean"), MASKERS)

    def attribute(self, batch: ImageBatch) -> Attribution:
        shap = require("shap", feature="'shap' image explanations")
        name = self._masker_name()
        max_evals = positive_int("max_evals", self.options.get("max_evals", DEFAULT_MAX_EVALS))
        batch_size = self.options.get("batch_size", "auto")
        masker = self._masker(shap, batch.images.shape[1:], name)
        values = np.zeros(batch.images.shape, dtype=np.float64)
        baseline = np.zeros(len(batch))
        for position, (row_id, column) in enumerate(zip(batch.row_ids, batch.columns, strict=True)):
            image = batch.images[position].astype(np.float64)
            if name == "blur":
                masker.mask_value = _box_blurred(batch.images[position]).reshape(-1)
            explainer = shap.PartitionExplainer(self._explained(int(column)), masker)
            np.random.seed(self.row_seed(row_id) % 2**32)
            result = explainer(image[None], max_evals=max_evals, batch_size=batch_size, silent=True)
            values[position] = np.asarray(result.values, dtype=np.float64).reshape(image.shape)
            baseline[position] = float(np.asarray(result.base_values).reshape(-1)[0])
        details = {"masker": name, "max_evals": max_evals}
        return Attribution(values, baseline, details=details)

    def _masker(self, shap, shape, name: str):
        if name == "mean":
            mask = self.background.astype(np.float64).mean(axis=0)
        else:
            mask = np.zeros(shape)
        return shap.maskers.Image(mask, shape)

    def _explained(self, column: int):
        def explained_probability(images: np.ndarray) -> np.ndarray:
            return self.pixel_outputs(images)[:, column]

        return explained_probability


def _box_blurred(image: np.ndarray) -> np.ndarray:
    from PIL import Image, ImageFilter

    radius = max(1, int(_BLUR_SHARE * max(image.shape[:2]) / 2))
    channels = [
        np.asarray(
            Image.fromarray(image[..., channel]).filter(ImageFilter.BoxBlur(radius)),
            dtype=np.float64,
        )
        for channel in range(image.shape[-1])
    ]
    return np.stack(channels, axis=-1)
