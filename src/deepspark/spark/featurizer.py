"""``ImageFeaturizer``: a Spark ML Transformer turning images into ImageNet feature vectors.

It adds ``outputCol`` (``features``), a ``pyspark.ml.linalg`` vector per image, computed by a
pretrained keras.applications network without its head (global-average-pooled last block, or a
layer chosen by name), so that ``Pipeline([ImageFeaturizer(), LogisticRegression()])`` is a
linear probe / transfer-learning classifier on Spark. The network is built once on the driver,
shipped to the executors once and loaded once per Python worker; ``Pipeline.save`` stores it
inside the stage's folder, so ``PipelineModel.load`` needs neither the weights file nor a
download.

Images that cannot be read (missing, corrupt, not an image) follow ``handleInvalid``, as in
Spark's own feature transformers (``VectorAssembler``, ``StringIndexer``):

- ``skip`` (default): their rows are left out, so a downstream estimator never sees a null
  vector (``LogisticRegression`` would fail on one);
- ``keep``: their rows stay, with a null vector and the reason in ``errorCol`` (``error``);
- ``error``: the job fails at the first one, naming it.

PySpark is imported by ``deepspark.spark`` on first use of this class.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
from pyspark.ml import Transformer
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasHandleInvalid, HasInputCol, HasOutputCol
from pyspark.ml.util import (
    DefaultParamsReadable,
    DefaultParamsReader,
    DefaultParamsWritable,
    DefaultParamsWriter,
)

from deepspark.errors import UserInputError
from deepspark.spark.columns import quote

HANDLE_INVALID = ("skip", "keep", "error")
FEATURES_TASK = "features"  # the task of a shipped feature extractor (never logged)
_RESULT = "__deepspark_features"


class ImageFeaturizer(
    Transformer,
    HasInputCol,
    HasOutputCol,
    HasHandleInvalid,
    DefaultParamsReadable,
    DefaultParamsWritable,
):
    """Add a feature vector per image computed by a pretrained ImageNet network.

    Args:
        inputCol: Encoded image bytes (binary; ``content`` from
            ``spark.read.format("binaryFile")``) or file paths (string).
        outputCol: The vector column (``VectorUDT``).
        modelName: A keras.applications network, any spelling (``mobilenet_v2``).
        weights: ``"imagenet"`` (downloaded by Keras on the driver), a local weights file
            without the top, or ``"none"`` (random).
        layer: A layer of the network by name (a feature map is global-average-pooled);
            default the last block, pooled.
        baseOptions: Constructor options as a dict or JSON, e.g. ``{"alpha": 0.35}``.
        imageSize: ``[height, width]`` or one side; default the network's native size.
        handleInvalid: ``skip`` (default), ``keep`` or ``error`` for unreadable images.
        errorCol: With ``keep``: why a row's image could not be read (null when it could).
        batchBytes: Most bytes of images per batch sent to Python (default 64 MB).

    Example:
        >>> images = spark.read.format("binaryFile").load("photos/")
        >>> featurizer = ImageFeaturizer(weights="base.weights.h5", baseOptions={"alpha": 0.35})
        >>> model = Pipeline(stages=[featurizer, LogisticRegression()]).fit(labelled)
    """

    modelName = Param(
        Params._dummy(), "modelName", "keras.applications network", TypeConverters.toString
    )
    weights = Param(
        Params._dummy(),
        "weights",
        "'imagenet', a local weights file, or 'none'",
        TypeConverters.toString,
    )
    layer = Param(
        Params._dummy(), "layer", "layer name (empty: the last block)", TypeConverters.toString
    )
    baseOptions = Param(
        Params._dummy(),
        "baseOptions",
        "network constructor options (JSON)",
        TypeConverters.toString,
    )
    imageSize = Param(
        Params._dummy(), "imageSize", "[height, width] (empty: native)", TypeConverters.toListInt
    )
    errorCol = Param(
        Params._dummy(), "errorCol", "reason column (handleInvalid='keep')", TypeConverters.toString
    )
    batchBytes = Param(
        Params._dummy(), "batchBytes", "bytes of images per batch", TypeConverters.toInt
    )

    def __init__(
        self,
        *,
        inputCol: str = "content",
        outputCol: str = "features",
        modelName: str = "mobilenet_v2",
        weights: str | os.PathLike[str] | None = "imagenet",
        layer: str | None = None,
        baseOptions: dict[str, Any] | str | None = None,
        imageSize: int | list[int] | None = None,
        handleInvalid: str = "skip",
        errorCol: str = "error",
        batchBytes: int | None = None,
    ) -> None:
        from deepspark.spark.images import DEFAULT_BATCH_BYTES

        super().__init__()
        self._setDefault(
            inputCol="content",
            outputCol="features",
            modelName="mobilenet_v2",
            weights="imagenet",
            layer="",
            baseOptions="{}",
            imageSize=[],
            handleInvalid="skip",
            errorCol="error",
            batchBytes=DEFAULT_BATCH_BYTES,
        )
        self._set(
            inputCol=inputCol,
            outputCol=outputCol,
            modelName=modelName,
            weights="none" if weights is None else os.fspath(weights),
            layer=layer or "",
            baseOptions=_options_json(baseOptions),
            imageSize=_sides(imageSize),
            handleInvalid=_checked_choice(handleInvalid),
            errorCol=errorCol,
        )
        if batchBytes is not None:
            self._set(batchBytes=int(batchBytes))
        self._model_dir: Path | None = None  # set when loaded from a saved pipeline

    def getBaseOptions(self) -> dict[str, Any]:
        """The network's constructor options."""
        return json.loads(self.getOrDefault(self.baseOptions))

    def _transform(self, dataset):
        from pyspark.ml.functions import array_to_vector
        from pyspark.sql import functions as F

        from deepspark.spark.images import image_batch_limits
        from deepspark.spark.udf import ship_model

        spark = dataset.sparkSession
        column = _input_column(dataset, self.getInputCol())
        model_dir = self.modelDirectory()
        image_batch_limits(spark, _schema(model_dir), self.getOrDefault(self.batchBytes))
        handle = _checked_choice(self.getHandleInvalid())
        udf = features_udf(ship_model(spark, model_dir), fail=handle == "error")
        # Evaluated once per row even when the result is filtered (skip) as well as selected.
        scored = dataset.withColumn(_RESULT, udf.asNondeterministic()(F.col(quote(column))))
        output = self.getOutputCol()
        if handle == "skip":
            scored = scored.filter(F.col(f"{_RESULT}.features").isNotNull())
        vectors = F.col(f"{_RESULT}.features")
        # array_to_vector fails on a null array rather than giving a null vector.
        scored = scored.withColumn(output, F.when(vectors.isNotNull(), array_to_vector(vectors)))
        if handle == "keep":
            scored = scored.withColumn(self.getOrDefault(self.errorCol), F.col(f"{_RESULT}.error"))
        return scored.drop(_RESULT)

    def modelDirectory(self) -> Path:
        """The folder of the feature network this stage ships (built on first use, once per
        process and settings; a loaded stage uses the copy saved with it)."""
        if self._model_dir is not None:
            return self._model_dir
        weights = self.getOrDefault(self.weights)
        return built_featurizer(
            self.getOrDefault(self.modelName),
            None if weights.lower() == "none" else weights,
            self.getOrDefault(self.layer) or None,
            self.getOrDefault(self.baseOptions),
            tuple(self.getOrDefault(self.imageSize)),
            _stamp(weights),
        )

    def write(self) -> _FeaturizerWriter:
        return _FeaturizerWriter(self)

    @classmethod
    def read(cls) -> _FeaturizerReader:
        return _FeaturizerReader(cls)


