"""Spark ML stages: ``KerasEstimator`` trains a deepspark model on a DataFrame and returns a
``KerasTransformer`` that scores DataFrames, works inside ``pyspark.ml.Pipeline`` and survives
``Pipeline.save`` / ``PipelineModel.load`` (the model files are saved inside the stage's folder,
so a saved pipeline does not depend on the MLflow store it was trained with).

PySpark is imported by ``deepspark.spark`` on first use of these classes.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

from pyspark.ml import Estimator, Model
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.util import (
    DefaultParamsReadable,
    DefaultParamsReader,
    DefaultParamsWritable,
    DefaultParamsWriter,
)

from deepspark.errors import UserInputError
from deepspark.spark.columns import quote

logger = logging.getLogger(__name__)

_MODEL_SUBDIR = "model"


class _ScoringParams(Params):
    predictionCol = Param(
        Params._dummy(), "predictionCol", "prediction column name", TypeConverters.toString
    )
    probabilityCol = Param(
        Params._dummy(),
        "probabilityCol",
        "per-class probability struct column name (classification)",
        TypeConverters.toString,
    )

    def __init__(self) -> None:
        super().__init__()
        self._setDefault(predictionCol="prediction", probabilityCol="probability")


class KerasEstimator(Estimator, _ScoringParams, DefaultParamsReadable, DefaultParamsWritable):
    """Train a deepspark Keras model on a Spark DataFrame.

    Args:
        inputCols: Feature columns (default: every column but ``labelCol``).
        labelCol: The target column.
        predictionCol: Output column of the fitted transformer.
        probabilityCol: Per-class probability struct of the fitted transformer (classification).
        **settings: The same training settings as ``deepspark.train`` / ``deepspark train``
            (``hidden=(64, 32)``, ``epochs=50``, ``lr=1e-3``, ``task="binary"``, ``experiment``,
            ...), validated by ``TrainConfig``.

    Example:
        >>> estimator = KerasEstimator(labelCol="price", hidden=(64, 32), epochs=50)
        >>> pipeline = Pipeline(stages=[estimator]).fit(train_df)
        >>> pipeline.transform(test_df).select("price", "prediction")
    """

    inputCols = Param(Params._dummy(), "inputCols", "feature columns", TypeConverters.toListString)
    labelCol = Param(Params._dummy(), "labelCol", "label column", TypeConverters.toString)
    settings = Param(
        Params._dummy(), "settings", "deepspark training settings (JSON)", TypeConverters.toString
    )

    def __init__(
        self,
        *,
        inputCols: list[str] | None = None,
        labelCol: str = "label",
        predictionCol: str = "prediction",
        probabilityCol: str = "probability",
        **settings: Any,
    ) -> None:
        super().__init__()
        self._setDefault(labelCol="label", settings="{}")
        self._set(labelCol=labelCol, predictionCol=predictionCol, probabilityCol=probabilityCol)
        if inputCols is not None:
            self._set(inputCols=list(inputCols))
        self._set(settings=json.dumps(_checked_settings(settings), sort_keys=True))

    def getSettings(self) -> dict[str, Any]:
        """The training settings this estimator passes to ``deepspark.train``."""
        return json.loads(self.getOrDefault(self.settings))

    def _fit(self, dataset) -> KerasTransformer:
        from deepspark.workflows.train import train

        label = self.getOrDefault(self.labelCol)
        columns = self._feature_columns(dataset, label)
        # Streamed by the executors into shards in the store: nothing is collected here.
        result = train(_training_frame(dataset, [*columns, label]), label, **self.getSettings())
        transformer = KerasTransformer(
            modelUri=result.model_uri,
            predictionCol=self.getOrDefault(self.predictionCol),
            probabilityCol=self.getOrDefault(self.probabilityCol),
        )
        transformer.trainResult = result
        return transformer

    def _feature_columns(self, dataset, label: str) -> list[str]:
        available = list(dataset.columns)
        columns = (
            self.getOrDefault(self.inputCols)
            if self.isDefined(self.inputCols)
            else [name for name in available if name != label]
        )
        missing = [name for name in [*columns, label] if name not in available]
        if missing:
            raise UserInputError(
                f"DataFrame is missing column(s) {', '.join(missing)}; set inputCols / labelCol "
                f"to existing columns. Received: columns={available}"
            )
        return columns


class KerasTransformer(Model, _ScoringParams, DefaultParamsReadable, DefaultParamsWritable):
    """Score a Spark DataFrame with a deepspark model (regression → ``double``; classification →
    the label plus a per-class probability struct).

    Args:
        modelUri: A deepspark model URI (``models:/...``, ``runs:/...``) or folder.
        predictionCol: Output column name.
        probabilityCol: Per-class probability struct column name (classification).
    """

    modelUri = Param(Params._dummy(), "modelUri", "deepspark model URI", TypeConverters.toString)

    def __init__(
        self,
        *,
        modelUri: str | None = None,
        predictionCol: str = "prediction",
        probabilityCol: str = "probability",
    ) -> None:
        super().__init__()
        if modelUri is not None:
            self._set(modelUri=modelUri)
        self._set(predictionCol=predictionCol, probabilityCol=probabilityCol)
        self.trainResult = None

    def getModelUri(self) -> str:
        return self.getOrDefault(self.modelUri)

    def _transform(self, dataset):
        from deepspark.spark.scoring import predict

        return predict(
            dataset,
            self.getModelUri(),
            prediction_col=self.getOrDefault(self.predictionCol),
            probability_col=self.getOrDefault(self.probabilityCol),
        )

    def write(self) -> _TransformerWriter:
        return _TransformerWriter(self)

    @classmethod
    def read(cls) -> _TransformerReader:
        return _TransformerReader(cls)


class _TransformerWriter(DefaultParamsWriter):
    """Saves the params and a copy of the model files under ``<path>/model``."""

    def saveImpl(self, path: str) -> None:
        from deepspark.tracking.model import resolve_model_dir

        DefaultParamsWriter.saveMetadata(self.instance, path, self.sparkSession)
        save_stage_model(self.sparkSession, resolve_model_dir(self.instance.getModelUri()), path)


class _TransformerReader(DefaultParamsReader):
    """Loads the params and points ``modelUri`` at a local copy of the saved model files."""

    def load(self, path: str) -> KerasTransformer:
        instance = super().load(path)
        local = load_stage_model(self.sparkSession, path, prefix="deepspark-stage-model-")
        instance._set(modelUri=str(local))
        return instance


def save_stage_model(spark, model_dir: Path, stage_path: str) -> None:
    """Copy a deepspark model folder's files under a saved Spark ML stage (any Hadoop path)."""
    from deepspark.tracking.model import KERAS_FILE, METADATA_FILE

    target = f"{stage_path.rstrip('/')}/{_MODEL_SUBDIR}"
    for file_name in (KERAS_FILE, METADATA_FILE):
        hadoop_copy(spark, str(Path(model_dir) / file_name), f"{target}/{file_name}")


