"""``classify``: the top-k ImageNet classes of every image, with a pretrained network.

One row per image: the input's columns (a folder gives ``path``, and ``label`` / ``split`` when
it has class / split subfolders; image bytes are left out), ``label_1`` ... ``label_k`` (the
ImageNet class names, most probable first), ``probability_1`` ... ``probability_k`` and
``error``: why an image could not be classified (its labels are then null), else null. Only the
top k of each row are kept as the images are scored a chunk at a time, so a large input never
holds 1000 probabilities per image.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deepspark.errors import UserInputError
from deepspark.models.inference import ERROR_COLUMN

DEFAULT_TOP = 5
_TABLE_SUFFIXES = (".csv", ".parquet", ".pq", ".json", ".jsonl")


def classify(
    data: Any,
    *,
    model: str = "mobilenet_v2",
    weights: str | Path | None = "imagenet",
    top: int = DEFAULT_TOP,
    base_options: dict[str, Any] | None = None,
    image_size: Any = None,
    output: str | Path | None = None,
    overwrite: bool = False,
    spark: bool = False,
    master: str | None = None,
    batch_bytes: int | None = None,
):
    """Classify images with a pretrained ImageNet network: the top ``top`` classes of each.

    Args:
        data: An image folder (class subfolders, or images directly in it), a glob
            (``photos/*.jpg``) or one image file, local or a URI (``s3://bucket/photos/``:
            the images are read where they are decoded); a table with an ``image`` (bytes) or
            ``path`` column, or a pandas DataFrame; with ``spark`` also a table name, a Hadoop
            URI or a Spark DataFrame.
        model: A keras.applications network, any spelling (``mobilenet_v2``, ``ResNet50``).
        weights: ``"imagenet"`` (Keras downloads them), a local weights file with the
            1000-class top, or ``None`` (random: for tests).
        top: Classes kept per image (1 to 1000).
        base_options: Constructor options of the network, e.g. ``{"alpha": 0.35}``.
        image_size: Input size (224 or ``(224, 224)``); default the network's native size.
        output: Where to write the result: ``.csv``, ``.parquet`` or ``.jsonl``; with
            ``spark`` a Parquet folder (any Hadoop path). Checked before any work.
        overwrite: Replace an existing ``output``.
        spark: Classify on Spark: the images are read and decoded on the executors, the
            network is shipped once and loaded once per Python worker.
        master: Spark master URL when no session is active.
        batch_bytes: Spark: most bytes of images per batch sent to Python (default 64 MB).

    Returns:
        A pandas DataFrame; with ``spark``, a Spark DataFrame (the written output read back, or
        the lazy result when there is no ``output``).

    Raises:
        UserInputError: Bad data, network, weights, options, ``top`` or an existing output;
            bad image files are never an error (their row has the reason in ``error``).

    Example:
        >>> deepspark.classify("photos/", weights="mobilenet_v2_top.weights.h5", top=3)
    """
    from deepspark.workflows.pretrained import pretrained_classifier

    top = _check_top(top)
    network = {"weights": weights, "base_options": base_options, "image_size": image_size}
    if spark:
        from deepspark.workflows import _image_jobs

        session = _image_jobs.spark_job_session(master, output, overwrite=overwrite)
        frame = _image_jobs.spark_images(session, data)
        classifier = pretrained_classifier(model, **network)
        return _classify_spark(frame, classifier, top, output=output, batch_bytes=batch_bytes)
    if output is not None:
        _check_local_output(output, overwrite)
    return _classify_local(data, model, network, top, output=output, overwrite=overwrite)


def _classify_local(data, model: str, network: dict, top: int, *, output, overwrite: bool):
    from deepspark._progress import work_progress
    from deepspark.workflows import _image_jobs
    from deepspark.workflows.pretrained import pretrained_classifier

    frame, column = _image_jobs.image_table(data)  # bad data fails before the network is built
    classifier = pretrained_classifier(model, **network)
    sources = frame[column].tolist()
    with work_progress("classifying images", len(sources)) as advance:
        results = classified_rows(
            classifier.keras_model, sources, classifier.schema, top, progress=advance
        )
    _image_jobs.log_bad_images(results[ERROR_COLUMN])
    classified = _image_jobs.passed_through(frame, results)
    if output is not None:
        from deepspark.data.writers import write_table

        # Typed text columns, so that a column of nulls (no bad image) is still a string.
        text = {name: "string" for name in result_columns(top) if "probability" not in name}
        write_table(classified.astype(text), output, overwrite=overwrite)
    return classified


def _check_top(top: Any) -> int:
    try:
        value = int(top)
    except (TypeError, ValueError):
        value = 0
    if value != top or not 1 <= value <= 1000:
        raise UserInputError(
            f"Invalid --top: give a number of classes from 1 to 1000. Received: top={top!r}"
        )
    return value


def _check_local_output(output, overwrite: bool) -> None:
    from deepspark.data.writers import check_output_path
    from deepspark.workflows._image_jobs import check_output_suffix

    check_output_suffix(output, _TABLE_SUFFIXES)
    check_output_path(output, overwrite=overwrite)


def result_columns(top: int) -> list[str]:
    """``label_1`` ... ``label_k``, ``probability_1`` ... ``probability_k``, ``error``."""
    labels = [f"label_{rank}" for rank in range(1, top + 1)]
    probabilities = [f"probability_{rank}" for rank in range(1, top + 1)]
    return [*labels, *probabilities, ERROR_COLUMN]


def classified_rows(
    network,
    sources: Sequence,
    schema,
    top: int,
    *,
    progress: Callable[[int], None] | None = None,
) -> pd.DataFrame:
    """The top ``top`` classes of each source (bytes, path or ``None``), in input order: the
    ``result_columns``; a bad image has null labels, NaN probabilities and its reason."""
    from deepspark.models.image_features import image_outputs, top_k

    names = np.asarray(schema.class_labels, dtype=object)
    labels = np.full((len(sources), top), None, dtype=object)
    probabilities = np.full((len(sources), top), np.nan)
    errors: list[str | None] = [None] * len(sources)
    for chunk in image_outputs(network, sources, schema.image, progress=progress):
        indices, values = top_k(np.asarray(chunk.output, dtype=np.float64), top)
        rows = np.flatnonzero(chunk.ok) + chunk.rows.start
        labels[rows], probabilities[rows] = names[indices], values
        for position, reason in chunk.errors:
            errors[chunk.rows.start + position] = reason
    columns = result_columns(top)
    frame = pd.DataFrame(labels, columns=columns[:top])
    frame[columns[top : 2 * top]] = probabilities
    frame[ERROR_COLUMN] = pd.Series(errors, dtype=object)
    return frame


def _classify_spark(frame, classifier, top: int, *, output, batch_bytes):
    from deepspark.spark.images import image_batch_limits
    from deepspark.spark.udf import ship_model
    from deepspark.workflows import _image_jobs

    session = frame.sparkSession
    column = _image_jobs.spark_image_column(frame)
    with tempfile.TemporaryDirectory() as scratch:
        shipped_name = ship_model(session, classifier.save(Path(scratch) / "model"))
    image_batch_limits(session, classifier.schema, batch_bytes)
    udf = top_k_udf(shipped_name, top)
    scored = _image_jobs.scored_columns(frame, udf(column), result_columns(top))
    return _image_jobs.write_spark_output(scored, None if output is None else str(output))


def top_k_udf(shipped_name: str, top: int):
    """A pandas UDF: one column of image bytes or paths in; ``struct<label_1..k: string,
    probability_1..k: double, error: string>`` out, with the shipped classifier loaded once
    per Python worker."""
    from pyspark.sql import types as T
    from pyspark.sql.functions import pandas_udf

    columns = result_columns(top)
    fields = [
        T.StructField(name, T.StringType() if name.startswith("label_") else T.DoubleType())
        for name in columns[:-1]
    ]
    return_type = T.StructType([*fields, T.StructField(ERROR_COLUMN, T.StringType())])

    def classify_images(batches: Iterator[pd.Series]) -> Iterator[pd.DataFrame]:
        from deepspark.spark.udf import worker_model

        classifier = worker_model(shipped_name)
        for sources in batches:
            yield classified_rows(classifier.keras_model, sources.tolist(), classifier.schema, top)

    return pandas_udf(classify_images, returnType=return_type)
