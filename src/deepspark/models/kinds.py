"""Model kinds: what a deepspark model takes as raw input and what it returns, in one place.

Every consumer of a model (pandas predict, the MLflow pyfunc and its signature, streamed scoring
to files, serving) asks the model's kind instead of testing ``kind == "image"``:

- ``input_columns`` / ``output_columns``: the column contract (names, types, required), from
  which the MLflow signature, Arrow output schemas and the serving metadata are made;
- ``check_columns``: what a table must hold before any row is read (named when missing);
- ``bad_rows``: rows a large job counts and skips instead of failing (a text value in a
  numeric column); an image model reports undecodable images row by row in ``error`` instead;
- ``predict``: raw rows in, formatted predictions out (decode, batched compiled forward pass,
  ``prediction`` / ``probability_<class>`` columns);
- ``example_input``: one valid row (a warm-up call compiles the model before serving);
- ``requirements``: extra packages a serving environment needs.

Training, tuning and explaining ask the kind too, through small named capabilities instead of
``kind == "image"`` / ``schema.image is not None`` tests:

- ``unit`` (what one input is called: ``rows``, ``images``) and ``data_description`` (the data
  named in messages);
- ``default_builder`` (the network ``train`` builds when none is given) and ``build_mlp`` (the
  ``mlp`` builder's network for this kind's data);
- ``encoded_features``: the network reads deepspark's encoded feature vector (one position per
  named column or category), so preprocessing goes in front of a user's network and an affine
  network's weights are per-feature coefficients;
- ``default_patience`` and ``large_table_batches``: the data-dependent training defaults;
- ``supports_tuning`` / ``supports_bagging``: whether ``tune`` / ``--bagging`` take this data;
- ``logged_example``: the input example logged with a trained model.

A new kind subclasses ``ModelKind`` and is added with ``register_kind``; ``kind_of(schema)``
finds it by ``FeatureSchema.kind`` (``kind_named(name)`` by its name).
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Sequence

import numpy as np
import pandas as pd

from deepspark.config import DEFAULT_PATIENCE
from deepspark.data.schema import (
    NUMERIC,
    FeatureSchema,
    label_type,
    parse_numbers,
    require_columns,
)
from deepspark.errors import UserInputError

#: An image model's output column naming why a row's image could not be scored.
ERROR_COLUMN = "error"


@dataclasses.dataclass(frozen=True)
class Column:
    """One column of a model's input or output.

    ``type`` is one of ``double``, ``long``, ``boolean``, ``string``, ``binary`` (the names
    MLflow's and Spark's schemas use).
    """

    name: str
    type: str
    required: bool = True


@dataclasses.dataclass
class BadRows:
    """Rows of a batch that cannot be scored: a mask and a few ``row N: column=value`` lines."""

    mask: np.ndarray
    examples: list[str]

    @property
    def count(self) -> int:
        return int(self.mask.sum())


def probability_column(label) -> str:
    """Name of the probability column of one class."""
    return f"probability_{label}"


class ModelKind:
    """The input contract, decoding, predict loop and output format of one kind of model."""

    name = ""
    requirements: tuple[str, ...] = ()
    reads_images = False  # takes image files (an image folder is valid input)
    #: What one input is called in reports (the explanation summary's additivity definition).
    unit = "rows"
    #: The data, as messages name it (``... but the data is a table``).
    data_description = "a table"
    #: The builder ``train`` uses when no ``model`` is given (a name registered in
    #: ``models.builders``).
    default_builder = "mlp"
    #: The network reads deepspark's encoded feature vector (one position per named column or
    #: category): a user's network gets the preprocessing in front, and an affine network's
    #: weights are per-feature coefficients.
    encoded_features = False
    #: Epochs without improvement before early stopping, unless ``patience`` is set.
    default_patience = DEFAULT_PATIENCE["tabular"]
    #: More than ``config.LARGE_TABLE_ROWS`` rows raise the default batch size.
    large_table_batches = False
    #: ``deepspark.tune`` can search this kind's settings.
    supports_tuning = False
    #: ``--bagging`` can train members on folds of this kind's data.
    supports_bagging = False

    def input_columns(self, schema: FeatureSchema) -> list[Column]:
        raise NotImplementedError

    def output_columns(self, schema: FeatureSchema) -> list[Column]:
        """``prediction`` (a double for regression, else the label type) and one
        ``probability_<label>`` per class."""
        if schema.task == "regression":
            return [Column("prediction", "double")]
        columns = [Column("prediction", label_type(schema.class_labels))]
        return columns + [
            Column(probability_column(label), "double") for label in schema.class_labels
        ]

    def check_columns(self, schema: FeatureSchema, names: Sequence[str]) -> None:
        """Raise ``UserInputError`` when a table with these columns cannot be scored."""

    def bad_rows(
        self, schema: FeatureSchema, frame: pd.DataFrame, *, start: int = 0, most: int = 5
    ):
        """The rows to skip and count (``None``: all rows can be scored)."""
        return None

    def predict(self, keras_model, schema: FeatureSchema, frame: pd.DataFrame) -> pd.DataFrame:
        raise NotImplementedError

    def example_input(self, schema: FeatureSchema) -> pd.DataFrame:
        raise NotImplementedError

    def logged_example(self, prepared) -> pd.DataFrame | None:
        """The input example logged with a model trained on ``prepared`` (a
        ``training.prepare.PreparedData``); ``None``: the signature says enough."""
        return None

    def build_mlp(self, context):
        """The ``mlp`` builder's network for this kind's data (``context``: a
        ``models.builders.BuildContext``)."""
        raise NotImplementedError


class TabularKind(ModelKind):
    """Raw table columns in: numbers (imputed when empty) and text categories."""

    name = "tabular"
    default_builder = "tabular_net"  # beats mlp on benchmarks/bench_tabular_suite.py
    encoded_features = True
    large_table_batches = True  # larger data, larger batches, as TabM's recipes do
    supports_tuning = True
    supports_bagging = True

    def input_columns(self, schema: FeatureSchema) -> list[Column]:
        return [
            Column(spec.name, "double" if spec.kind == NUMERIC else "string")
            for spec in schema.features
        ]

    def check_columns(self, schema: FeatureSchema, names: Sequence[str]) -> None:
        require_columns(pd.DataFrame(columns=list(names)), schema)

    def bad_rows(
        self, schema: FeatureSchema, frame: pd.DataFrame, *, start: int = 0, most: int = 5
    ):
        """Rows whose numeric model columns hold text (``None`` when there are none)."""
        bad, examples = np.zeros(len(frame), dtype=bool), []
        for name in schema.numeric_names:
            column = frame[name]
            if pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
                continue
            text = (parse_numbers(column).isna() & column.notna()).to_numpy()
            for position in np.flatnonzero(text & ~bad)[: most - len(examples)]:
                examples.append(f"row {start + position}: {name}={column.iloc[position]!r}")
            bad |= text
        return BadRows(bad, examples) if bad.any() else None

    def predict(self, keras_model, schema: FeatureSchema, frame: pd.DataFrame) -> pd.DataFrame:
        from deepspark.data.encoding import encode_features
        from deepspark.models.inference import format_predictions, predict_arrays

        output = predict_arrays(keras_model, encode_features(frame, schema))
        return format_predictions(output, schema, index=frame.index)

    def example_input(self, schema: FeatureSchema) -> pd.DataFrame:
        row = {
            spec.name: 0.0 if spec.kind == NUMERIC else (spec.vocabulary or ("",))[0]
            for spec in schema.features
        }
        return pd.DataFrame([row])

    def logged_example(self, prepared) -> pd.DataFrame | None:
        return prepared.example_rows()

    def build_mlp(self, context):
        from deepspark.models.mlp import build_mlp

        return build_mlp(
            context.schema,
            context.numeric_stats,
            context.config,
            target_center=context.target_center,
            target_scale=context.target_scale,
        )


class ImageKind(ModelKind):
    """Encoded image bytes (an ``image`` column) or image files (a ``path`` column) in; a row
    whose image cannot be decoded gets a null prediction and the reason in ``error``."""

    name = "image"
    requirements = ("pillow",)
    reads_images = True
    unit = "images"
    data_description = "an image folder or image table"
    default_builder = "cnn"
    default_patience = DEFAULT_PATIENCE["image"]
    # logged_example: none, an image model's example would be local paths or raw bytes.

    def input_columns(self, schema: FeatureSchema) -> list[Column]:
        from deepspark.data.image_inputs import IMAGE_COLUMN, PATH_COLUMN

        names = dict.fromkeys([IMAGE_COLUMN, PATH_COLUMN, *schema.feature_names])
        return [
            Column(name, "string" if name == PATH_COLUMN else "binary", required=False)
            for name in names
        ]

    def output_columns(self, schema: FeatureSchema) -> list[Column]:
        first, *probabilities = super().output_columns(schema)
        prediction = Column(first.name, label_type(schema.class_labels), required=False)
        return [prediction, *probabilities, Column(ERROR_COLUMN, "string", required=False)]

    def predict(self, keras_model, schema: FeatureSchema, frame: pd.DataFrame) -> pd.DataFrame:
        from deepspark.models.inference import predict_images

        return predict_images(keras_model, schema, frame)

    def example_input(self, schema: FeatureSchema) -> pd.DataFrame:
        from PIL import Image

        from deepspark.data.image_inputs import IMAGE_COLUMN

        spec = schema.image
        mode = "L" if spec.channels == 1 else "RGB"
        encoded = io.BytesIO()
        Image.new(mode, (spec.width, spec.height)).save(encoded, format="PNG")
        return pd.DataFrame({IMAGE_COLUMN: [encoded.getvalue()]})

    def build_mlp(self, context):
        from deepspark.models.mlp import build_pixel_mlp

        return build_pixel_mlp(context.schema, context.config)


_KINDS: dict[str, ModelKind] = {}


def register_kind(kind: ModelKind) -> ModelKind:
    """Make ``kind`` the handler of models whose ``FeatureSchema.kind`` is ``kind.name``."""
    _KINDS[kind.name] = kind
    return kind


register_kind(TabularKind())
register_kind(ImageKind())


def kind_of(schema: FeatureSchema) -> ModelKind:
    """The kind of a model, from its schema."""
    return kind_named(schema.kind)


def kind_named(name: str) -> ModelKind:
    """The registered kind called ``name`` (``tabular``, ``image``, ...).

    Raises:
        UserInputError: No kind of that name is registered.
    """
    try:
        return _KINDS[name]
    except KeyError:
        raise UserInputError(
            f"Unknown model kind; this deepspark knows {', '.join(sorted(_KINDS))}. "
            f"Received: kind={name!r}"
        ) from None
