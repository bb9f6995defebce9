"""The MLP builder for tables: raw-column inputs, in-model preprocessing, a task-shaped head."""

from __future__ import annotations

import math

from deepspark._backend import import_keras
from deepspark.config import TrainConfig
from deepspark.data.encoding import CATEGORICAL_INPUT, FIRST_LEVEL_CODE, NUMERIC_INPUT
from deepspark.data.schema import FeatureSchema
from deepspark.models.preprocessing import Denormalize, NumericPreprocessor, NumericStats

keras = import_keras()
layers = keras.layers

_EMBEDDING_ABOVE_LEVELS = 16
_INITIALIZERS = {
    "relu": "he_normal",
    "leaky_relu": "he_normal",
    "prelu": "he_normal",
    "elu": "he_normal",
    "selu": "lecun_normal",
}
_KERAS_ACTIVATIONS = {
    "sigmoid": "sigmoid",
    "tanh": "tanh",
    "relu": "relu",
    "elu": "elu",
    "selu": "selu",
    "gelu": "gelu",
    "swish": "silu",
    "linear": "linear",  # no non-linearity: the network is a linear model (see models.linear)
}


def build_mlp(
    schema: FeatureSchema,
    numeric_stats: NumericStats | None,
    config: TrainConfig,
    *,
    target_center: float = 0.0,
    target_scale: float = 1.0,
) -> keras.Model:
    """Build the network for a table, preprocessing included.

    Args:
        schema: Feature schema with vocabularies learned on the training split.
        numeric_stats: Statistics of the numeric columns (``None`` when there are none).
        config: Hidden sizes, activation, dropout, batch norm, categorical encoding.
        target_center: Regression target mean (the output layer adds it back).
        target_scale: Regression target standard deviation.

    Returns:
        An uncompiled functional model taking ``{"numeric": ..., "categorical": ...}``.
    """
    inputs, hidden = encoded_features(schema, numeric_stats, config)
    for depth, units in enumerate(config.hidden, start=1):
        hidden = _hidden_block(hidden, int(units), depth, config)
    outputs = task_head(hidden, schema, target_center, target_scale)
    return keras.Model(inputs=inputs, outputs=outputs, name="deepspark_mlp")


def build_pixel_mlp(schema: FeatureSchema, config: TrainConfig) -> keras.Model:
    """The MLP on raw pixels (the baseline a CNN must beat): uint8 images in, scaled to [0, 1]
    and flattened, then the same hidden blocks and head as for a table.

    Args:
        schema: An image model's schema (``schema.image`` gives the input shape).
        config: Hidden sizes, activation, dropout, batch norm.
    """
    spec = schema.image
    inputs = keras.Input((spec.height, spec.width, spec.channels), dtype="uint8", name="image")
    hidden = layers.Rescaling(1.0 / 255.0, name="scale_pixels")(inputs)
    hidden = layers.Flatten(name="flatten")(hidden)
    for depth, units in enumerate(config.hidden, start=1):
        hidden = _hidden_block(hidden, int(units), depth, config)
    outputs = task_head(hidden, schema, 0.0, 1.0)
    return keras.Model(inputs=inputs, outputs=outputs, name="deepspark_pixel_mlp")


def encoded_features(schema: FeatureSchema, numeric_stats: NumericStats | None, config):
    """The model inputs of a table and the tensor of its encoded features (imputed,
    standardized numbers, missing-value flags, one-hot or embedded categories).

    Returns:
        ``(inputs by name, encoded feature tensor)``.
    """
    inputs, encoded = {}, []
    if schema.numeric_names:
        numeric = keras.Input(shape=(len(schema.numeric_names),), name=NUMERIC_INPUT)
        inputs[NUMERIC_INPUT] = numeric
        encoded.append(
            NumericPreprocessor(
                numeric_stats.mean,
                numeric_stats.scale,
                numeric_stats.log_columns,
                numeric_stats.missing_columns,
                name="numeric_preprocessing",
            )(numeric)
        )
    if schema.categorical_names:
        categorical = keras.Input(
            shape=(len(schema.categorical_names),), name=CATEGORICAL_INPUT, dtype="int32"
        )
        inputs[CATEGORICAL_INPUT] = categorical
        for position, spec in enumerate(schema.categorical_specs):
            codes = categorical[:, position]
            encoded.append(_encode_categorical(codes, spec.name, len(spec.vocabulary), config))
    features = encoded[0] if len(encoded) == 1 else layers.Concatenate(name="features")(encoded)
    return inputs, features


def _encode_categorical(codes, name: str, levels: int, config: TrainConfig):
    num_tokens = levels + FIRST_LEVEL_CODE
    safe_name = "".join(char if char.isalnum() else "_" for char in name)
    use_embedding = config.categorical_encoding == "embedding" or (
        config.categorical_encoding == "auto" and levels > _EMBEDDING_ABOVE_LEVELS
    )
    if use_embedding:
        dim = min(32, max(2, math.ceil(1.6 * num_tokens**0.56)))
        embedded = layers.Embedding(num_tokens, dim, name=f"embed_{safe_name}")(codes)
        return embedded
    return layers.CategoryEncoding(num_tokens, output_mode="one_hot", name=f"one_hot_{safe_name}")(
        codes
    )


def _hidden_block(tensor, units: int, depth: int, config: TrainConfig):
    initializer = _INITIALIZERS.get(config.activation, "glorot_uniform")
    tensor = layers.Dense(
        units, kernel_initializer=initializer, use_bias=not config.batch_norm, name=f"dense_{depth}"
    )(tensor)
    if config.batch_norm:
        tensor = layers.BatchNormalization(name=f"batch_norm_{depth}")(tensor)
    tensor = _activation_layer(config.activation, depth)(tensor)
    if config.dropout > 0:
        tensor = layers.Dropout(config.dropout, name=f"dropout_{depth}")(tensor)
    return tensor


def _activation_layer(name: str, depth: int):
    if name == "leaky_relu":
        return layers.LeakyReLU(negative_slope=0.01, name=f"leaky_relu_{depth}")
    if name == "prelu":
        return layers.PReLU(name=f"prelu_{depth}")
    return layers.Activation(_KERAS_ACTIVATIONS[name], name=f"{name}_{depth}")


def task_head(hidden, schema: FeatureSchema, target_center: float, target_scale: float):
    """The output layer of the task: a de-standardized value, P(positive) or class
    probabilities."""
    if schema.task == "regression":
        standardized = layers.Dense(1, name="output_standardized")(hidden)
        return Denormalize(target_center, target_scale, name="prediction")(standardized)
    if schema.task == "binary":
        return layers.Dense(1, activation="sigmoid", name="probability")(hidden)
    return layers.Dense(len(schema.class_labels), activation="softmax", name="probability")(hidden)
