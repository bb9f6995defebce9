"""Scoring Spark DataFrames with a deepspark model: DataFrame API, SQL functions, Parquet jobs."""

from __future__ import annotations

import dataclasses
import logging

from deepspark.errors import UserInputError
from deepspark.models.inference import ERROR_COLUMN
from deepspark.models.kinds import kind_of
from deepspark.spark.arrow_scoring import arrow_supported, predict_arrow
from deepspark.spark.columns import quote
from deepspark.spark.kind_scoring import spark_scoring
from deepspark.spark.udf import ship_model
from deepspark.tracking.model import DeepsparkModel, resolve_model_dir

logger = logging.getLogger(__name__)

ARROW_BATCH_CONF = "spark.sql.execution.arrow.maxRecordsPerBatch"


@dataclasses.dataclass(frozen=True)
class SparkModel:
    """A model resolved on the driver and shipped to the executors.

    Attributes:
        model: The model, loaded on the driver (its schema drives column binding and types).
        shipped_name: The name executors load it under (``SparkFiles``).
        udf: The pandas UDF taking ``struct(<features>)`` (SQL); for an image model, the one
            column of image bytes or paths.
        column_udf: The pandas UDF taking the features as separate columns (faster); the same
            as ``udf`` for an image model.
        arrow_udf: The Arrow UDF taking the features as separate columns (no pandas; Spark
            4.1+), or ``None`` (an image model, or an older Spark).
    """

    model: DeepsparkModel
    shipped_name: str
    udf: object
    column_udf: object
    arrow_udf: object = None


def spark_model(spark, model_uri: str) -> SparkModel:
    """Resolve ``model_uri`` on the driver (fails fast when it does not exist) and ship it.

    Raises:
        ModelNotFoundError: The URI resolves to nothing or not to a deepspark model.
    """
    model_dir = resolve_model_dir(model_uri)
    model = DeepsparkModel.from_directory(model_dir)
    shipped_name = ship_model(spark, model_dir)
    return SparkModel(
        model, shipped_name, *spark_scoring(model.schema).udfs(shipped_name, model.schema)
    )


def predict(
    frame,
    model_uri: str | SparkModel,
    *,
    prediction_col: str = "prediction",
    probability_col: str = "probability",
    batch_rows: int | None = None,
    batch_bytes: int | None = None,
    arrow: bool = True,
):
    """Add prediction column(s) to a Spark DataFrame (lazy: nothing runs until an action).

    A table model scores Arrow batches with no pandas round trip (``spark.arrow_scoring``):
    through its Arrow UDF on Spark 4.1+ (only the features cross to Python), through
    ``DataFrame.mapInArrow`` on Spark 4.0 (every column crosses; a frame holding a type Arrow
    cannot carry takes the pandas UDF). An image model scores through its pandas UDF.

    Args:
        frame: A Spark DataFrame holding the model's feature columns (any order; extra columns
            pass through; nulls are imputed by the model).
        model_uri: A deepspark model URI (``models:/...``, ``runs:/...``) or folder.
        prediction_col: Name of the prediction column (``double`` for regression, the label
            type for classification).
        probability_col: Name of the per-class probability struct (classification only).
        batch_rows: Rows per Arrow batch sent to Python (sets the session's
            ``spark.sql.execution.arrow.maxRecordsPerBatch``).
        batch_bytes: Image models: most bytes per batch sent to Python (encoded, and decoded
            while scoring; default 64 MB). Sets the session's Arrow batch limits.
        arrow: ``False`` scores a table model through the pandas UDF instead (the route
            before Arrow scoring; same outputs).

    Returns:
        ``frame`` with the prediction column(s) appended (same-named columns are replaced).
        An image model reads a binary ``image`` / ``content`` column or a ``path`` column and
        adds ``error`` too: a bad image gets a null prediction and the reason, never a failed
        job.

    Raises:
        UserInputError: Missing columns or uncastable types (named), before any job starts.
        ModelNotFoundError: The model URI does not resolve.

    Example:
        >>> scored = deepspark.spark.predict(spark.read.parquet("houses"), "models:/m-1")
    """
    spark = frame.sparkSession
    resolved = model_uri if isinstance(model_uri, SparkModel) else spark_model(spark, model_uri)
    schema = resolved.model.schema
    scoring = spark_scoring(schema)
    scoring_udf = resolved.column_udf
    if arrow and resolved.arrow_udf is not None:
        scoring_udf = resolved.arrow_udf
    elif arrow and scoring.scores_arrow and arrow_supported(frame):  # Spark 4.0
        scored = predict_arrow(
            frame,
            resolved.shipped_name,
            schema,
            prediction_col=prediction_col,
            probability_col=probability_col,
        )
        set_arrow_batch_rows(spark, batch_rows)
        return scored
    scoring.limit_batches(spark, schema, batch_bytes)
    features = scoring.inputs(frame, schema)
    set_arrow_batch_rows(spark, batch_rows)
    outputs = {"prediction": prediction_col}
    if resolved.model.task != "regression":
        outputs["probability"] = probability_col
    if ERROR_COLUMN in [column.name for column in kind_of(schema).output_columns(schema)]:
        outputs[ERROR_COLUMN] = ERROR_COLUMN
    kept = [quote(name) for name in frame.columns if name not in outputs.values()]
    scored = scoring_udf(*features)
    if resolved.model.task == "regression":
        return frame.select(*kept, scored.alias(prediction_col))
    from pyspark.sql import functions as F

    result = "__deepspark_result"
    return frame.select(*kept, scored.alias(result)).select(
        *kept, *(F.col(f"{result}.{field}").alias(name) for field, name in outputs.items())
    )


def register_model(
    spark, name: str, model_uri: str | SparkModel, *, batch_bytes: int | None = None
):
    """Register a model as a SQL function taking ``struct(...)`` of its feature columns (an
    image model: its one column of image bytes or paths).

    Example:
        >>> register_model(spark, "price_model", "models:/m-1")
        >>> spark.sql("SELECT *, price_model(struct(*)) AS prediction FROM houses")
        >>> register_model(spark, "classify", "models:/m-2")  # an image model
        >>> spark.sql("SELECT path, classify(content).prediction FROM images")

    Returns:
        The registered UDF.

    Raises:
        UserInputError: ``name`` is not a valid SQL function name.
        ModelNotFoundError: The model URI does not resolve.
    """
    if not name.replace("_", "a").isalnum() or name[0].isdigit():
        raise UserInputError(
            f"SQL function name must be letters, digits and underscores, not starting with a "
            f"digit. Received: name={name!r}"
        )
    resolved = model_uri if isinstance(model_uri, SparkModel) else spark_model(spark, model_uri)
    spark_scoring(resolved.model.schema).limit_batches(spark, resolved.model.schema, batch_bytes)
    return spark.udf.register(name, resolved.udf)


def set_arrow_batch_rows(spark, batch_rows: int | None) -> None:
    """Set the Arrow batch size (rows per pandas batch) for this session's pandas UDFs."""
    if batch_rows is None:
        return
    if batch_rows < 1:
        raise UserInputError(f"--batch-rows must be at least 1. Received: batch_rows={batch_rows}")
    spark.conf.set(ARROW_BATCH_CONF, str(batch_rows))
