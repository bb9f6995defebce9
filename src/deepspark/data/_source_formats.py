"""File formats of a table source: which format each file is, what every file's schema says
(read cheaply: Parquet footers, the first block of CSV and JSON lines), and the one schema they
share.

Text files are parsed the way ``pandas.read_csv`` reads them: pandas' missing-value markers,
empty cells as nulls, ``True``/``False`` booleans, dates kept as text, empty columns as float,
and pandas' names for blank or repeated header cells (``Unnamed: 0``, ``a.1``).

Types are inferred from each file's first block (1 MB), not the whole file as pandas does: a
later value that does not fit (a decimal in a column of integers) is a ``DataError`` when it is
read, which says to convert the files to Parquet.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as ds
import pyarrow.json as pajson
import pyarrow.parquet as pq

from deepspark.data._source_files import Location, access_error, first_line
from deepspark.errors import DataError

logger = logging.getLogger(__name__)

FORMAT_NAMES = {"parquet": "Parquet", "csv": "CSV", "tsv": "TSV", "json": "JSON-lines"}
_SUFFIX_FORMATS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".txt": "csv",
    ".tsv": "tsv",
    ".json": "json",
    ".jsonl": "json",
    ".ndjson": "json",
}
_COMPRESSION_SUFFIXES = (".gz", ".bz2", ".zst", ".lz4")  # pyarrow decompresses these by suffix
_SNIFF_BYTES = 8192
_INSPECT_THREADS = 16
# pandas.read_csv's default missing-value markers.
PANDAS_NA_VALUES = [
    "",
    "#N/A",
    "#N/A N/A",
    "#NA",
    "-1.#IND",
    "-1.#QNAN",
    "-NaN",
    "-nan",
    "1.#IND",
    "1.#QNAN",
    "<NA>",
    "N/A",
    "NA",
    "NULL",
    "NaN",
    "None",
    "n/a",
    "nan",
    "null",
]
CSV_CONVERT = pacsv.ConvertOptions(
    null_values=PANDAS_NA_VALUES,
    strings_can_be_null=True,
    true_values=["True", "TRUE", "true"],
    false_values=["False", "FALSE", "false"],
)


@dataclass(frozen=True)
class FileFacts:
    """What one file's cheap read says.

    Attributes:
        path: The file's path.
        schema: Its columns and types (text formats: inferred from the first block).
        rows: Exact row count (Parquet), else None.
        has_rows: At least one row (text formats: in the first block).
        header: A CSV file's header cells as written, else None.
    """

    path: str
    schema: pa.Schema
    rows: int | None
    has_rows: bool
    header: tuple[str, ...] | None = None


def format_of(path: str, location: Location, data: str) -> str:
    """``parquet``, ``csv``, ``tsv`` or ``json``, by suffix; a file without a known suffix is
    sniffed (Parquet magic bytes, ``{`` for JSON lines, else CSV)."""
    name = os.path.basename(path).lower()
    for compression in _COMPRESSION_SUFFIXES:
        name = name.removesuffix(compression)
    suffix = os.path.splitext(name)[1]
    if suffix in _SUFFIX_FORMATS:
        return _SUFFIX_FORMATS[suffix]
    head = read_head(path, location, data)
    if head.startswith(b"PAR1"):
        return "parquet"
    check_text(head, location.to_uri(path))
    if head.lstrip().startswith(b"{"):
        return "json"
    logger.info("Reading %s as CSV (unrecognised suffix %r)", path, suffix)
    return "csv"


def file_format(kind: str, header: tuple[str, ...] | None = None) -> ds.FileFormat:
    """The pyarrow dataset format; ``header`` (pandas-style names) replaces the files' own."""
    if kind == "parquet":
        return ds.ParquetFileFormat()
    if kind == "json":
        return ds.JsonFileFormat()
    read_options = pacsv.ReadOptions()
    if header is not None:
        read_options = pacsv.ReadOptions(column_names=list(header), skip_rows=1)
    return ds.CsvFileFormat(
        parse_options=_parse_options(kind),
        convert_options=CSV_CONVERT,
        read_options=read_options,
    )


def inspect_files(
    paths: tuple[str, ...], *, kind: str, location: Location, data: str
) -> list[FileFacts]:
    """Read every file's schema (in parallel threads: each is one small remote read)."""
    if len(paths) == 1:
        return [inspect_file(paths[0], kind=kind, location=location, data=data)]
    workers = min(_INSPECT_THREADS, len(paths))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(
            pool.map(lambda p: inspect_file(p, kind=kind, location=location, data=data), paths)
        )


def inspect_file(path: str, *, kind: str, location: Location, data: str) -> FileFacts:
    """One file's schema and rows, without reading more than its footer or first block.

    Raises:
        DataError: The file cannot be parsed as ``kind``, or the storage cannot be read.
    """
    try:
        if kind == "parquet":
            metadata = pq.read_metadata(path, filesystem=location.filesystem)
            schema = metadata.schema.to_arrow_schema()
            return FileFacts(path, schema, metadata.num_rows, metadata.num_rows > 0)
        with location.filesystem.open_input_stream(path) as stream:
            if kind == "json":
                reader = pajson.open_json(stream)
                header = None
            else:
                reader = pacsv.open_csv(
                    stream, parse_options=_parse_options(kind), convert_options=CSV_CONVERT
                )
                header = tuple(reader.schema.names)
            has_rows = _first_rows(reader)
        schema = _text_schema(reader.schema, header)
        return FileFacts(path, schema, None, has_rows, header)
    except OSError as error:
        raise access_error(error, location.to_uri(path), location.scheme) from error
    except pa.ArrowException as error:
        raise parse_error(error, path, kind=kind, location=location) from error


def parse_error(error: BaseException, path: str, *, kind: str, location: Location) -> DataError:
    """A file pyarrow could not parse: binary content, or the parser's first line."""
    shown = location.to_uri(path)
    if kind != "parquet":
        try:
            check_text(read_head(path, location, shown), shown)
        except DataError as binary:
            return binary
    return DataError(
        f"Cannot parse data file as {FORMAT_NAMES[kind]} ({first_line(error)}); check the "
        f"file's format. Received: {shown}"
    )


def read_head(path: str, location: Location, data: str) -> bytes:
    """The first few KB of a file."""
    try:
        with location.filesystem.open_input_stream(path, compression=None) as stream:
            return stream.read(_SNIFF_BYTES)
    except OSError as error:
        raise access_error(error, data, location.scheme) from error


def check_text(head: bytes, shown: str) -> None:
    """Refuse binary content: parsed as CSV it gives garbage columns or a confusing error."""
    try:
        head.decode("utf-8")
        is_text = b"\x00" not in head
    except UnicodeDecodeError as error:
        # A multi-byte character cut at the sniff boundary is still text.
        is_text = error.start >= len(head) - 4 and b"\x00" not in head
    if not is_text:
        raise DataError(
            f"Data file is not text (binary content); give a CSV, Parquet or JSON-lines file. "
            f"Received: {shown}"
        )


def pandas_names(names: tuple[str, ...]) -> tuple[str, ...]:
    """Header cells as pandas names them: blank -> ``Unnamed: i``, repeats -> ``a.1``, ``a.2``."""
    out: list[str] = []
    seen: set[str] = set()
    for index, name in enumerate(names):
        name = name if name.strip() else f"Unnamed: {index}"
        candidate, count = name, 0
        while candidate in seen:
            count += 1
            candidate = f"{name}.{count}"
        seen.add(candidate)
        out.append(candidate)
    return tuple(out)


def _parse_options(kind: str) -> pacsv.ParseOptions:
    return pacsv.ParseOptions(delimiter="\t" if kind == "tsv" else ",")


def _first_rows(reader) -> bool:
    while True:
        try:
            if reader.read_next_batch().num_rows:
                return True
        except StopIteration:
            return False


def _text_schema(schema: pa.Schema, header: tuple[str, ...] | None) -> pa.Schema:
    """Keep dates as text, as pandas does (a column null in the first block stays null here,
    so that it merges with other files' types; ``text_nulls`` settles it once for all files)."""
    names = pandas_names(header) if header is not None else schema.names
    fields = []
    for field, name in zip(schema, names, strict=True):
        temporal = pa.types.is_temporal(field.type)
        fields.append(pa.field(name, pa.string() if temporal else field.type))
    return pa.schema(fields)


def text_nulls(schema: pa.Schema) -> pa.Schema:
    """Columns empty in every file's first block become float64, as pandas reads an empty
    column (a later number then reads as a number; later text is a parse error)."""
    fields = [
        field.with_type(pa.float64()) if pa.types.is_null(field.type) else field for field in schema
    ]
    return pa.schema(fields, metadata=schema.metadata)
