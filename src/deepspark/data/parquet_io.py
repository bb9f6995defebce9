"""Reading one Parquet file as record batches in bounded memory, locally or from an object store.

Locally a buffered reader decodes a batch at a time. On an object store the same reader issues
one small request per page (measured on S3 through moto: 42 s for a 1M-row file, against 1.8 s
when the row group's column chunks are fetched in a few coalesced requests), so there each row
group is pre-buffered whole, one at a time: memory is bounded by one row group.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pyarrow as pa

READ_BUFFER_BYTES = 1 << 20
_LOCAL_FILESYSTEMS = ("local", "mock")


def is_remote_filesystem(filesystem) -> bool:
    """Whether ``filesystem`` (pyarrow) is not this host's disk (an object store, HDFS...)."""
    return filesystem.type_name not in _LOCAL_FILESYSTEMS


def parquet_batches(
    filesystem, path: str, *, batch_rows: int, columns: Sequence[str] | None = None
) -> Iterator[pa.RecordBatch]:
    """The record batches (at most ``batch_rows`` rows each) of the Parquet file ``path``.

    Args:
        filesystem: The pyarrow filesystem holding ``path``.
        path: The file, in ``filesystem``'s terms.
        batch_rows: Rows per batch.
        columns: Read only these columns (all when ``None``); those the file lacks are left
            out (a dataset's reader fills them in).
    """
    import pyarrow.parquet as pq

    remote = is_remote_filesystem(filesystem)
    with filesystem.open_input_file(path) as handle:
        reader = pq.ParquetFile(handle, pre_buffer=remote, buffer_size=READ_BUFFER_BYTES)
        wanted = None
        if columns is not None:
            present = set(reader.schema_arrow.names)
            wanted = [name for name in columns if name in present]
        if not remote:
            yield from reader.iter_batches(batch_size=batch_rows, columns=wanted)
            return
        for group in range(reader.num_row_groups):
            yield from reader.iter_batches(
                batch_size=batch_rows, row_groups=[group], columns=wanted
            )
