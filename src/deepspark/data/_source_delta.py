"""Delta Lake tables (``delta:`` + a path or URI, or a folder holding ``_delta_log/``): the
current version's files, read through the same kind of pyarrow dataset as plain files.

deltalake (delta-rs, no JVM) reads the transaction log; the data files are read with pyarrow's
own file system for the location, so an object store is reached the same way as for plain
files (``AWS_ENDPOINT_URL`` and the rest from the environment).
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from deepspark._optional import require
from deepspark.data._source_dataset import DatasetSource, SparkRead, select_columns
from deepspark.data._source_files import access_error, first_line, not_found, open_location
from deepspark.errors import DataError

DELTA_PREFIX = "delta:"


def open_delta(location_text: str, *, data: str, columns: list[str] | None) -> DatasetSource:
    """Open the current version of a Delta table.

    Args:
        location_text: The table's folder, as a local path or URI (without ``delta:``).
        data: What the user gave, for messages.
        columns: Keep only these columns; None: all.

    Raises:
        DataError: No table there, an unreadable log or storage, or a table without rows.
        MissingDependencyError: deltalake is not installed.
    """
    deltalake = require("deltalake", feature="Reading Delta Lake tables")
    location, root = open_location(location_text)
    table_uri = location_text if "://" in location_text else root
    try:
        table = deltalake.DeltaTable(table_uri)
    except deltalake.exceptions.TableNotFoundError as error:
        raise not_found(data) from error
    except (deltalake.exceptions.DeltaError, OSError) as error:
        raise access_error(error, data, location.scheme) from error
    filesystem = pafs.SubTreeFileSystem(root, location.filesystem)
    try:
        dataset = table.to_pyarrow_dataset(filesystem=filesystem)
    except deltalake.exceptions.DeltaError as error:  # e.g. deletion vectors, newer protocol
        raise DataError(
            f"Cannot read Delta table ({first_line(error)}); deepspark reads tables that "
            f"pyarrow can scan (no deletion vectors). Received: data={data!r}"
        ) from error
    actions = pa.table(table.get_add_actions(flatten=True))
    rows = _total(actions, "num_records")
    rows = dataset.count_rows() if rows is None else rows  # no stats in the log: footers
    if rows == 0:
        raise DataError(
            f"Data has no rows: the Delta table (version {table.version()}) is empty; give a "
            f"table with data. Received: data={data!r}"
        )
    full_schema = dataset.schema
    dataset = dataset.replace_schema(select_columns(full_schema, columns, data=data))
    base = location.to_spark_uri(root)
    files = [f"{base}/{path}" for path in dataset.files] if base else None
    count = len(dataset.files)
    uri = DELTA_PREFIX + (location_text if "://" in location_text else root)
    return DatasetSource(
        description=f"Delta table {uri[len(DELTA_PREFIX) :]} (version {table.version()}, "
        f"{count} file{'s' if count != 1 else ''})",
        uri=uri,
        format="delta",
        dataset=dataset,
        rows=rows,
        size=_total(actions, "size_bytes"),
        spark_read=SparkRead(
            "parquet",
            full_schema,
            None if files is None else ((full_schema, tuple(files)),),
            base,
            table=base,
        ),
    )


def _total(actions: pa.Table, column: str) -> int | None:
    if column not in actions.column_names or actions.column(column).null_count:
        return None
    return int(pc.sum(actions.column(column)).as_py() or 0)
