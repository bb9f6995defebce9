"""deepspark on Spark: the session builder, data sources, scoring UDFs, SQL functions and the
Spark ML ``KerasEstimator`` / ``KerasTransformer``.

PySpark is optional (``pip install 'deepspark[spark]'``); it is imported when first used.

Example::

    from deepspark.spark import get_session, predict, register_model
    spark = get_session()
    scored = predict(spark.read.parquet("houses"), "models:/m-123")
    register_model(spark, "price_model", "models:/m-123")
    spark.sql("SELECT *, price_model(struct(*)) AS price FROM houses")
"""

from __future__ import annotations

from deepspark._lazy import lazy_attributes

__all__ = [
    "ImageFeaturizer",
    "KerasEstimator",
    "KerasTransformer",
    "get_session",
    "predict",
    "read_image_files",
    "read_source",
    "register_model",
    "score_to_parquet",
    "spark_model",
]

_LAZY = {
    "get_session": "deepspark.spark.session",
    "read_source": "deepspark.spark.session",
    "read_image_files": "deepspark.spark.images",
    "predict": "deepspark.spark.scoring",
    "register_model": "deepspark.spark.scoring",
    "spark_model": "deepspark.spark.scoring",
    "score_to_parquet": "deepspark.spark.jobs",
    "KerasEstimator": "deepspark.spark.ml",
    "KerasTransformer": "deepspark.spark.ml",
    "ImageFeaturizer": "deepspark.spark.featurizer",
}


def _require_pyspark() -> None:
    from deepspark._optional import require

    require("pyspark", feature="Spark")


__getattr__ = lazy_attributes(__name__, _LAZY, before=_require_pyspark)
