"""The Keras layers of deepspark's tabular network (``deepspark.models.tabular_net``).

Every layer uses ``keras.ops`` only (JAX and torch alike) and is registered, so ``.keras`` files
load with ``safe_mode=True``. The ideas come from two papers on deep learning for tables:

- ``SmoothClip``: RealMLP's robust scaling with smooth clipping (Holzmüller et al., "Better by
  Default", NeurIPS 2024): ``z / sqrt(1 + (z / bound)^2)`` keeps the bulk of a column linear
  and squashes outliers towards ``+-bound`` without a kink.
- ``PeriodicEmbedding``: periodic numeric embeddings ("PLR", Gorishniy et al., NeurIPS 2022;
  RealMLP's PBLD): each number becomes ``[x, relu(linear(cos(2 pi f x + b)))]`` with learned
  frequencies, so the network sees fine structure of a column (latitude, longitude) that a
  plain MLP smooths over.
- ``EnsembleDense`` and ``EnsembleHead``: a BatchEnsemble-style ensemble of ``k`` members
  sharing one weight matrix per layer, each with its own multiplicative adapters and biases
  (TabM, Gorishniy et al., ICLR 2025); the members' predictions are averaged.
"""

from __future__ import annotations

import math

import numpy as np

from deepspark._backend import import_keras

keras = import_keras()
ops = keras.ops

HEAD_KINDS = ("regression", "binary", "multiclass")


def _random_signs(shape, dtype=None):
    """+1 or -1 with equal probability (TabM's first adapter), from Keras' global seed."""
    draws = keras.initializers.RandomUniform(-1.0, 1.0)(shape, dtype=dtype)
    return ops.where(draws >= 0, ops.ones_like(draws), -ops.ones_like(draws))


@keras.saving.register_keras_serializable(package="deepspark")
class SmoothClip(keras.layers.Layer):
    """Robust scaling and smooth clipping of the first ``width`` columns; the rest pass through.

    Args:
        width: How many leading columns are numbers to scale (the others, such as missing-value
            indicators and one-hot blocks, are left as they are).
        center: Per-column value subtracted first (a robust centre such as the median); default 0.
        scale: Per-column divisor (a robust spread such as the interquartile range); default 1.
        bound: Where the smooth clip saturates: outputs stay within ``(-bound, bound)``.
    """

    def __init__(self, width: int, center=None, scale=None, bound: float = 3.0, **kwargs):
        super().__init__(**kwargs)
        self.width = int(width)
        self.center = [0.0] * self.width if center is None else [float(v) for v in center]
        self.scale = [1.0] * self.width if scale is None else [float(v) for v in scale]
        self.bound = float(bound)
        if len(self.center) != self.width or len(self.scale) != self.width:
            raise ValueError(
                f"center and scale need one value per scaled column ({self.width}). "
                f"Received: center={self.center}, scale={self.scale}"
            )

    def call(self, inputs):
        numbers = inputs[:, : self.width]
        center = ops.convert_to_tensor(np.array(self.center, "float32"))
        scale = ops.convert_to_tensor(np.array(self.scale, "float32"))
        # In units of the bound, and kept where squaring cannot overflow (at 1e4 the output
        # is already the bound to 8 digits).
        relative = ops.clip((numbers - center) / (scale * self.bound), -1e4, 1e4)
        clipped = self.bound * relative / ops.sqrt(1.0 + ops.square(relative))
        if inputs.shape[-1] == self.width:
            return clipped
        return ops.concatenate([clipped, inputs[:, self.width :]], axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "width": self.width,
            "center": self.center,
            "scale": self.scale,
            "bound": self.bound,
        }


@keras.saving.register_keras_serializable(package="deepspark")
class PeriodicEmbedding(keras.layers.Layer):
    """Periodic embeddings of the first ``width`` columns; the rest pass through unchanged.

    Column ``j`` becomes ``[x_j, relu(cos(2 pi f_j x_j + b_j) @ W_j + c_j)]``: ``frequencies``
    learned frequencies ``f_j`` (initialised from ``N(0, sigma^2)``), phases ``b_j``, and a
    per-column linear map to ``dim`` outputs. Keeping ``x_j`` itself (RealMLP's "densenet"
    link) lets the network stay as smooth as a plain MLP where the data asks for it.

    Args:
        width: How many leading columns are numbers to embed.
        frequencies: Frequencies per column.
        dim: Outputs of each column's linear map.
        sigma: Standard deviation of the initial frequencies (in cycles per unit of the scaled
            input): small values start smooth.
    """

    def __init__(self, width: int, frequencies=16, dim=8, sigma=0.1, **kwargs):
        super().__init__(**kwargs)
        self.width = int(width)
        self.frequencies = int(frequencies)
        self.dim = int(dim)
        self.sigma = float(sigma)

    def build(self, input_shape):
        columns, count, dim = self.width, self.frequencies, self.dim
        self.frequency = self.add_weight(
            shape=(columns, count),
            initializer=keras.initializers.RandomNormal(stddev=self.sigma),
            name="frequency",
        )
        self.phase = self.add_weight(
            shape=(columns, count),
            initializer=keras.initializers.RandomUniform(-math.pi, math.pi),
            name="phase",
        )
        limit = 1.0 / math.sqrt(count)
        self.kernel = self.add_weight(
            shape=(columns, count, dim),
            initializer=keras.initializers.RandomUniform(-limit, limit),
            name="kernel",
        )
        self.bias = self.add_weight(
            shape=(columns, dim),
            initializer=keras.initializers.RandomUniform(-limit, limit),
            name="bias",
        )

    def call(self, inputs):
        numbers = inputs[:, : self.width]
        angles = 2.0 * math.pi * numbers[:, :, None] * self.frequency + self.phase
        mapped = ops.einsum("bcf,cfd->bcd", ops.cos(angles), self.kernel) + self.bias
        embedded = ops.reshape(ops.relu(mapped), (-1, self.width * self.dim))
        parts = [numbers, embedded]
        if inputs.shape[-1] != self.width:
            parts.append(inputs[:, self.width :])
        return ops.concatenate(parts, axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1] + self.width * self.dim)

    def get_config(self):
        return {
            **super().get_config(),
            "width": self.width,
            "frequencies": self.frequencies,
            "dim": self.dim,
            "sigma": self.sigma,
        }