def _options_json(options: dict[str, Any] | str | None) -> str:
    if options is None:
        return "{}"
    try:
        parsed = json.loads(options) if isinstance(options, str) else dict(options)
    except (TypeError, ValueError) as error:
        raise UserInputError(
            f"baseOptions must be a dict or a JSON object such as '{{\"alpha\": 0.35}}'. "
            f"Received: baseOptions={options!r}"
        ) from error
    if not isinstance(parsed, dict):
        raise UserInputError(
            f"baseOptions must be a dict or a JSON object. Received: baseOptions={options!r}"
        )
    return json.dumps(parsed, sort_keys=True)


def _sides(image_size: int | list[int] | tuple[int, ...] | None) -> list[int]:
    if image_size is None:
        return []
    sides = [int(image_size)] * 2 if isinstance(image_size, int) else [int(s) for s in image_size]
    if len(sides) == 1:
        sides *= 2
    if len(sides) != 2 or min(sides) <= 0:
        raise UserInputError(
            f"imageSize must be one positive side or [height, width]. "
            f"Received: imageSize={image_size!r}"
        )
    return sides


def _checked_choice(handle_invalid: str) -> str:
    if handle_invalid not in HANDLE_INVALID:
        raise UserInputError(
            f"handleInvalid must be one of {', '.join(HANDLE_INVALID)}. "
            f"Received: handleInvalid={handle_invalid!r}"
        )
    return handle_invalid


def _stamp(weights: str) -> tuple[int, int] | None:
    """A local weights file's size and modification time, so a changed file is rebuilt."""
    path = Path(weights).expanduser()
    if not path.is_file():
        return None
    status = path.stat()
    return (status.st_size, status.st_mtime_ns)


