"""Reading a file source's files with Spark, and streaming a Spark DataFrame to the driver as
Arrow batches.

``data`` knows nothing of Spark beyond this: pyspark is imported here only, inside the functions,
from a SparkSession or DataFrame the caller already has.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from datetime import UTC
from typing import TYPE_CHECKING

import pyarrow as pa

from deepspark.errors import DataError

if TYPE_CHECKING:
    from deepspark.data._source_dataset import DatasetSource


def read_with_spark(spark, source: DatasetSource):
    """``spark.read`` of the same files (a Delta table through Spark's Delta reader when the
    session has one), with the source's schema and columns.

    Raises:
        DataError: The files live on storage Spark has no file system for.
    """
    read = source.spark_read
    if read.table is not None:
        frame = _read_delta(spark, read.table)
        if frame is not None:
            return frame.select(*source.schema.names)
    if read.groups is None:
        raise DataError(
            f"Spark cannot read {source.description}: Spark reads file, hdfs, s3a (s3), gs and "
            f"abfs URIs; copy the data there, or read it with read_pandas / iter_batches. "
            f"Received: data={source.uri!r}"
        )
    from pyspark.sql.pandas.types import from_arrow_schema

    target = from_arrow_schema(read.schema.remove_metadata())
    frames = []
    for schema, paths in read.groups:
        frame = _read_files(spark, source, schema=from_arrow_schema(schema), paths=paths)
        frames.append(frame.select(*[frame[f.name].cast(f.dataType) for f in target.fields]))
    return functools.reduce(lambda left, right: left.unionByName(right), frames).select(
        *source.schema.names
    )


def _read_files(spark, source: DatasetSource, *, schema, paths: tuple[str, ...]):
    read = source.spark_read
    reader = spark.read.schema(schema)
    if read.base is not None:
        reader = reader.option("basePath", read.base)
    if read.format == "parquet":
        return reader.parquet(*paths)
    if read.format == "json":
        return reader.json(list(paths))
    return reader.csv(
        list(paths),
        header=True,
        sep="\t" if read.format == "tsv" else ",",
        enforceSchema=read.renamed_header,  # else Spark checks the header names
    )


def _read_delta(spark, table: str):
    """The table through Spark's Delta reader, or None when the session has none (delta-spark
    not on the classpath): the caller then reads the current version's Parquet files."""
    try:
        return spark.read.format("delta").load(table)
    except Exception as error:  # pyspark's AnalysisException, without importing pyspark here
        if "DATA_SOURCE_NOT_FOUND" in str(error) or "Failed to find data source" in str(error):
            return None
        raise


def iter_spark_batches(
    frame, schema: pa.Schema, *, columns: list[str] | None, batch_rows: int
) -> Iterator[pa.RecordBatch]:
    """Rows of a Spark DataFrame gathered into Arrow batches on the driver, one partition at a
    time (``toLocalIterator(prefetchPartitions=False)``): memory stays bounded by the largest
    partition, but every row passes through Python, so it is slow on large data."""
    if columns is not None:
        frame = frame.select(*columns)
        schema = pa.schema([schema.field(name) for name in columns])
    # pyspark hands timestamps over as naive local times; Arrow would read them as UTC.
    zoned = [f.name for f in schema if pa.types.is_timestamp(f.type) and f.type.tz is not None]
    rows = []
    for row in frame.toLocalIterator(prefetchPartitions=False):
        values = row.asDict(recursive=True)
        for name in zoned:
            if values[name] is not None and values[name].tzinfo is None:
                values[name] = values[name].astimezone(UTC)
        rows.append(values)
        if len(rows) == batch_rows:
            yield pa.RecordBatch.from_pylist(rows, schema=schema)
            rows = []
    if rows:
        yield pa.RecordBatch.from_pylist(rows, schema=schema)


def spark_arrow_schema(frame) -> pa.Schema:
    """A Spark DataFrame's schema in Arrow types (timestamps in the session's time zone)."""
    from pyspark.sql.pandas.types import to_arrow_schema

    timezone = frame.sparkSession.conf.get("spark.sql.session.timeZone", None)
    return to_arrow_schema(frame.schema, timezone=timezone)
