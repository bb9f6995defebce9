"""Linear and logistic (softmax) regression, and their coefficients in the raw columns' units.

``build_linear`` is the ``linear`` builder: raw columns in, the same in-model preprocessing as the
MLP (imputation, standardization, missing-value flags, one-hot categories) but no log scaling,
then one dense layer to the task's output (a number, P(positive) or class probabilities).

``linear_coefficients`` reads the fitted weights of any deepspark model that is affine from its
inputs to the output's pre-activation (``linear``, or an ``mlp`` with ``activation="linear"`` and
no batch normalization) and undoes the in-model scaling, so that
``prediction = intercept + sum(coefficient * raw value)`` (regression), or the same sum is the
logit of P(positive) (binary) or of each class (multiclass). A missing number counts as its
training mean plus the ``column=<missing>`` coefficient (the model imputes the mean and adds a
missing-value flag); a category is 1 for its ``column=value`` coefficient, 0 for the others.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import numpy as np

from deepspark._backend import import_keras
from deepspark.config import TrainConfig
from deepspark.data.encoding import FIRST_LEVEL_CODE, MISSING_CODE, UNSEEN_CODE
from deepspark.data.schema import FeatureSchema
from deepspark.models.mlp import encoded_features, task_head
from deepspark.models.preprocessing import NumericStats

keras = import_keras()

#: Names of the one-hot positions that are not a learned level (see ``data.encoding``).
_SPECIAL_LEVELS = {MISSING_CODE: "<missing>", UNSEEN_CODE: "<unseen>"}


def build_linear(
    schema: FeatureSchema,
    numeric_train: np.ndarray | None,
    config: TrainConfig,
    *,
    target_center: float = 0.0,
    target_scale: float = 1.0,
) -> keras.Model:
    """Linear regression (regression) or logistic / softmax regression (classification).

    Args:
        schema: A table's feature schema (vocabularies learned on the training split).
        numeric_train: The training split's raw numeric columns (NaN for missing).
        config: The run's settings (categories are always one-hot here: an embedding would
            leave no coefficient per category).
        target_center: Regression target mean (the output layer adds it back).
        target_scale: Regression target standard deviation.

    Returns:
        An uncompiled functional model taking ``{"numeric": ..., "categorical": ...}``.
    """
    stats = _linear_stats(numeric_train) if schema.numeric_names else None
    one_hot = dataclasses.replace(config, categorical_encoding="one_hot")
    inputs, features = encoded_features(schema, stats, one_hot)
    outputs = task_head(features, schema, target_center, target_scale)
    return keras.Model(inputs=inputs, outputs=outputs, name="deepspark_linear")


def _linear_stats(numeric: np.ndarray) -> NumericStats:
    """Mean and standard deviation of each raw column (no log scaling: a coefficient per unit
    of the column itself)."""
    values = np.asarray(numeric, dtype=np.float64)
    missing = np.isnan(values)
    with warnings.catch_warnings():  # an all-missing column: mean 0, scale 1
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nan_to_num(np.nanmean(values, axis=0))
        scale = np.nanstd(values, axis=0)
    scale = np.where(np.isfinite(scale) & (scale > 1e-12), scale, 1.0)
    return NumericStats(
        mean=tuple(float(value) for value in mean),
        scale=tuple(float(value) for value in scale),
        log_columns=(),
        missing_columns=tuple(int(column) for column in np.flatnonzero(missing.any(axis=0))),
    )


def linear_coefficients(model, schema: FeatureSchema) -> dict[str, Any] | None:
    """The raw-unit coefficients and intercept of an affine deepspark model.

    Args:
        model: A trained deepspark model (``linear``, or an ``mlp`` with linear activations and
            no batch normalization).
        schema: Its feature schema.

    Returns:
        ``{"coefficients": ..., "intercept": ...}``: ``{column: value}`` and a number for
        regression and binary tasks (the binary ones on the logit scale), ``{class: {column:
        value}}`` and ``{class: value}`` for multiclass. One-hot categories are named
        ``column=value`` (``column=<missing>``, ``column=<unseen>`` for the reserved codes),
        missing-value flags ``column=<missing>``, log-scaled columns ``log1p(column)``.
        ``None`` when the model is not affine (hidden non-linearities, batch normalization,
        embeddings, a model of the user's own).
    """
    chain = _affine_chain(model)
    if chain is None:
        return None
    kernel, bias, numeric, names = chain
    kernel, bias = _undo_numeric_scaling(kernel, bias, numeric)
    denormalize = _layer(model, "prediction")
    if schema.task == "regression" and denormalize is not None:
        kernel, bias = kernel * denormalize.scale, bias * denormalize.scale + denormalize.center
    names = _feature_names(schema, numeric, names)
    if len(names) != kernel.shape[0]:
        return None
    if schema.task == "multiclass":
        labels = [str(label) for label in schema.class_labels]
        return {
            "coefficients": {
                label: _named(names, kernel[:, index]) for index, label in enumerate(labels)
            },
            "intercept": {label: float(bias[index]) for index, label in enumerate(labels)},
        }
    return {"coefficients": _named(names, kernel[:, 0]), "intercept": float(bias[0])}


def _named(names: list[str], values: np.ndarray) -> dict[str, float]:
    return {name: float(value) for name, value in zip(names, values, strict=True)}


def _layer(model, name: str):
    try:
        return model.get_layer(name)
    except ValueError:
        return None


def _affine_chain(model):
    """``(kernel, bias, numeric preprocessor, one-hot layers)`` of the composed affine map from
    the encoded features to the output's pre-activation; ``None`` if a layer is not affine."""
    kernel = bias = None
    numeric, one_hot = None, []
    for layer in model.layers:
        kind = type(layer).__name__
        if kind in ("InputLayer", "Concatenate", "Dropout", "Denormalize", "GetItem"):
            continue
        if kind == "NumericPreprocessor":
            numeric = layer
        elif kind == "CategoryEncoding":
            one_hot.append(layer)
        elif kind == "Activation" and layer.get_config()["activation"] == "linear":
            continue
        elif kind == "Dense":
            activation = layer.get_config()["activation"]
            if activation not in ("linear", "sigmoid", "softmax"):
                return None
            weights, offset = (np.asarray(value, np.float64) for value in layer.get_weights())
            if kernel is None:
                kernel, bias = weights, offset
            else:
                kernel, bias = kernel @ weights, bias @ weights + offset
        else:  # batch normalization, embeddings, a non-linear activation, a user's layer
            return None
    if kernel is None:
        return None
    return kernel, bias, numeric, one_hot


def _undo_numeric_scaling(kernel: np.ndarray, bias: np.ndarray, numeric):
    """Coefficients on ``(x - mean) / scale`` -> on ``x``; the intercept absorbs the means."""
    if numeric is None:
        return kernel, bias
    mean = np.asarray(numeric.mean, np.float64)
    scale = np.asarray(numeric.scale, np.float64)
    count = len(mean)
    kernel = kernel.copy()
    kernel[:count] = kernel[:count] / scale[:, None]
    bias = bias - (mean[:, None] * kernel[:count]).sum(axis=0)
    return kernel, bias


def _feature_names(schema: FeatureSchema, numeric, one_hot: list) -> list[str]:
    names = []
    if numeric is not None:
        logged = set(numeric.log_columns)
        for index, column in enumerate(schema.numeric_names):
            names.append(f"log1p({column})" if index in logged else column)
        names.extend(
            f"{schema.numeric_names[index]}=<missing>" for index in numeric.missing_columns
        )
    if len(one_hot) != len(schema.categorical_specs):
        return []
    for spec in schema.categorical_specs:
        for code in range(len(spec.vocabulary) + FIRST_LEVEL_CODE):
            level = _SPECIAL_LEVELS.get(code) or str(spec.vocabulary[code - FIRST_LEVEL_CODE])
            names.append(f"{spec.name}={level}")
    return names