def _input_column(dataset, name: str) -> str:
    from pyspark.sql import types as T

    types = {field.name: field.dataType for field in dataset.schema.fields}
    if name not in types:
        raise UserInputError(
            f"ImageFeaturizer's inputCol is not in the DataFrame; give a binary column of image "
            f"bytes or a string column of paths. Received: inputCol={name!r}, "
            f"columns={list(types)}"
        )
    if not isinstance(types[name], T.BinaryType | T.StringType):
        raise UserInputError(
            f"Column '{name}' has type {types[name].simpleString()}; ImageFeaturizer needs "
            f"image bytes (binary) or file paths (string). Received: inputCol={name!r}"
        )
    return name


@functools.lru_cache(maxsize=8)
def built_featurizer(
    model: str,
    weights: str | None,
    layer: str | None,
    options_json: str,
    image_size: tuple[int, ...],
    weights_stamp: tuple[int, int] | None = None,
) -> Path:
    """Build a feature network and save it as a deepspark model folder (removed at exit).

    ``weights_stamp`` is only part of the cache key.

    Raises:
        UserInputError: Unknown network or layer, missing weights, bad options.
    """
    from deepspark.data.image_inputs import image_schema
    from deepspark.data.schema import ImageSpec
    from deepspark.models.image_features import feature_extractor
    from deepspark.tracking.model import DeepsparkModel

    network = feature_extractor(
        model,
        weights=weights,
        layer=layer,
        image_size=image_size or None,
        base_options=json.loads(options_json),
    )
    height, width = (int(side) for side in network.input.shape[1:3])
    schema = image_schema(
        ImageSpec(height, width, 3),
        target="features",
        task=FEATURES_TASK,
        class_labels=(),
        column="image",
    )
    origin = {"model": model, "layer": layer, "base_options": json.loads(options_json)}
    origin["weights"] = weights if weights in (None, "imagenet") else Path(weights).name
    metadata = {"featurizer": origin, "feature_size": int(network.output.shape[-1])}
    folder = Path(tempfile.mkdtemp(prefix="deepspark-featurizer-"))
    atexit.register(shutil.rmtree, folder, True)
    return DeepsparkModel(network, schema, metadata).save(folder)


def _schema(model_dir: Path):
    from deepspark.data.schema import FeatureSchema
    from deepspark.tracking.model import METADATA_FILE

    return FeatureSchema.from_dict(json.loads((model_dir / METADATA_FILE).read_text())["schema"])


def features_udf(shipped_name: str, *, fail: bool = False):
    """A pandas UDF: one column of image bytes or paths in; ``struct<features: array<float>,
    error: string>`` out (a null vector and the reason for an unreadable image; with ``fail``,
    a ``DataError`` naming it instead)."""
    from pyspark.sql import types as T
    from pyspark.sql.functions import pandas_udf

    return_type = T.StructType(
        [
            T.StructField("features", T.ArrayType(T.FloatType())),
            T.StructField("error", T.StringType()),
        ]
    )

    def featurize_images(batches: Iterator[pd.Series]) -> Iterator[pd.DataFrame]:
        from deepspark.models.image_features import feature_rows
        from deepspark.spark.udf import worker_model

        featurizer = worker_model(shipped_name)
        for sources in batches:
            values = sources.tolist()
            vectors, errors = feature_rows(featurizer.keras_model, values, featurizer.schema.image)
            if fail:
                _raise_first_error(values, errors)
            yield pd.DataFrame({"features": vectors, "error": errors})

    return pandas_udf(featurize_images, returnType=return_type)


def _raise_first_error(sources: list, errors: list[str | None]) -> None:
    from deepspark.errors import DataError

    for source, reason in zip(sources, errors, strict=True):
        if reason is not None:
            named = source if isinstance(source, str) else "an image in the batch (bytes)"
            raise DataError(
                f"Image could not be read ({reason}); set handleInvalid='skip' or 'keep' to go "
                f"on past unreadable images. Received: image={named!r}"
            )


class _FeaturizerWriter(DefaultParamsWriter):
    """Saves the params and the feature network's files under ``<path>/model``."""

    def saveImpl(self, path: str) -> None:
        from deepspark.spark.ml import save_stage_model

        DefaultParamsWriter.saveMetadata(self.instance, path, self.sparkSession)
        save_stage_model(self.sparkSession, self.instance.modelDirectory(), path)


class _FeaturizerReader(DefaultParamsReader):
    """Loads the params and a local copy of the saved feature network."""

    def load(self, path: str) -> ImageFeaturizer:
        from deepspark.spark.ml import load_stage_model

        instance = super().load(path)
        local = load_stage_model(self.sparkSession, path, prefix="deepspark-featurizer-")
        atexit.register(shutil.rmtree, local, True)
        instance._model_dir = local
        return instance