@keras.saving.register_keras_serializable(package="deepspark")
class EnsembleDense(keras.layers.Layer):
    """A dense layer shared by ``members`` ensemble members (BatchEnsemble / TabM).

    Member ``k`` computes ``((x * r_k) @ W) * s_k + b_k``: one shared kernel ``W``, and per
    member an input adapter ``r_k``, an output adapter ``s_k`` and a bias ``b_k``. A 2-D input
    ``(rows, features)`` is fed to every member (the first layer); a 3-D input is
    ``(rows, members, features)``. The output is ``(rows, members, units)``.

    Args:
        units: Outputs per member.
        members: Ensemble size ``k``.
        random_signs: Initialise ``r`` with random signs (TabM's first layer, which makes the
            members differ from the first step) instead of ones.
    """

    def __init__(self, units: int, members: int, random_signs=False, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.members = int(members)
        self.random_signs = bool(random_signs)

    def build(self, input_shape):
        features = int(input_shape[-1])
        self.kernel = self.add_weight(
            shape=(features, self.units), initializer="he_uniform", name="kernel"
        )
        self.input_adapter = self.add_weight(
            shape=(self.members, features),
            initializer=_random_signs if self.random_signs else "ones",
            name="input_adapter",
        )
        self.output_adapter = self.add_weight(
            shape=(self.members, self.units), initializer="ones", name="output_adapter"
        )
        self.bias = self.add_weight(
            shape=(self.members, self.units), initializer="zeros", name="bias"
        )

    def call(self, inputs):
        if len(inputs.shape) == 2:
            inputs = inputs[:, None, :]
        adapted = inputs * self.input_adapter
        return ops.matmul(adapted, self.kernel) * self.output_adapter + self.bias

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.members, self.units)

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "members": self.members,
            "random_signs": self.random_signs,
        }


@keras.saving.register_keras_serializable(package="deepspark")
class EnsembleHead(keras.layers.Layer):
    """Each member's own output layer, then the members' average.

    Regression averages the members' (standardized) values; binary and multiclass average the
    members' probabilities (sigmoid or softmax per member). With ``member_loss``, training adds
    the members' variance around their mean (regression only): with mean squared error on the
    average, the total is exactly the mean of the members' own squared errors, so each member
    is trained as a model of its own (TabM) and not merely as a part of a wide one.

    Args:
        outputs: Outputs per member (1, or the number of classes).
        members: Ensemble size ``k``.
        kind: ``regression``, ``binary`` or ``multiclass``.
        member_loss: Add the variance term while training (regression with MSE).
    """

    def __init__(self, outputs: int, members: int, kind: str, member_loss=False, **kwargs):
        super().__init__(**kwargs)
        if kind not in HEAD_KINDS:
            raise ValueError(f"kind must be one of {HEAD_KINDS}. Received: kind={kind!r}")
        self.outputs = int(outputs)
        self.members = int(members)
        self.kind = kind
        self.member_loss = bool(member_loss)

    def build(self, input_shape):
        units = int(input_shape[-1])
        limit = 1.0 / math.sqrt(units)
        self.kernel = self.add_weight(
            shape=(self.members, units, self.outputs),
            initializer=keras.initializers.RandomUniform(-limit, limit),
            name="kernel",
        )
        self.bias = self.add_weight(
            shape=(self.members, self.outputs), initializer="zeros", name="bias"
        )

    def call(self, inputs, training=None):
        values = ops.einsum("bku,kuo->bko", inputs, self.kernel) + self.bias
        if self.kind == "binary":
            values = ops.sigmoid(values)
        elif self.kind == "multiclass":
            values = ops.softmax(values, axis=-1)
        average = ops.mean(values, axis=1)
        if training and self.member_loss and self.kind == "regression":
            spread = values - average[:, None, :]
            self.add_loss(ops.mean(ops.square(spread)))
        return average

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.outputs)

    def get_config(self):
        return {
            **super().get_config(),
            "outputs": self.outputs,
            "members": self.members,
            "kind": self.kind,
            "member_loss": self.member_loss,
        }
