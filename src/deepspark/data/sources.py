"""One table source resolved once from what the user gives, then passed down typed.

``resolve_source`` turns a path, folder, glob, URI, Delta table, built-in dataset name, pandas
DataFrame or Spark DataFrame into a ``TableSource`` that knows its schema (checked against every
file up front), its size, and how to read it: whole into pandas, streamed as Arrow batches in
bounded memory, or as a Spark DataFrame::

    source = resolve_source("s3://bucket/houses/")        # Parquet folder, hive partitions
    source.schema, source.estimated_rows                   # from the Parquet footers
    for batch in source.iter_batches(batch_rows=8192):     # streamed, never the whole table
        ...

The kinds of source::

    TableSource                  schema, estimated_rows/bytes, files, filesystem, uri,
    │                            read_pandas, head, iter_batches, to_spark, select
    ├── DatasetSource            files (one, a folder, a glob) or a Delta table, via pyarrow
    ├── PandasSource             a pandas DataFrame (and the built-in datasets)
    └── SparkSource              a Spark DataFrame

Image folders are not table sources: callers check ``data.image_sources`` first.
"""

from __future__ import annotations

import os
import sys

import pandas as pd

from deepspark.data._source_base import TableSource
from deepspark.data._source_dataset import DatasetSource, open_files
from deepspark.data._source_delta import DELTA_PREFIX, open_delta
from deepspark.data._source_files import (
    SCHEME_PATTERN,
    has_glob,
    list_glob,
    list_path,
    not_found,
)
from deepspark.data._source_frames import PandasSource, SparkSource
from deepspark.data.readers import BUILTIN_DATASETS, load_builtin
from deepspark.errors import UserInputError

__all__ = ["DatasetSource", "PandasSource", "SparkSource", "TableSource", "resolve_source"]


def resolve_source(data, *, columns: list[str] | None = None) -> TableSource:
    """Resolve what the user gave into a typed table source, checking it once.

    Args:
        data: A local file, folder or glob (``data/*.parquet``, ``data/**/*.csv``); a URI
            (``s3://bucket/prefix/``, ``file:///...``, ``gs://``, ``hdfs://``, ``abfs://``, also
            with a glob); a Delta Lake table (``delta:`` + path or URI, or a folder holding
            ``_delta_log/``); a built-in dataset name (``diabetes``, ``california``); a pandas
            or Spark DataFrame; or a ``TableSource`` (returned as is). Files are CSV/TSV,
            Parquet or JSON lines, by suffix (sniffed without one); folders are read with hive
            partitioning (``year=2024/`` becomes a column ``year``).
        columns: Keep only these columns; schemas are then checked on these only.

    Returns:
        The source. Its ``uri`` resolves back to the same data (columns are not part of it).

    Raises:
        DataError: Missing data, unreachable storage or bad credentials, an unsupported URI
            scheme, no data files or no rows, unparseable files, or schemas that differ across
            files; one line naming the problem and the fix.
        UserInputError: ``data`` of a type that is not a table source.
        MissingDependencyError: A Delta table without the ``deltalake`` package.

    Example:
        >>> source = resolve_source("diabetes")
        >>> source.estimated_rows
        442
    """
    columns = _column_list(columns)
    if isinstance(data, TableSource):
        return data if columns is None else data.select(columns)
    if isinstance(data, pd.DataFrame):
        source = PandasSource.from_frame(data)
    elif _is_spark_frame(data):
        source = SparkSource.from_frame(data)
    elif isinstance(data, str | os.PathLike):
        return _resolve_text(os.fsdecode(data), columns)
    else:
        raise UserInputError(
            f"Cannot read a table from a {type(data).__name__}; give a path, glob or URI, a "
            f"Delta table, a built-in dataset name, or a pandas or Spark DataFrame. "
            f"Received: data={type(data).__name__}"
        )
    return source if columns is None else source.select(columns)


def _resolve_text(text: str, columns: list[str] | None) -> TableSource:
    if text.startswith(DELTA_PREFIX):
        return open_delta(text[len(DELTA_PREFIX) :], data=text, columns=columns)
    is_uri = SCHEME_PATTERN.match(text) is not None
    if has_glob(text) and (is_uri or not os.path.exists(text)):
        listing = list_glob(text)
    else:
        listing = list_path(text)
        if listing is None and text in BUILTIN_DATASETS:
            source = PandasSource.from_frame(
                load_builtin(text), description=f"built-in dataset {text!r}", uri=text
            )
            return source if columns is None else source.select(columns)
        if listing is None:
            raise not_found(text)
    if listing.is_delta:
        return open_delta(text, data=text, columns=columns)
    uri = text if is_uri else os.path.abspath(os.path.expanduser(text))
    return open_files(listing, data=text, uri=uri, columns=columns)


def _column_list(columns) -> list[str] | None:
    if columns is None:
        return None
    columns = [columns] if isinstance(columns, str) else list(columns)
    if not columns or not all(isinstance(name, str) for name in columns):
        raise UserInputError(
            f"columns must be a non-empty list of column names. Received: columns={columns!r}"
        )
    return columns


def _is_spark_frame(data) -> bool:
    """Whether ``data`` is a Spark DataFrame, without importing pyspark to find out."""
    spark_sql = sys.modules.get("pyspark.sql")
    return spark_sql is not None and isinstance(data, spark_sql.DataFrame)