def load_stage_model(spark, stage_path: str, *, prefix: str) -> Path:
    """The model files saved by ``save_stage_model``, copied to a new local folder."""
    from deepspark.tracking.model import KERAS_FILE, METADATA_FILE

    local = Path(tempfile.mkdtemp(prefix=prefix))
    source = f"{stage_path.rstrip('/')}/{_MODEL_SUBDIR}"
    for file_name in (KERAS_FILE, METADATA_FILE):
        hadoop_copy(spark, f"{source}/{file_name}", str(local / file_name))
    return local


def hadoop_copy(spark, source: str, target: str) -> None:
    """Copy one file between any two Hadoop file systems (local, HDFS, S3...)."""
    jvm = spark.sparkContext._jvm
    configuration = spark.sparkContext._jsc.hadoopConfiguration()
    source_path = jvm.org.apache.hadoop.fs.Path(source)
    target_path = jvm.org.apache.hadoop.fs.Path(target)
    jvm.org.apache.hadoop.fs.FileUtil.copy(
        source_path.getFileSystem(configuration),
        source_path,
        target_path.getFileSystem(configuration),
        target_path,
        False,
        True,
        configuration,
    )


def _checked_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """Validate training settings now (not at fit time) with the same rules as the CLI."""
    from deepspark.config import make_config

    for reserved in ("data", "target"):
        if reserved in settings:
            raise UserInputError(
                f"KerasEstimator takes the data in fit() and the target as labelCol; "
                f"remove {reserved}=. Received: {reserved}={settings[reserved]!r}"
            )
    make_config({"data": "<spark DataFrame>", "target": "<labelCol>", **settings})
    return {
        name: list(value) if isinstance(value, tuple) else value for name, value in settings.items()
    }


def _training_frame(dataset, columns: list[str]):
    """The columns training needs (decimals as doubles), refused when empty."""
    from pyspark.sql import types as T

    types = {field.name: field.dataType for field in dataset.schema.fields}
    selected = [
        dataset[quote(name)].cast("double").alias(name)
        if isinstance(types[name], T.DecimalType)
        else dataset[quote(name)]
        for name in columns
    ]
    frame = dataset.select(*selected)
    if frame.isEmpty():
        raise UserInputError("KerasEstimator.fit got an empty DataFrame; give it rows to train on.")
    return frame
