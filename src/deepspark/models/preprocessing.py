"""Preprocessing learned on the training split, carried inside the Keras model.

``NumericPreprocessor`` imputes missing values, log-scales heavy-tailed non-negative columns,
standardizes, and appends missing-value indicators. ``Denormalize`` puts a regression output back
in target units. Both are registered so ``.keras`` files load with ``safe_mode=True``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from deepspark._backend import import_keras

keras = import_keras()
ops = keras.ops

_SKEW_FOR_LOG = 2.0


@dataclasses.dataclass(frozen=True)
class NumericStats:
    """Per-column statistics of the numeric inputs, learned on the training split."""

    mean: tuple[float, ...]
    scale: tuple[float, ...]
    log_columns: tuple[int, ...]
    missing_columns: tuple[int, ...]


def fit_numeric_stats(numeric: np.ndarray) -> NumericStats:
    """Learn imputation, log scaling and standardization from a float array with NaNs.

    A column is log-scaled (``log1p``) when it is non-negative and its skewness exceeds 2: counts
    such as rooms or population, where ratios matter more than differences.
    """
    values = numeric.astype(np.float64)
    missing = np.isnan(values)
    log_columns = []
    for column in range(values.shape[1]):
        present = values[~missing[:, column], column]
        if present.size > 2 and present.min() >= 0 and _skewness(present) > _SKEW_FOR_LOG:
            log_columns.append(column)
    transformed = values.copy()
    transformed[:, log_columns] = np.log1p(transformed[:, log_columns])
    mean = np.nanmean(transformed, axis=0)
    scale = np.nanstd(transformed, axis=0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    return NumericStats(
        mean=tuple(float(value) for value in mean),
        scale=tuple(float(value) for value in scale),
        log_columns=tuple(log_columns),
        missing_columns=tuple(int(column) for column in np.flatnonzero(missing.any(axis=0))),
    )


def _skewness(values: np.ndarray) -> float:
    spread = values.std()
    if spread < 1e-12:
        return 0.0
    return float(np.mean(((values - values.mean()) / spread) ** 3))


@keras.saving.register_keras_serializable(package="deepspark")
class NumericPreprocessor(keras.layers.Layer):
    """Impute, log-scale, standardize, and append missing indicators to numeric inputs.

    Args:
        mean: Per-column mean after log scaling, used for imputation and centring.
        scale: Per-column standard deviation after log scaling.
        log_columns: Indices of columns that get ``log1p`` (negative values clip to 0 first).
        missing_columns: Indices of columns that had missing values in training; each gets an
            indicator output (1.0 where the input was missing).
    """

    def __init__(self, mean, scale, log_columns=(), missing_columns=(), **kwargs):
        super().__init__(**kwargs)
        self.mean = [float(value) for value in mean]
        self.scale = [float(value) for value in scale]
        self.log_columns = [int(value) for value in log_columns]
        self.missing_columns = [int(value) for value in missing_columns]
        log_mask = np.zeros(len(self.mean), dtype=bool)
        log_mask[self.log_columns] = True
        self._log_mask = log_mask

    def call(self, inputs):
        values = ops.cast(inputs, "float32")
        missing = ops.isnan(values)
        values = ops.where(missing, ops.zeros_like(values), values)
        if self.log_columns:
            logged = ops.log1p(ops.maximum(values, 0.0))
            values = ops.where(ops.convert_to_tensor(self._log_mask), logged, values)
        standardized = (values - ops.convert_to_tensor(np.array(self.mean, "float32"))) / (
            ops.convert_to_tensor(np.array(self.scale, "float32"))
        )
        standardized = ops.where(missing, ops.zeros_like(standardized), standardized)
        if not self.missing_columns:
            return standardized
        indicators = ops.take(ops.cast(missing, "float32"), self.missing_columns, axis=1)
        return ops.concatenate([standardized, indicators], axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], len(self.mean) + len(self.missing_columns))

    def get_config(self):
        return {
            **super().get_config(),
            "mean": self.mean,
            "scale": self.scale,
            "log_columns": self.log_columns,
            "missing_columns": self.missing_columns,
        }


@keras.saving.register_keras_serializable(package="deepspark")
class Denormalize(keras.layers.Layer):
    """``outputs * scale + center``: a standardized regression output back in target units."""

    def __init__(self, center: float, scale: float, **kwargs):
        super().__init__(**kwargs)
        self.center = float(center)
        self.scale = float(scale)

    def call(self, inputs):
        return inputs * self.scale + self.center

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "center": self.center, "scale": self.scale}


@keras.saving.register_keras_serializable(package="deepspark")
class StandardizedLoss(keras.losses.Loss):
    """A regression loss computed on standardized values while the model outputs target units.

    The gradients equal those of training on a standardized target, so learning rates behave the
    same whatever the target's scale, and metrics (RMSE, MAE) still read in target units.

    Args:
        base: ``mse``, ``mae`` or ``huber``.
        center: Target mean on the training split.
        scale: Target standard deviation on the training split.
    """

    def __init__(self, base: str = "mse", center: float = 0.0, scale: float = 1.0, **kwargs):
        kwargs.setdefault("name", f"standardized_{base}")
        super().__init__(**kwargs)
        self.base = base
        self.center = float(center)
        self.scale = float(scale)
        self._base_loss = {
            "mse": keras.losses.mean_squared_error,
            "mae": keras.losses.mean_absolute_error,
            "huber": keras.losses.huber,
        }[base]

    def call(self, y_true, y_pred):
        true = (ops.cast(y_true, "float32") - self.center) / self.scale
        pred = (ops.cast(y_pred, "float32") - self.center) / self.scale
        return self._base_loss(true, pred)

    def get_config(self):
        return {
            **super().get_config(),
            "base": self.base,
            "center": self.center,
            "scale": self.scale,
        }


#: How each keras.applications family scales its input (``preprocess_input``'s modes):
#: ``tf`` to [-1, 1]; ``torch`` to [0, 1] then ImageNet mean / std; ``caffe`` RGB -> BGR then
#: minus the ImageNet mean (0-255 range); ``none``: the network scales its own input.
PREPROCESS_MODES = ("tf", "torch", "caffe", "none")
_IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
_IMAGENET_STD_RGB = (0.229, 0.224, 0.225)
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@keras.saving.register_keras_serializable(package="deepspark")
class ImagenetPreprocess(keras.layers.Layer):
    """A pretrained network's ``preprocess_input`` as a layer: uint8 RGB pixels in, the
    network's input scaling out. Inside the model, so no caller can apply the wrong mode.

    Args:
        mode: One of ``PREPROCESS_MODES`` (see ``deepspark.models.applications``).
    """

    def __init__(self, mode: str, **kwargs):
        super().__init__(**kwargs)
        if mode not in PREPROCESS_MODES:
            raise ValueError(f"mode must be one of {PREPROCESS_MODES}. Received: mode={mode!r}")
        self.mode = mode

    def call(self, inputs):
        pixels = ops.cast(inputs, "float32")
        if self.mode == "tf":
            return pixels / 127.5 - 1.0
        if self.mode == "torch":
            mean = ops.convert_to_tensor(_IMAGENET_MEAN_RGB, "float32")
            std = ops.convert_to_tensor(_IMAGENET_STD_RGB, "float32")
            return (pixels / 255.0 - mean) / std
        if self.mode == "caffe":
            mean = ops.convert_to_tensor(_CAFFE_MEAN_BGR, "float32")
            return ops.flip(pixels, axis=-1) - mean
        return pixels

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}
