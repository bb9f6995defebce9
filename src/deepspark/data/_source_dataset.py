"""``DatasetSource``: files (one, a folder, a glob) or a Delta Lake table, read through one
``pyarrow.dataset.Dataset`` whose schema was checked against every file when it was opened."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from deepspark.data._source_base import DEFAULT_BATCH_ROWS, TableSource, check_count
from deepspark.data._source_files import FileListing, access_error, first_line
from deepspark.data._source_formats import (
    FORMAT_NAMES,
    FileFacts,
    file_format,
    format_of,
    inspect_files,
    pandas_names,
    text_nulls,
)
from deepspark.data._source_schema import hive_partitions, unify_schema
from deepspark.data.parquet_io import parquet_batches
from deepspark.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

# Readahead kept small: iter_batches promises bounded memory, not maximum throughput.
_FRAGMENT_READAHEAD = 2
_BATCH_READAHEAD = 4
# Parquet pre-buffering reads a whole file ahead (peak memory grew with file size: 6M rows,
# 410 MB with it, 207 MB without); streaming reads column chunks as needed instead.
_PARQUET = {"parquet", "delta"}


@dataclass(frozen=True)
class SparkRead:
    """How Spark reads the same data.

    Attributes:
        format: ``parquet``, ``csv``, ``tsv`` or ``json``.
        schema: The unified schema of all files, before any column selection.
        groups: File URIs grouped by the types their Parquet files really hold (Spark does not
            widen int64 to double while reading), each with that schema; None when the storage
            has no Spark file system.
        base: The folder hive partitions are read below, or None.
        table: A Delta table's URI, tried first with Spark's own Delta reader.
        renamed_header: CSV columns were given pandas' names (``Unnamed: 0``), so Spark cannot
            check them against the files' header.
    """

    format: str
    schema: pa.Schema
    groups: tuple[tuple[pa.Schema, tuple[str, ...]], ...] | None
    base: str | None = None
    table: str | None = None
    renamed_header: bool = False


@dataclass(frozen=True, eq=False, repr=False)
class DatasetSource(TableSource):
    """Files or a Delta table, streamed by pyarrow.

    Attributes:
        format: ``parquet``, ``csv``, ``tsv``, ``json`` or ``delta``.
        dataset: The pyarrow dataset (its schema is the source's schema).
        rows: Exact row count from metadata (Parquet, Delta), else None.
        size: Total bytes of the data files.
        spark_read: How ``to_spark`` reads the same data.
    """

    format: str
    dataset: ds.FileSystemDataset
    rows: int | None
    size: int | None
    spark_read: SparkRead

    @property
    def schema(self) -> pa.Schema:
        return self.dataset.schema

    @property
    def estimated_rows(self) -> int | None:
        return self.rows

    @property
    def estimated_bytes(self) -> int | None:
        return self.size

    @property
    def files(self) -> list[str]:
        return list(self.dataset.files)

    @property
    def filesystem(self) -> pafs.FileSystem:
        return self.dataset.filesystem

    def read_pandas(self, columns: list[str] | None = None) -> pd.DataFrame:
        columns = self.check_columns(columns)
        return self._guarded(lambda: self.dataset.to_table(columns=columns)).to_pandas()

    def head(self, rows: int) -> pd.DataFrame:
        wanted = check_count(rows, "rows", minimum=0)
        if self.format not in _PARQUET:
            return self._guarded(lambda: self.dataset.head(wanted)).to_pandas()
        return TableSource.head(self, wanted)  # file by file: reads only what it needs

    def iter_batches(
        self, *, columns: list[str] | None = None, batch_rows: int = DEFAULT_BATCH_ROWS
    ) -> Iterator[pa.RecordBatch]:
        columns = self.check_columns(columns)
        batch_rows = check_count(batch_rows, "batch_rows", minimum=1)
        if self.format in _PARQUET:
            batches = _parquet_batches(self.dataset, columns, batch_rows)
        else:
            scanner = self.dataset.scanner(
                columns=columns,
                batch_size=batch_rows,
                batch_readahead=_BATCH_READAHEAD,
                fragment_readahead=_FRAGMENT_READAHEAD,
            )
            batches = self._guarded(scanner.to_batches)
        while True:
            batch = self._guarded(lambda: next(batches, None))
            if batch is None:
                return
            if batch.num_rows:
                yield batch

    def to_spark(self, spark):
        """Read the same files with ``spark.read`` (s3:// as s3a://); a Delta table through
        Spark's Delta reader when the session has it, else its current Parquet files.

        Raises:
            DataError: The storage has no Spark file system (Spark reads file, hdfs, s3a, gs,
                abfs).
        """
        from deepspark.data._source_spark import read_with_spark

        return read_with_spark(spark, self)

    def _with_schema(self, schema: pa.Schema) -> DatasetSource:
        return dataclasses.replace(self, dataset=self.dataset.replace_schema(schema))

    def _guarded(self, read):
        """Run a read; storage and parse errors met while streaming become ``DataError``."""
        try:
            return read()
        except OSError as error:
            scheme = (self.uri or "").removeprefix("delta:").partition("://")
            raise access_error(error, self.uri, scheme[0] if scheme[1] else "file") from error
        except pa.ArrowException as error:
            if self.format in FORMAT_NAMES and self.format != "parquet":
                hint = (
                    "when later rows of a text file hold another type than its first rows "
                    "(decimals in a column of integers), convert the files to Parquet or fix "
                    "the file"
                )
            else:
                hint = "check the files: they may be corrupt, or changed since they were listed"
            kind = FORMAT_NAMES.get(self.format, "Parquet")  # Delta tables hold Parquet files
            raise DataError(
                f"Cannot parse data file as {kind} ({first_line(error)}); {hint}. "
                f"Received: data={self.uri!r}"
            ) from error


def _parquet_batches(dataset: ds.FileSystemDataset, columns, batch_rows: int):
    """Parquet files one after the other with ``ParquetFile.iter_batches`` (no pre-buffering,
    1 MB read buffer), partition columns filled in from the file's hive path, cast to the
    unified schema. Unlike the dataset scanner, which reads ahead up to 1 GiB whenever its
    consumer is slower (apache/arrow#39808), memory stays flat in the table's size."""
    for fragment in dataset.get_fragments():
        yield from _parquet_fragment_batches(dataset, fragment, columns, batch_rows)


def fragment_batches(source: DatasetSource, index: int, *, columns, batch_rows: int):
    """The batches of one file of ``source`` (a Spark task reading its own file), bounded."""
    dataset = source.dataset
    fragment = list(dataset.get_fragments())[index]
    if source.format in _PARQUET:
        yield from _parquet_fragment_batches(dataset, fragment, columns, batch_rows)
        return
    yield from fragment.to_batches(schema=dataset.schema, columns=columns, batch_size=batch_rows)


def _parquet_fragment_batches(dataset, fragment, columns, batch_rows: int):

    schema = dataset.schema
    if columns is not None:
        schema = pa.schema([schema.field(name) for name in columns])
    keys = ds.get_partition_keys(fragment.partition_expression)
    in_file = [name for name in schema.names if name not in keys]
    batches = parquet_batches(
        dataset.filesystem, fragment.path, batch_rows=batch_rows, columns=in_file
    )
    for batch in batches:
        yield _conformed(batch, schema, keys)


def _conformed(batch: pa.RecordBatch, schema: pa.Schema, keys: dict) -> pa.RecordBatch:
    """``batch`` with ``schema``'s columns, in order and types (partition values as columns)."""
    arrays = []
    for field in schema:
        if field.name in keys:
            arrays.append(pa.array([keys[field.name]] * batch.num_rows).cast(field.type))
        elif field.name in batch.schema.names:
            arrays.append(batch.column(field.name).cast(field.type))
        else:
            arrays.append(pa.nulls(batch.num_rows, field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def open_files(
    listing: FileListing, *, data: str, uri: str, columns: list[str] | None
) -> DatasetSource:
    """Check every file's schema and open the files as one dataset.

    Args:
        listing: The data files.
        data: What the user gave, for messages.
        uri: What ``resolve_source`` turns back into this source.
        columns: Keep (and check across files) only these columns; None: all.

    Raises:
        DataError: No data files, mixed formats, unparseable files, drifting schemas, no rows.
    """
    location = listing.location
    kind = _one_format(listing, data)
    facts = inspect_files(listing.paths, kind=kind, location=location, data=data)
    facts = [fact for fact in facts if fact.has_rows]  # zero-row files are skipped silently
    if not facts:
        raise _no_rows(listing, data)
    paths = tuple(fact.path for fact in facts)
    partitions = hive_partitions(paths, listing.base, data=data) if listing.base else None
    file_columns = _file_columns(columns, partitions)
    schema = unify_schema(facts, columns=file_columns, shown=location.to_uri, data=data)
    full_schema = _with_partitions(schema if kind == "parquet" else text_nulls(schema), partitions)
    schema = select_columns(full_schema, columns, data=data, names=facts[0].schema.names)
    header = _csv_header(facts, kind, location.to_uri, data)
    dataset = ds.dataset(
        list(paths),
        schema=schema,
        format=file_format(kind, header),
        filesystem=location.filesystem,
        partitioning=None if partitions is None else ds.HivePartitioning(partitions),
        partition_base_dir=None if partitions is None else listing.base,
    )
    kept = set(paths)
    return DatasetSource(
        description=_describe(listing, kind, len(paths), partitions, uri),
        uri=uri,
        format=kind,
        dataset=dataset,
        rows=sum(fact.rows for fact in facts) if kind == "parquet" else None,
        size=sum(
            size for path, size in zip(listing.paths, listing.sizes, strict=True) if path in kept
        ),
        spark_read=_spark_read(kind, full_schema, facts, listing, partitions, header is not None),
    )


def _spark_read(kind, schema, facts, listing: FileListing, partitions, renamed) -> SparkRead:
    location = listing.location
    base = None if partitions is None else location.to_spark_uri(listing.base)
    uris = [location.to_spark_uri(fact.path) for fact in facts]
    if None in uris:
        return SparkRead(kind, schema, None, base)
    if kind == "parquet":
        groups = _parquet_groups(schema, facts, uris)
    elif kind == "json":  # Spark parses JSON numbers straight into the unified types
        groups = ((schema, tuple(uris)),)
    else:
        groups = ((_csv_spark_schema(schema, facts[0]), tuple(uris)),)
    return SparkRead(kind, schema, groups, base, renamed_header=renamed)


def _parquet_groups(schema: pa.Schema, facts, uris) -> tuple:
    """Files by the types they hold for the unified columns (Spark reads each group with its
    own types; the caller casts them to the unified ones)."""
    groups: dict[tuple, tuple[pa.Schema, list[str]]] = {}
    for fact, uri in zip(facts, uris, strict=True):
        fields = [
            fact.schema.field(f.name) if fact.schema.get_field_index(f.name) >= 0 else f
            for f in schema
        ]
        key = tuple((field.name, str(field.type)) for field in fields)
        groups.setdefault(key, (pa.schema(fields), []))[1].append(uri)
    return tuple((group_schema, tuple(paths)) for group_schema, paths in groups.values())


def _csv_spark_schema(schema: pa.Schema, first: FileFacts) -> pa.Schema:
    """Every header column, in file order (Spark maps CSV columns by position): the unified
    type for kept columns, text for the others; then the partition columns."""
    header = first.schema.names
    fields = [schema.field(n) if n in schema.names else pa.field(n, pa.string()) for n in header]
    return pa.schema(fields + [field for field in schema if field.name not in header])


def _one_format(listing: FileListing, data: str) -> str:
    if not listing.paths:
        raise DataError(
            f"No data files in {data}: it holds no CSV, Parquet or JSON-lines files (names "
            f"starting with '.' or '_' are skipped); give a folder of data files. "
            f"Received: data={data!r}"
        )
    location = listing.location
    by_format: dict[str, str] = {}
    for path in listing.paths:
        by_format.setdefault(format_of(path, location, data), location.to_uri(path))
    if len(by_format) > 1:
        examples = "; ".join(f"{FORMAT_NAMES[k]}: {path}" for k, path in by_format.items())
        raise DataError(
            f"Data files of more than one format ({examples}); keep one format per source, or "
            f"pass a glob such as '<folder>/*.parquet'. Received: data={data!r}"
        )
    return next(iter(by_format))


def _no_rows(listing: FileListing, data: str) -> DataError:
    if listing.kind == "file":
        shown = listing.location.to_uri(listing.paths[0])
        return DataError(
            f"Data file has no rows; give a file with a header and data. Received: {shown}"
        )
    return DataError(
        f"Data has no rows: all {len(listing.paths)} data files are empty; give files with "
        f"data. Received: data={data!r}"
    )


def _file_columns(columns: list[str] | None, partitions: pa.Schema | None) -> list[str] | None:
    if columns is None or partitions is None:
        return columns
    return [name for name in columns if name not in partitions.names]


def _with_partitions(schema: pa.Schema, partitions: pa.Schema | None) -> pa.Schema:
    if partitions is None:
        return schema
    clashes = [name for name in partitions.names if name in schema.names]
    if clashes:
        raise DataError(
            f"Partition folder name(s) {clashes} are also columns in the files; rename the "
            f"folders or drop the columns. Received: partitions={partitions.names}"
        )
    return pa.schema(list(schema) + list(partitions), metadata=schema.metadata)


def select_columns(
    schema: pa.Schema, columns: list[str] | None, *, data: str, names: list[str] = ()
) -> pa.Schema:
    """The schema of ``columns`` in their order (None: all), every one present.

    Raises:
        DataError: An asked column is missing; the message lists the columns there are.
    """
    if columns is None:
        return schema
    missing = [name for name in columns if name not in schema.names]
    if missing:
        names = list(dict.fromkeys([*names, *schema.names]))
        available = ", ".join(names[:20]) + (" ..." if len(names) > 20 else "")
        raise DataError(
            f"Column(s) {missing} not in the data; choose from: {available}. "
            f"Received: columns={columns!r}, data={data!r}"
        )
    return pa.schema([schema.field(name) for name in columns], metadata=schema.metadata)


def _csv_header(facts, kind: str, shown, data: str) -> tuple[str, ...] | None:
    """pandas' names for blank or repeated header cells, given to every file (which must then
    share the header); None when the files' own names serve."""
    if kind not in {"csv", "tsv"}:
        return None
    header = facts[0].header
    if pandas_names(header) == header and all(pandas_names(f.header) == f.header for f in facts):
        return None
    for fact in facts[1:]:
        if fact.header != header:
            raise DataError(
                f"CSV headers differ: {shown(fact.path)} has {list(fact.header)} but "
                f"{shown(facts[0].path)} has {list(header)}; give files with one header. "
                f"Received: data={data!r}"
            )
    return pandas_names(header)


def _describe(listing: FileListing, kind: str, count: int, partitions, uri: str) -> str:
    name = FORMAT_NAMES[kind]
    if listing.kind == "file":
        return f"{name} file {uri}"
    files = f"{count} file" + ("s" if count != 1 else "")
    if partitions is not None:
        files += ", partitioned by " + ", ".join(partitions.names)
    if listing.kind == "glob":
        return f"{name} files matching {uri} ({files})"
    return f"{name} dataset {uri} ({files})"
