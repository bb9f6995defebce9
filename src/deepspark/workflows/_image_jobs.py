"""What ``classify`` and ``featurize`` share: turning ``data`` into rows of images (pandas or
Spark), checking the output before any work, and writing the result so that a failed job leaves
nothing at the destination.

``data`` is an image folder (class subfolders, or image files directly inside it), a glob or
one image file, local or a URI (``s3://bucket/photos/``: listed by
``data.image_sources.resolve_images``, read where the images are decoded); a table (CSV /
Parquet / JSON lines, local or a URI) with an ``image`` / ``content`` (bytes) or ``path``
column, or a pandas DataFrame; on Spark also a table name or a Hadoop URI / glob of image files
(read on the executors).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from deepspark.data.image_inputs import (
    BINARY_FILE_COLUMN,
    IMAGE_COLUMN,
    PATH_COLUMN,
    find_image_column,
)
from deepspark.data.image_sources import (
    IMAGE_KINDS,
    is_image_glob,
    is_remote,
    list_image_glob,
    resolve_images,
)
from deepspark.errors import DataError, UserInputError

logger = logging.getLogger(__name__)

RESULT_COLUMN = "__deepspark_result"


def image_table(data: Any) -> tuple[pd.DataFrame, str]:
    """Rows of images and the column holding them (bytes or paths).

    A folder with class subfolders gives ``path``, ``label`` (and ``split`` when it has
    train/val/test folders); a folder of images, a glob or one file gives ``path``; a table
    keeps its columns.

    Raises:
        DataError: Nothing to read, no image files, or a table without an image column.
    """
    if isinstance(data, pd.DataFrame):
        frame = data
    else:
        frame = _read_images(str(data))
    column = find_image_column(frame)
    if column is None:
        raise DataError(
            "No images in this table: give a binary column 'image' (encoded image bytes) or a "
            f"text column 'path' (image files), or an image folder. "
            f"Received: columns={[str(name) for name in frame.columns]}"
        )
    return frame, column


def _read_images(text: str) -> pd.DataFrame:
    """The image files ``text`` names (``data.image_sources.resolve_images``: a folder, glob,
    image file or URI), else the table it names (any ``data.sources`` source)."""
    from deepspark.data.sources import resolve_source

    listing = resolve_images(text)
    if listing is not None:
        return _dropped_empty(listing.rows)
    if is_image_glob(text):
        list_image_glob(text)  # raises: says how many files matched, none of them images
    if not is_remote(text) and not Path(text).exists():
        raise DataError(
            "Images not found: no such file or folder; give an image folder, a glob, an image "
            f"file or a table with a 'path' or 'image' column. Received: data={text!r}"
        )
    try:
        return resolve_source(text).read_pandas()
    except DataError as error:
        if is_remote(text) or not Path(text).is_dir():
            raise
        raise DataError(
            f"No image files in this folder ({IMAGE_KINDS}, directly inside it or in class "
            f"subfolders), and no table ({error}). Received: data={text!r}"
        ) from error


def _dropped_empty(listing: pd.DataFrame) -> pd.DataFrame:
    """A listing without the columns that say nothing (``split`` of a folder without splits)."""
    return listing.drop(columns=[name for name in listing.columns if listing[name].isna().all()])


def passed_through(frame: pd.DataFrame, results: pd.DataFrame) -> pd.DataFrame:
    """The input's columns (image bytes left out, result names replaced) + ``results``."""
    dropped = [
        name for name in frame.columns if name in results.columns or _is_binary_column(frame[name])
    ]
    kept = frame.drop(columns=dropped).reset_index(drop=True)
    return pd.concat([kept, results.reset_index(drop=True)], axis=1)


def log_bad_images(errors: pd.Series) -> None:
    """One warning for the images that could not be read (each row says why in ``error``)."""
    bad = int(errors.notna().sum())
    if bad:
        logger.warning("%d of %d images could not be read (see the error column)", bad, len(errors))


def _is_binary_column(column: pd.Series) -> bool:
    present = column.dropna()
    return bool(len(present)) and isinstance(present.iloc[0], bytes | bytearray | memoryview)


def check_output_suffix(output: Any, suffixes: tuple[str, ...]) -> None:
    """Refuse an output file type a result cannot be written as.

    Raises:
        UserInputError: ``output``'s suffix is not one of ``suffixes``.
    """
    suffix = Path(str(output)).suffix.lower()
    if suffix not in suffixes:
        raise UserInputError(
            f"Cannot write this output type; use one of {', '.join(suffixes)}. "
            f"Received: output={str(output)!r}"
        )


def spark_job_session(master: str | None, output: Any, *, overwrite: bool):
    """The Spark session of a job, once its ``output`` is known not to exist (or
    ``overwrite``)."""
    from deepspark.spark.session import get_session

    session = get_session(master)
    check_spark_output(session, None if output is None else str(output), overwrite=overwrite)
    return session


def spark_images(spark, data: Any):
    """A Spark DataFrame of images: ``data`` itself when it is one; ``path`` + ``content`` for
    image files (folders, globs, Hadoop URIs); else the table ``data`` names (with an image or
    path column)."""
    from deepspark.spark.images import is_image_files_source, read_image_files
    from deepspark.spark.session import read_source

    if hasattr(data, "sparkSession"):
        return data
    text = str(data)
    if is_image_files_source(text, spark):
        return read_image_files(spark, text)
    return read_source(spark, text)


def spark_image_column(frame) -> str:
    """The column of a Spark DataFrame holding images: a binary ``image`` / ``content``
    column, else a string ``path`` column.

    Raises:
        UserInputError: Neither is there.
    """
    from pyspark.sql import types as T

    types = {field.name: field.dataType for field in frame.schema.fields}
    for name in (IMAGE_COLUMN, BINARY_FILE_COLUMN):
        if isinstance(types.get(name), T.BinaryType):
            return name
    if isinstance(types.get(PATH_COLUMN), T.StringType):
        return PATH_COLUMN
    raise UserInputError(
        "No images in this table: give a binary column 'image' or 'content' (encoded image "
        "bytes, e.g. from spark.read.format('binaryFile')) or a string column 'path'. "
        f"Received: columns={list(types)}"
    )


def check_spark_output(spark, output: str | None, *, overwrite: bool) -> None:
    """Refuse an existing Spark output folder before any work (unless ``overwrite``)."""
    from deepspark.spark.jobs import HadoopFiles

    if output is not None and HadoopFiles(spark).exists(str(output)) and not overwrite:
        raise UserInputError(
            f"Output already exists; pass --overwrite to replace it. Received: output={output!r}"
        )


def scored_columns(frame, result, fields: list[str]):
    """``frame``'s columns (image bytes left out, result names replaced) + ``result``'s
    struct fields as columns."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    from deepspark.spark.columns import quote

    kept = [
        quote(field.name)
        for field in frame.schema.fields
        if field.name not in fields and not isinstance(field.dataType, T.BinaryType)
    ]
    with_result = frame.select(*kept, result.alias(RESULT_COLUMN))
    return with_result.select(
        *kept, *(F.col(f"{RESULT_COLUMN}.{quote(name)}").alias(name) for name in fields)
    )


def write_spark_output(scored, output: str | None):
    """Write ``scored`` as Parquet at ``output`` (staged, renamed into place on success) and
    return it read back; without ``output``, return ``scored`` as it is (lazy)."""
    if output is None:
        return scored
    from deepspark.spark.jobs import HadoopFiles, write_atomically

    spark = scored.sparkSession
    write_atomically(scored, str(output), HadoopFiles(spark))
    return spark.read.parquet(str(output))
