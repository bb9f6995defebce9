"""Binding a Spark DataFrame's columns to a model's features, on the driver, before any job.

Columns are bound by name (order and extra columns do not matter). Safe casts happen here
(integers, decimals, floats and booleans to double for numeric features; numbers to text for
categorical ones); anything else is a ``DataError`` naming the column. Nulls pass through to the
model's own imputation.
"""

from __future__ import annotations

from deepspark.data.schema import NUMERIC, FeatureSchema, FeatureSpec, require_columns
from deepspark.errors import DataError


def quote(name: str) -> str:
    """A column name as a Spark SQL identifier (dots, spaces and backticks survive)."""
    return "`" + name.replace("`", "``") + "`"


def feature_columns(frame, schema: FeatureSchema) -> list:
    """The model's features of ``frame``, cast to what the model takes, in the model's order.

    Args:
        frame: A Spark DataFrame.
        schema: The model's feature schema.

    Returns:
        One ``pyspark.sql.Column`` per feature, named after it.

    Raises:
        UserInputError: Missing columns (all named) or a column of a type that cannot be cast
            safely (named, with its type).
    """
    require_columns(frame, schema)
    types = {field.name: field.dataType for field in frame.schema.fields}
    return [_bound_column(spec, types[spec.name]) for spec in schema.features]


def _bound_column(spec: FeatureSpec, data_type):
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    column = F.col(quote(spec.name))
    castable = (T.NumericType, T.BooleanType, T.NullType)
    if spec.kind == NUMERIC:
        if isinstance(data_type, castable):
            return column.cast("double").alias(spec.name)
        hint = f"cast it with CAST({quote(spec.name)} AS DOUBLE) if it holds numbers"
    else:
        if isinstance(data_type, T.StringType):
            return column.alias(spec.name)
        if isinstance(data_type, castable):
            return column.cast("string").alias(spec.name)
        hint = "give it as text"
    raise DataError(
        f"Column '{spec.name}' has Spark type {data_type.simpleString()}, but the model was "
        f"trained on {'numbers' if spec.kind == NUMERIC else 'categories (text)'} there; "
        f"{hint}. Received: {spec.name}={data_type.simpleString()}"
    )
