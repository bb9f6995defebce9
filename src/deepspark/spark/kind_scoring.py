"""How each model kind scores on Spark: its UDFs, the columns they take, and the session
settings they need, registered per kind (``models.kinds``) so that the scoring functions ask
the kind instead of testing it.

- ``TableScoring``: the features as separate (bound and cast) columns; a pandas UDF, a struct
  UDF for SQL and, on Spark 4.1+, an Arrow UDF; ``mapInArrow`` on Spark 4.0.
- ``ImageScoring``: one column of image bytes or paths; one pandas UDF, with batch limits in
  bytes (decoded images are large).

A new kind adds a ``SparkScoring`` with ``register_spark_scoring``.
"""

from __future__ import annotations

from deepspark.data.schema import FeatureSchema
from deepspark.models.kinds import ModelKind, kind_of


class SparkScoring:
    """The Spark side of one model kind.

    Attributes:
        scores_arrow: Whether ``mapInArrow`` can score it (table inputs encoded from Arrow).
    """

    scores_arrow = False

    def udfs(self, shipped_name: str, schema: FeatureSchema) -> tuple:
        """``(struct_udf, column_udf, arrow_udf or None)`` for the shipped model."""
        raise NotImplementedError

    def inputs(self, frame, schema: FeatureSchema) -> list:
        """The UDF's argument columns of ``frame`` (missing columns named before any job)."""
        raise NotImplementedError

    def limit_batches(self, spark, schema: FeatureSchema, batch_bytes: int | None) -> None:
        """Set the session's Arrow batch limits this kind needs (``batch_bytes``: images)."""


class TableScoring(SparkScoring):
    scores_arrow = True

    def udfs(self, shipped_name: str, schema: FeatureSchema) -> tuple:
        from deepspark.spark.arrow_scoring import arrow_udf_available, make_arrow_udf
        from deepspark.spark.udf import make_column_udf, make_scoring_udf

        arrow = make_arrow_udf(shipped_name, schema) if arrow_udf_available() else None
        return (
            make_scoring_udf(shipped_name, schema),
            make_column_udf(shipped_name, schema),
            arrow,
        )

    def inputs(self, frame, schema: FeatureSchema) -> list:
        from deepspark.spark.columns import feature_columns

        return feature_columns(frame, schema)


class ImageScoring(SparkScoring):
    def udfs(self, shipped_name: str, schema: FeatureSchema) -> tuple:
        from deepspark.spark.udf import make_image_udf

        image_udf = make_image_udf(shipped_name, schema)
        return image_udf, image_udf, None

    def inputs(self, frame, schema: FeatureSchema) -> list:
        from deepspark.spark.images import image_input_column

        return [image_input_column(frame, schema)]

    def limit_batches(self, spark, schema: FeatureSchema, batch_bytes: int | None) -> None:
        from deepspark.spark.images import image_batch_limits

        image_batch_limits(spark, schema, batch_bytes)


_SCORINGS: dict[str, SparkScoring] = {"tabular": TableScoring(), "image": ImageScoring()}


def register_spark_scoring(kind: ModelKind, scoring: SparkScoring) -> None:
    """Score models of ``kind`` on Spark with ``scoring``."""
    _SCORINGS[kind.name] = scoring


def spark_scoring(schema: FeatureSchema) -> SparkScoring:
    """The Spark scoring of a model's kind."""
    return _SCORINGS[kind_of(schema).name]
