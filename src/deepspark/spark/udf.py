"""The scoring UDF: an iterator-of-pandas UDF that loads the model once per Python worker.

The driver resolves the model URI (so a bad URI fails before any job), copies the model's files
under a content-addressed name and ships them with ``SparkContext.addFile``; each Python worker
loads it on its first batch and keeps it for every later batch and task (Spark reuses Python
workers). The UDF takes one struct column of the model's features, bound by name, and returns a
typed column: ``double`` for regression; ``struct<prediction, probability: struct<label: double>>``
for classification.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from deepspark.data.schema import FeatureSchema, label_type
from deepspark.tracking.model import KERAS_FILE, METADATA_FILE, DeepsparkModel

logger = logging.getLogger(__name__)

_SHIP_PREFIX = "deepspark-model-"
_KERAS_SUFFIX = ".keras"
_METADATA_SUFFIX = ".json"
# Per Python worker process: shipped model name -> loaded model, and how often each was loaded.
_WORKER_MODELS: dict[str, DeepsparkModel] = {}
_WORKER_LOADS: dict[str, int] = {}
# Per driver: (Spark application id, shipped name) pairs already added with addFile.
_SHIPPED: set[tuple[str, str]] = set()


def ship_model(spark, model_dir: str | Path) -> str:
    """Make a model available to every executor; return its shipped name.

    The model's two files are shipped with ``addFile`` (directories only ship on local masters)
    under a name derived from their bytes, so the same model ships once per application and two
    models never collide.
    """
    model_dir = Path(model_dir)
    digest = hashlib.sha256()
    for file_name in (KERAS_FILE, METADATA_FILE):
        digest.update((model_dir / file_name).read_bytes())
    name = _SHIP_PREFIX + digest.hexdigest()[:20]
    staged = Path(tempfile.gettempdir()) / "deepspark-spark-models"
    staged.mkdir(parents=True, exist_ok=True)
    context = spark.sparkContext
    for file_name, suffix in ((KERAS_FILE, _KERAS_SUFFIX), (METADATA_FILE, _METADATA_SUFFIX)):
        target = staged / (name + suffix)
        if not target.exists():
            partial = staged / f".{name}{suffix}.{uuid.uuid4().hex[:8]}"
            shutil.copy2(model_dir / file_name, partial)
            partial.rename(target)
        key = (context.applicationId, target.name)
        if key not in _SHIPPED:
            context.addFile(str(target))
            _SHIPPED.add(key)
    return name


def worker_model(shipped_name: str) -> DeepsparkModel:
    """The model in this Python worker, loaded on first use and then reused."""
    model = _WORKER_MODELS.get(shipped_name)
    if model is None:
        from pyspark import SparkFiles, TaskContext

        from deepspark.runtime import set_threads

        # A task owns spark.task.cpus cores; a framework using every core in each of the
        # executor's Python workers would oversubscribe them.
        task = TaskContext.get()
        if task is not None:
            set_threads(max(1, int(task.cpus())))

        model = DeepsparkModel.from_files(
            SparkFiles.get(shipped_name + _KERAS_SUFFIX),
            SparkFiles.get(shipped_name + _METADATA_SUFFIX),
        )
        _WORKER_MODELS[shipped_name] = model
        _WORKER_LOADS[shipped_name] = _WORKER_LOADS.get(shipped_name, 0) + 1
        logger.info("loaded %s in Python worker %d", shipped_name, os.getpid())
    return model


def worker_loads() -> dict[str, int]:
    """How many times each shipped model was loaded in this process (for checks and tests)."""
    return dict(_WORKER_LOADS)


def output_type(schema: FeatureSchema):
    """The Spark type of the UDF's result for a model with ``schema``."""
    from pyspark.sql import types as T

    if schema.task == "regression":
        return T.DoubleType()
    probability = T.StructType(
        [T.StructField(str(label), T.DoubleType()) for label in schema.class_labels]
    )
    return T.StructType(
        [
            T.StructField("prediction", _label_type(schema.class_labels)),
            T.StructField("probability", probability),
        ]
    )


