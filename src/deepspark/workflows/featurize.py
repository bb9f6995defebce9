"""``featurize``: one feature vector per image from a pretrained ImageNet network.

One row per image: the input's columns (a folder gives ``path``, and ``label`` / ``split`` when
it has class / split subfolders; image bytes are left out), ``features`` (float32, as many for
every image; a list in Parquet, its size in the file's metadata) and ``error``: why an image
could not be read (its ``features`` are then null), else null. The vectors are what a linear
probe or any other model trains on: the network without its head, global-average-pooled
(``layer`` picks another layer).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from deepspark.models.inference import ERROR_COLUMN

FEATURES_COLUMN = "features"
FEATURE_SIZE_KEY = b"deepspark.feature_size"
_OUTPUT_SUFFIXES = (".parquet", ".pq", ".json", ".jsonl")


def featurize(
    data: Any,
    *,
    model: str = "mobilenet_v2",
    weights: str | Path | None = "imagenet",
    layer: str | None = None,
    base_options: dict[str, Any] | None = None,
    image_size: Any = None,
    output: str | Path | None = None,
    overwrite: bool = False,
    spark: bool = False,
    master: str | None = None,
    batch_bytes: int | None = None,
):
    """Compute a feature vector per image with a pretrained network (transfer learning).

    Args:
        data: An image folder (class subfolders, or images directly in it), a glob or one
            image file, local or a URI (``s3://bucket/photos/``); a table with an ``image``
            (bytes) or ``path`` column, or a pandas DataFrame; with ``spark`` also a table
            name, a Hadoop URI or a Spark DataFrame.
        model: A keras.applications network, any spelling (``mobilenet_v2``, ``ResNet50``).
        weights: ``"imagenet"`` (Keras downloads them), a local weights file without the top,
            or ``None`` (random: for tests).
        layer: A layer of the network, by name (``block_13_expand_relu``); a 4-D feature map
            is global-average-pooled to one value per channel. Default: the last block,
            global-average-pooled.
        base_options: Constructor options of the network, e.g. ``{"alpha": 0.35}``.
        image_size: Input size (160 or ``(160, 160)``); default the network's native size.
        output: ``.parquet`` (``features`` as a list of float32, the same size for every
            image, ``deepspark.feature_size`` in the file's metadata) or ``.jsonl``;
            with ``spark`` a Parquet folder (``features`` as an array of float). Checked
            before any work.
        overwrite: Replace an existing ``output``.
        spark: Featurize on Spark with ``deepspark.spark.ImageFeaturizer`` (images read and
            decoded on the executors; the network shipped once, loaded once per worker).
        master: Spark master URL when no session is active.
        batch_bytes: Spark: most bytes of images per batch sent to Python (default 64 MB).

    Returns:
        A pandas DataFrame; with ``spark``, a Spark DataFrame (the written output read back, or
        the lazy result when there is no ``output``).

    Raises:
        UserInputError: Bad data, network, layer (valid names listed), weights, options or an
            existing output; bad image files are never an error (see ``error``).

    Example:
        >>> features = deepspark.featurize("photos/", weights="base.weights.h5",
        ...                                base_options={"alpha": 0.35}, image_size=160)
    """
    from deepspark.workflows import _image_jobs
    from deepspark.workflows.pretrained import check_image_size

    size = check_image_size(image_size)
    if spark:
        return _featurize_spark(
            data,
            model=model,
            weights=weights,
            layer=layer,
            base_options=base_options,
            image_size=size,
            output=output,
            overwrite=overwrite,
            master=master,
            batch_bytes=batch_bytes,
        )
    if output is not None:
        _check_output(output, overwrite)
    frame, column = _image_jobs.image_table(data)
    from deepspark.models.image_features import feature_extractor

    network = feature_extractor(
        model, weights=weights, layer=layer, image_size=size, base_options=base_options
    )
    results = _feature_frame(network, frame[column])
    _image_jobs.log_bad_images(results[ERROR_COLUMN])
    featurized = _image_jobs.passed_through(frame, results)
    if output is not None:
        write_features(featurized, output, size=int(network.output.shape[-1]))
    return featurized


def _check_output(output, overwrite: bool) -> None:
    from deepspark.data.writers import check_output_path
    from deepspark.workflows._image_jobs import check_output_suffix

    check_output_suffix(output, _OUTPUT_SUFFIXES)
    check_output_path(output, overwrite=overwrite)


def _feature_frame(network, sources: pd.Series) -> pd.DataFrame:
    from deepspark._progress import work_progress
    from deepspark.data.schema import ImageSpec
    from deepspark.models.image_features import feature_rows

    height, width = (int(side) for side in network.input.shape[1:3])
    spec = ImageSpec(height, width, 3)
    values = sources.tolist()
    with work_progress("featurizing images", len(values)) as advance:
        vectors, errors = feature_rows(network, values, spec, progress=advance)
    return pd.DataFrame(
        {
            FEATURES_COLUMN: pd.Series(vectors, dtype=object),
            ERROR_COLUMN: pd.Series(errors, dtype=object),
        }
    )


def write_features(frame: pd.DataFrame, output: str | Path, *, size: int) -> Path:
    """Write a featurized table atomically: Parquet with ``features`` as a list of ``size``
    float32 per row (null for a bad image; ``deepspark.feature_size`` in the file's metadata),
    or JSON lines with a list per row.

    Arrow's fixed-size list type would say the size in the type, but a null fixed-size list
    cannot be read back from Parquet (apache/arrow#35692), and Spark writes its arrays as
    plain lists too: both outputs have the same type.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from deepspark._atomic import atomic_path

    path = Path(output)
    vectors = frame[FEATURES_COLUMN]
    with atomic_path(path) as temporary:
        if path.suffix.lower() in (".json", ".jsonl"):
            listed = vectors.map(lambda vector: None if vector is None else vector.tolist())
            frame.assign(**{FEATURES_COLUMN: listed}).to_json(
                temporary, orient="records", lines=True
            )
        else:
            rest = frame.drop(columns=FEATURES_COLUMN).astype({ERROR_COLUMN: "string"})
            table = pa.Table.from_pandas(rest, preserve_index=False)
            column = pa.array(vectors.tolist(), type=pa.list_(pa.float32()))
            position = list(frame.columns).index(FEATURES_COLUMN)
            table = table.add_column(position, FEATURES_COLUMN, column)
            metadata = {**(table.schema.metadata or {}), FEATURE_SIZE_KEY: str(size).encode()}
            pq.write_table(table.replace_schema_metadata(metadata), temporary)
    return path


def _featurize_spark(data: Any, *, output, overwrite: bool, master, batch_bytes, **network):
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    from deepspark.spark.columns import quote
    from deepspark.spark.featurizer import ImageFeaturizer
    from deepspark.workflows import _image_jobs

    session = _image_jobs.spark_job_session(master, output, overwrite=overwrite)
    frame = _image_jobs.spark_images(session, data)
    featurizer = ImageFeaturizer(
        inputCol=_image_jobs.spark_image_column(frame),
        outputCol=FEATURES_COLUMN,
        modelName=network["model"],
        weights=network["weights"],
        layer=network["layer"],
        baseOptions=network["base_options"],
        imageSize=list(network["image_size"]) if network["image_size"] else None,
        handleInvalid="keep",
        errorCol=ERROR_COLUMN,
        batchBytes=batch_bytes,
    )
    featurizer.modelDirectory()  # a bad network, layer or weights fails before any job
    kept = [
        quote(field.name)
        for field in frame.schema.fields
        if field.name not in (FEATURES_COLUMN, ERROR_COLUMN)
        and not isinstance(field.dataType, T.BinaryType)
    ]
    vectors = F.col(FEATURES_COLUMN)
    featurized = featurizer.transform(frame).select(
        *kept,
        F.when(vectors.isNotNull(), vector_to_array(vectors, "float32")).alias(FEATURES_COLUMN),
        F.col(ERROR_COLUMN),
    )
    return _image_jobs.write_spark_output(featurized, None if output is None else str(output))
