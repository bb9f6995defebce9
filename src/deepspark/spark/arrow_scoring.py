"""Scoring a Spark DataFrame on Arrow batches, no pandas: the table-model route of
``deepspark.spark.predict``.

Two routes share one scorer (``score_arrow``): the model's inputs are built straight from the
Arrow columns (numeric columns read as NumPy, without a copy where Arrow allows it; categorical
levels mapped to their vocabulary codes with ``pyarrow.compute``), the model's compiled batched
forward runs on them (``models.inference.predict_arrays``), and the typed outputs come back as
Arrow: ``prediction`` (``double`` for regression, the label type for classification) and, for
classification, ``probability`` (a struct of one ``double`` per class).

- ``make_arrow_udf`` (Spark 4.1+, the default): an iterator Arrow UDF over the feature columns,
  bound and cast on the driver (``spark.columns.feature_columns``); only the features cross to
  Python and one column comes back, as with the pandas UDF.
- ``predict_arrow`` (Spark 4.0): ``DataFrame.mapInArrow``; every column crosses to Python and
  back (a feature that needs no cast is read from its passthrough column, so it crosses once).

The encoding is ``data.encoding.encode_arrow_features``, which equals ``encode_features``
exactly (same codes: missing, unseen, vocabulary order; nulls left to the model's imputation
layers), so the outputs equal ``DeepsparkModel.predict`` and the pandas UDF on the same rows.
The model is loaded once per Python worker (``udf.worker_model``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator

import numpy as np

from deepspark.data.encoding import encode_arrow_features
from deepspark.data.schema import NUMERIC, FeatureSchema, label_type
from deepspark.spark.columns import feature_columns, quote
from deepspark.spark.udf import output_type, worker_model

logger = logging.getLogger(__name__)

_FEATURE_PREFIX = "__deepspark_feature_"


@dataclasses.dataclass(frozen=True)
class ArrowLayout:
    """Where things sit in the record batches one scoring job sends to Python.

    Attributes:
        kept: How many leading columns pass through to the output unchanged.
        feature_positions: The batch column of each model feature, in schema order.
    """

    kept: int
    feature_positions: tuple[int, ...]


def arrow_supported(frame) -> bool:
    """Whether every column of ``frame`` can cross to Python as Arrow (else the pandas UDF
    path, which keeps the passthrough columns in the JVM, scores it)."""
    from pyspark.sql.pandas.types import to_arrow_schema

    try:
        to_arrow_schema(frame.schema, timezone="UTC")  # any zone: only the types are checked
    except Exception:  # pyspark raises several types for types Arrow cannot carry
        return False
    return True


def predict_arrow(
    frame,
    shipped_name: str,
    schema: FeatureSchema,
    *,
    prediction_col: str = "prediction",
    probability_col: str = "probability",
):
    """``frame`` with the model's prediction column(s) appended, scored with ``mapInArrow``.

    Args:
        frame: A Spark DataFrame holding the model's feature columns (any order, extra columns
            pass through, same-named output columns are replaced).
        shipped_name: The model as shipped to the executors (``udf.ship_model``).
        schema: The model's feature schema (a table model).
        prediction_col: Name of the prediction column.
        probability_col: Name of the probability struct (classification only).

    Returns:
        The lazy scored DataFrame.

    Raises:
        UserInputError: Missing columns or uncastable types (named), before any job starts.
    """
    from pyspark.sql import types as T

    bound = feature_columns(frame, schema)
    outputs = _output_names(schema, prediction_col, probability_col)
    kept = [field for field in frame.schema.fields if field.name not in outputs]
    columns, layout = _input_columns(frame, schema, kept, bound)
    result_schema = T.StructType([*kept, *_output_fields(schema, outputs)])
    scorer = make_arrow_scorer(shipped_name, layout, result_schema.names)
    return frame.select(*columns).mapInArrow(scorer, result_schema)


def _output_names(schema: FeatureSchema, prediction_col: str, probability_col: str) -> list:
    if schema.task == "regression":
        return [prediction_col]
    return [prediction_col, probability_col]


def _input_columns(frame, schema: FeatureSchema, kept, bound) -> tuple[list, ArrowLayout]:
    """The columns sent to Python: the passthrough ones, then each feature whose passthrough
    column would not do (it needs a cast, or it is replaced by an output)."""
    from pyspark.sql import functions as F

    types = {field.name: field.dataType for field in kept}
    columns = [F.col(quote(field.name)) for field in kept]
    positions = []
    names = [field.name for field in kept]
    for spec, column in zip(schema.features, bound, strict=True):
        if _arrives_as_is(spec.kind, types.get(spec.name)):
            positions.append(names.index(spec.name))
            continue
        positions.append(len(columns))
        columns.append(column.alias(f"{_FEATURE_PREFIX}{len(positions) - 1}"))
    return columns, ArrowLayout(len(kept), tuple(positions))


def _arrives_as_is(kind: str, data_type) -> bool:
    from pyspark.sql import types as T

    wanted = T.DoubleType if kind == NUMERIC else T.StringType
    return data_type is not None and isinstance(data_type, wanted)


def _output_fields(schema: FeatureSchema, outputs: list) -> list:
    from pyspark.sql import types as T

    result = output_type(schema)
    if schema.task == "regression":
        return [T.StructField(outputs[0], result)]
    return [
        T.StructField(name, field.dataType)
        for name, field in zip(outputs, result.fields, strict=True)
    ]


def make_arrow_scorer(shipped_name: str, layout: ArrowLayout, names: list) -> Callable:
    """The ``mapInArrow`` function: record batches in, the same batches with the output
    columns appended out; the model is loaded once per Python worker (``udf.worker_model``).

    Args:
        shipped_name: The model as shipped to the executors.
        layout: Which input columns pass through and where the features are.
        names: The output column names (the passthrough columns keep the Arrow types Spark
            sent them with; the outputs have those of ``arrow_outputs``).
    """

    def score_record_batches(batches: Iterator) -> Iterator:
        import pyarrow as pa

        model = worker_model(shipped_name)
        for batch in batches:
            features = [batch.column(position) for position in layout.feature_positions]
            scored = score_arrow(model, features)
            kept = [batch.column(position) for position in range(layout.kept)]
            yield pa.RecordBatch.from_arrays([*kept, *scored], names=names)

    return score_record_batches


def arrow_udf_available() -> bool:
    """Whether this PySpark has Arrow UDFs (``pyspark.sql.functions.arrow_udf``, Spark 4.1+)."""
    from pyspark.sql import functions as F

    return hasattr(F, "arrow_udf")


def make_arrow_udf(shipped_name: str, schema: FeatureSchema):
    """The Arrow UDF (Spark 4.1+) taking the model's features as separate columns, in schema
    order, as ``feature_columns`` binds and casts them: Arrow arrays in, the typed result out
    (``double``, or ``struct<prediction, probability>``; ``udf.output_type``).

    Only the features cross to Python and one column comes back (the other columns stay in the
    JVM, as with the pandas UDF), with no pandas conversion on the way.
    """
    import pyarrow as pa
    from pyspark.sql.functions import arrow_udf

    regression = schema.task == "regression"

    def score_arrow_columns(batches):
        model = worker_model(shipped_name)
        for columns in batches:
            features = [columns] if isinstance(columns, pa.Array) else list(columns)
            scored = score_arrow(model, features)
            if regression:
                yield scored[0]
            else:
                yield pa.StructArray.from_arrays(scored, names=["prediction", "probability"])

    # PySpark reads the UDF's kind from its type hints; one column arrives as an array.
    arrays = pa.Array if len(schema.features) == 1 else tuple[pa.Array, ...]
    score_arrow_columns.__annotations__ = {
        "batches": Iterator[arrays],
        "return": Iterator[pa.Array],
    }
    return arrow_udf(score_arrow_columns, returnType=output_type(schema))


def score_arrow(model, features: list) -> list:
    """Output columns of ``model`` for its feature columns given as Arrow arrays.

    Args:
        model: A ``DeepsparkModel`` (a table model).
        features: One Arrow array per feature, in schema order: ``double`` for numeric
            features, ``string`` for categorical ones (as ``feature_columns`` casts them).

    Returns:
        ``[prediction]`` for regression; ``[prediction, probability]`` (a struct array) for
        classification.
    """
    from deepspark.models.inference import predict_arrays

    output = predict_arrays(model.keras_model, encode_arrow_features(features, model.schema))
    return arrow_outputs(output, model.schema)


def arrow_outputs(output: np.ndarray, schema: FeatureSchema) -> list:
    """Raw model output -> typed Arrow output columns (the Spark types of ``udf.output_type``).

    Same values as ``models.inference.format_predictions``: regression the output as double;
    classification the most probable label and one probability per class.
    """
    import pyarrow as pa

    from deepspark.models.inference import class_probabilities

    if schema.task == "regression":
        return [pa.array(output.reshape(-1).astype(np.float64, copy=False))]
    probabilities = class_probabilities(output, schema.task)
    labels, arrow_type = _labels(schema.class_labels)
    chosen = np.argmax(probabilities, axis=1) if len(probabilities) else np.zeros(0, int)
    prediction = pa.array(labels[chosen], type=arrow_type)
    probability = pa.StructArray.from_arrays(
        [pa.array(probabilities[:, position]) for position in range(len(schema.class_labels))],
        names=[str(label) for label in schema.class_labels],
    )
    return [prediction, probability]


def _labels(class_labels) -> tuple[np.ndarray, object]:
    """Class labels as an array to index, and their Arrow type (``data.schema.label_type``)."""
    import pyarrow as pa

    kind = label_type(class_labels)
    if kind == "boolean":
        return np.asarray(class_labels, dtype=bool), pa.bool_()
    if kind == "long":
        return np.asarray(class_labels, dtype=np.int64), pa.int64()
    if kind == "double":
        return np.asarray(class_labels, dtype=np.float64), pa.float64()
    return np.asarray([str(label) for label in class_labels], dtype=object), pa.string()
