"""``gradcam`` and ``gradcam++``: class activation maps from a convolution layer's gradients.

Grad-CAM (Selvaraju et al. 2017): with ``A`` a layer's activations ``(h, w, k)`` and ``y`` the
explained class's score, each channel is weighted by the spatial mean of ``dy/dA`` and the map
is ``ReLU(sum_k weight_k A_k)``, resized (bilinear) to the image. Grad-CAM++ (Chattopadhay et
al. 2018) weights channels by positive gradients with per-location coefficients, which covers
several instances of a class better; the closed form used is the common one (as in
pytorch-grad-cam) that needs first derivatives only.

The layer defaults to the last convolution's activated output (after its batch norm and
activation, before pooling), found inside a nested pretrained network too; ``layer`` chooses
another. The score is the class's logit when the model ends in a sigmoid or softmax Dense
(Keras' Grad-CAM example removes the last activation for the same reason: probabilities
saturate); the details say which. Grad-CAM needs no background and is not additive: its map
is a localisation, in arbitrary units, not a share of the prediction.

Cost: one forward pass to the layer and one gradient of the small head after it, per batch.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from deepspark.data.image_inputs import chunk_rows, chunks
from deepspark.explain.images.base import Attribution, ImageBatch, ImageExplainer
from deepspark.explain.images.options import check_options

_EPSILON = 1e-7


class GradCamExplainer(ImageExplainer):
    """Grad-CAM.

    Options:
        layer: The layer whose activations are weighted (default: the last convolution's
            activated output).
    """

    method = "gradcam"
    additive = False
    needs_background = False
    plus: ClassVar[bool] = False

    def validate(self) -> None:
        super().validate()
        check_options(self.method, self.options, ("layer",))
        self.split()

    def split(self):
        """The model cut after the layer (built once)."""
        if "split" not in self._cache:
            from deepspark.explain.images.network import split_at_layer

            self._cache["split"] = split_at_layer(
                self.model.keras_model, self.options.get("layer"), binary=self.binary
            )
        return self._cache["split"]

    def attribute(self, batch: ImageBatch) -> Attribution:
        from deepspark.runtime import forward, input_gradients

        split = self.split()
        count, height, width = batch.images.shape[:3]
        maps = np.zeros((count, height, width), dtype=np.float32)
        rows = chunk_rows(self.model.schema.image)
        for part in chunks(count, rows):
            activations = forward(split.features, batch.images[part], batch_rows=rows)
            gradients = input_gradients(split.head, activations, batch.columns[part])
            cams = class_activation_maps(activations, gradients, plus=self.plus)
            maps[part] = resize_maps(cams, (height, width))
        details = {
            "layer": split.layer,
            "layer_inside": "/".join(split.path) or None,
            "layer_shape": list(split.features.outputs[0].shape[1:]),
            "score": split.scores,
        }
        return Attribution(maps, np.full(count, np.nan), details=details)


class GradCamPlusPlusExplainer(GradCamExplainer):
    """Grad-CAM++ (same options as Grad-CAM)."""

    method = "gradcam++"
    plus = True


def class_activation_maps(activations, gradients, *, plus: bool = False) -> np.ndarray:
    """``(n, h, w)`` maps from activations and gradients ``(n, h, w, k)``."""
    activations = np.asarray(activations, dtype=np.float64)
    gradients = np.asarray(gradients, dtype=np.float64)
    if plus:
        squared = gradients**2
        total = activations.sum(axis=(1, 2), keepdims=True)
        coefficients = squared / (2.0 * squared + total * squared * gradients + _EPSILON)
        coefficients = np.where(gradients != 0.0, coefficients, 0.0)
        weights = (coefficients * np.maximum(gradients, 0.0)).sum(axis=(1, 2))
    else:
        weights = gradients.mean(axis=(1, 2))
    return np.maximum(np.einsum("nhwk,nk->nhw", activations, weights), 0.0)


def resize_maps(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of ``(n, h, w)`` maps to ``size`` (height, width), pixel centres aligned."""
    from PIL import Image

    height, width = size
    if maps.shape[1:] == (height, width):
        return maps.astype(np.float32)
    resized = [
        np.asarray(
            Image.fromarray(single.astype(np.float32), mode="F").resize(
                (width, height), Image.Resampling.BILINEAR
            )
        )
        for single in maps
    ]
    return np.stack(resized) if resized else np.zeros((0, height, width), np.float32)
