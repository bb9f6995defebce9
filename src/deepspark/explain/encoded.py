"""A deepspark Keras model split at its encoded features: ``output = network(encoder(raw))``.

The encoder is the model's own preprocessing (imputation, log scaling and standardization of
numeric columns, missing-value indicators, one-hot or embedding of categorical codes); its output
is the first differentiable representation of every raw column. The network is everything after
it. ``groups`` says which raw column each encoded feature came from, so attributions on encoded
features sum back to raw columns (a one-hot block to ``ocean_proximity``, an indicator to its
numeric column).
"""

from __future__ import annotations

import numpy as np

from deepspark._backend import import_keras
from deepspark.errors import DeepsparkError

FEATURES_LAYER = "features"
NUMERIC_LAYER = "numeric_preprocessing"
_CATEGORICAL_PREFIXES = ("one_hot_", "embed_")


class EncodedNetwork:
    """Encoder and network halves of a deepspark model, and the encoded-feature groups.

    Args:
        model: A loaded ``DeepsparkModel`` built by deepspark's MLP builder.

    Raises:
        DeepsparkError: The model does not have the layers deepspark's builder makes.
    """

    def __init__(self, model):
        from deepspark.models.bagged import is_bagged, split_members

        keras = import_keras()
        keras_model = model.keras_model
        if is_bagged(keras_model):  # each member encodes on its own: their features side by side
            self.encoder, self.network, members = split_members(keras_model, _encoded_tensor)
            encoded = self.encoder.output
            self.groups = np.vstack([_groups(model.schema, member) for member in members])
        else:
            encoded = _encoded_tensor(keras_model)
            self.encoder = keras.Model(keras_model.inputs, encoded)
            self.network = keras.Model(encoded, keras_model.output)
            self.groups = _groups(model.schema, keras_model)
        if self.groups.shape[0] != int(encoded.shape[-1]):
            raise DeepsparkError(
                f"Encoded width {encoded.shape[-1]} does not match the schema's "
                f"{self.groups.shape[0]} encoded features; the model was not built by deepspark."
            )

    def encode(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """Raw model inputs -> encoded features (rows, width), float32."""
        from deepspark.models.inference import predict_arrays

        return predict_arrays(self.encoder, inputs).astype(np.float32)


def _encoded_tensor(keras_model):
    names = {layer.name: layer for layer in keras_model.layers}
    if FEATURES_LAYER in names:
        return names[FEATURES_LAYER].output
    parts = [
        layer
        for name, layer in names.items()
        if name == NUMERIC_LAYER or name.startswith(_CATEGORICAL_PREFIXES)
    ]
    if len(parts) != 1:
        raise DeepsparkError(
            "The model has no 'features' layer nor a single preprocessing layer; gradient "
            "explanations need a model built by deepspark."
        )
    return parts[0].output


def _groups(schema, keras_model) -> np.ndarray:
    """(encoded width, raw features) 0/1 matrix: encoded feature -> its raw column."""
    names = schema.feature_names
    owners: list[int] = []
    if schema.numeric_names:
        layer = keras_model.get_layer(NUMERIC_LAYER)
        numeric_positions = [names.index(name) for name in schema.numeric_names]
        owners.extend(numeric_positions)
        owners.extend(numeric_positions[column] for column in layer.missing_columns)
    layers = {layer.name: layer for layer in keras_model.layers}
    for spec in schema.categorical_specs:
        candidates = [f"{prefix}{_safe(spec.name)}" for prefix in _CATEGORICAL_PREFIXES]
        layer = next(layers[name] for name in candidates if name in layers)
        owners.extend([names.index(spec.name)] * int(layer.output.shape[-1]))
    groups = np.zeros((len(owners), len(names)), dtype=np.float64)
    groups[np.arange(len(owners)), owners] = 1.0
    return groups


def _safe(name: str) -> str:
    # The builder names layers after columns with non-alphanumerics replaced (models/mlp.py).
    return "".join(char if char.isalnum() else "_" for char in name)