def _label_type(labels):
    from pyspark.sql import types as T

    spark_types = {
        "boolean": T.BooleanType,
        "long": T.LongType,
        "double": T.DoubleType,
        "string": T.StringType,
    }
    return spark_types[label_type(labels)]()


def make_scoring_udf(shipped_name: str, schema: FeatureSchema):
    """The pandas UDF scoring one struct column of raw features (the SQL form:
    ``model(struct(*))``), bound by field name."""
    from pyspark.sql.functions import pandas_udf

    def score_struct_regression(batches: Iterator[pd.DataFrame]) -> Iterator[pd.Series]:
        model = worker_model(shipped_name)
        for batch in batches:
            yield _score(model, batch)

    def score_struct_classification(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        model = worker_model(shipped_name)
        for batch in batches:
            yield _score(model, batch)

    regression = schema.task == "regression"
    scorer = score_struct_regression if regression else score_struct_classification
    return pandas_udf(scorer, returnType=output_type(schema))


def make_column_udf(shipped_name: str, schema: FeatureSchema):
    """The pandas UDF taking the model's features as separate columns, in schema order.

    Spark hands separate columns to pandas several times faster than one struct column (see
    benchmarks/bench_spark_scoring.py), so the DataFrame API uses this form.
    """
    from pyspark.sql.functions import pandas_udf

    if len(schema.features) == 1:  # one column arrives as a Series, not a tuple
        return make_scoring_udf(shipped_name, schema)
    names = schema.feature_names

    def score_columns_regression(batches: Iterator[tuple[pd.Series, ...]]) -> Iterator[pd.Series]:
        model = worker_model(shipped_name)
        for columns in batches:
            yield _score(model, pd.DataFrame(dict(zip(names, columns, strict=True))))

    def score_columns_classification(
        batches: Iterator[tuple[pd.Series, ...]],
    ) -> Iterator[pd.DataFrame]:
        model = worker_model(shipped_name)
        for columns in batches:
            yield _score(model, pd.DataFrame(dict(zip(names, columns, strict=True))))

    regression = schema.task == "regression"
    scorer = score_columns_regression if regression else score_columns_classification
    return pandas_udf(scorer, returnType=output_type(schema))


def _score(model: DeepsparkModel, batch: pd.DataFrame) -> pd.Series | pd.DataFrame:
    output = model.predict_output(batch)
    if model.task == "regression":
        return pd.Series(output.reshape(-1).astype(np.float64))
    return _classification_frame(model, output)


def _classification_frame(model: DeepsparkModel, output: np.ndarray) -> pd.DataFrame:
    from deepspark.models.inference import format_predictions

    return _probability_structs(model, format_predictions(output, model.schema))


def image_output_type(schema: FeatureSchema):
    """The Spark type of an image model's UDF: ``struct<prediction, probability, error>``."""
    from pyspark.sql import types as T

    fields = list(output_type(schema).fields)
    return T.StructType([*fields, T.StructField("error", T.StringType())])


def make_image_udf(shipped_name: str, schema: FeatureSchema):
    """The pandas UDF of an image model: one column of encoded bytes or paths in; prediction,
    per-class probability and ``error`` (why an image was not scored, else null) out."""
    from pyspark.sql.functions import pandas_udf

    column = schema.feature_names[0]

    def score_images(batches: Iterator[pd.Series]) -> Iterator[pd.DataFrame]:
        from deepspark.models.inference import ERROR_COLUMN

        model = worker_model(shipped_name)
        for sources in batches:
            predicted = model.predict(pd.DataFrame({column: sources.to_numpy()}))
            structured = _probability_structs(model, predicted)
            structured["error"] = predicted[ERROR_COLUMN].to_numpy()
            yield structured

    return pandas_udf(score_images, returnType=image_output_type(schema))


def _probability_structs(model: DeepsparkModel, formatted: pd.DataFrame) -> pd.DataFrame:
    """``prediction`` + ``probability_<label>`` columns -> label + per-class probability struct."""
    from deepspark.models.inference import probability_column

    by_label = {
        str(label): formatted[probability_column(label)] for label in model.schema.class_labels
    }
    records = pd.DataFrame(by_label).to_dict("records")
    return pd.DataFrame({"prediction": formatted["prediction"].to_numpy(), "probability": records})
