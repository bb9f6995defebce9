"""Per-rank Parquet shards of the encoded training and validation rows, written once into the
store and cached.

Layout of one shard set (``<store>/shards/<data key>-w<world size>/``)::

    manifest.json                 rows and files per split and rank; written last, so a set
                                  without it is incomplete and never read
    train-00000-of-00002.parquet  rank 0's training rows (written by the driver)
    val-00001-of-00002.parquet    rank 1's validation rows
    train-p00003-r00001.parquet   rank 1's training rows from Spark partition 3 (written by the
                                  executors: every partition writes one file per rank)

(image models: the column of image references, paths or bytes; each rank decodes its own)

Rows go to ranks round-robin (row ``i`` to rank ``i % N``), so that the local batches of all ranks
at step ``k`` are together exactly the global batch ``k`` of a single-process run without
shuffling. Every rank trains on as many rows as the rank with fewest (``train_rows``), so that
every rank runs the same number of steps and none waits forever at the last batch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
from typing import Any

import numpy as np

from deepspark.errors import StorageFullError, UserInputError
from deepspark.store.store import SHARD_CACHE_ENV, Store

logger = logging.getLogger("deepspark.distributed")

MANIFEST = "manifest.json"
TARGET_COLUMN = "__target__"
IMAGE_SOURCES = "__image_sources__"  # an image model's shard column: paths or encoded bytes
FORMAT_VERSION = 2
ROW_GROUP_ROWS = 65_536
Arrays = tuple[dict[str, np.ndarray], np.ndarray]  # (model inputs by name, target)


def shard_cache_root(store: str | Store | None = None) -> Store:
    """``$DEEPSPARK_SHARD_CACHE``, else the ``shards`` folder of the store (``store``,
    ``$DEEPSPARK_STORE`` or ``./.deepspark/store``)."""
    if os.environ.get(SHARD_CACHE_ENV):
        return Store(os.environ[SHARD_CACHE_ENV])
    return Store.resolve(store).child("shards")


def data_key(*parts: Any) -> str:
    """A short stable key for the data and every setting that changes its encoding."""
    document = json.dumps([FORMAT_VERSION, *parts], sort_keys=True, default=str)
    return hashlib.sha256(document.encode()).hexdigest()[:20]


@dataclasses.dataclass(frozen=True)
class ShardSet:
    """A folder of shards for ``world_size`` ranks, in a store."""

    store: Store
    world_size: int

    def __init__(self, store: Store | str | os.PathLike, world_size: int):
        object.__setattr__(self, "store", store if isinstance(store, Store) else Store(store))
        object.__setattr__(self, "world_size", int(world_size))

    def file_name(self, split: str, rank: int) -> str:
        return f"{split}-{rank:05d}-of-{self.world_size:05d}.parquet"

    def path(self, split: str, rank: int) -> str:
        """The driver-written file of a rank (a path in ``store.filesystem``)."""
        return self.store.path(self.file_name(split, rank))

    def manifest(self) -> dict[str, Any]:
        return self.store.read_json(MANIFEST)

    def is_complete(self) -> bool:
        return self.store.exists(MANIFEST)

    def files(self, split: str, rank: int) -> list[str]:
        """A rank's files of a split, as paths in ``store.filesystem``."""
        listed = self.manifest()["splits"][split].get("files")
        names = listed[rank] if listed else [self.file_name(split, rank)]
        return [self.store.path(name) for name in names]

    def rows(self, split: str) -> list[int]:
        return list(self.manifest()["splits"][split]["rows"])

    def train_rows(self) -> int:
        """Training rows every rank uses per epoch (the fewest any rank has)."""
        return min(self.rows("train"))


def write_shards(
    splits: dict[str, Arrays],
    *,
    world_size: int,
    key: str,
    root: str | os.PathLike | Store | None = None,
) -> ShardSet:
    """Write ``splits`` as per-rank Parquet files, or reuse the complete cached set for ``key``.

    Args:
        splits: Split name (``train``, ``val``) -> (inputs by name, target).
        world_size: Number of ranks.
        key: Identifies the data and its encoding (``data_key``); same key, same files.
        root: The shard cache (a store or a folder); default ``shard_cache_root()``.

    Returns:
        The ``ShardSet``.

    Raises:
        UserInputError: When a rank would get no training or validation rows.
        StorageFullError: The disk filled up; the files written so far are removed.
    """
    cache = root if isinstance(root, Store) else Store(root) if root else shard_cache_root()
    shards = ShardSet(cache.child(f"{key}-w{world_size}"), world_size)
    if shards.is_complete():
        logger.info("reusing data shards in %s", shards.store.uri)
        return shards
    _check_enough_rows(splits, world_size)
    written: list[str] = []
    try:
        manifest = _write_split_files(splits, shards, written)
        shards.store.write_json(manifest, MANIFEST)  # last: the set is complete from here on
    except BaseException as error:
        for name in written:  # an incomplete set is never read: give its space back
            with contextlib.suppress(OSError):
                shards.store.delete(name)
        if isinstance(error, StorageFullError):
            raise StorageFullError.writing(
                f"the data shards ({error.what})",
                shards.store.uri,
                f"free space there, or choose another location with --store or ${SHARD_CACHE_ENV}",
            ) from error
        raise
    logger.info("wrote data shards for %d ranks in %s", world_size, shards.store.uri)
    return shards


def _write_split_files(splits: dict[str, Arrays], shards: ShardSet, written: list[str]):
    """Write every rank's file of every split (names appended to ``written`` as they are
    started); return the manifest."""
    world_size = shards.world_size
    manifest = {"format": FORMAT_VERSION, "world_size": world_size, "splits": {}}
    for split, (inputs, target) in splits.items():
        rows = len(target) - len(target) % world_size if split == "train" else len(target)
        counts = []
        for rank in range(world_size):
            selected = slice(rank, rows, world_size)
            table = arrays_to_table(
                {name: value[selected] for name, value in inputs.items()}, target[selected]
            )
            written.append(shards.file_name(split, rank))
            write_table(table, shards.store, shards.file_name(split, rank))
            counts.append(table.num_rows)
        manifest["splits"][split] = {"rows": counts, "dropped": len(target) - rows}
    return manifest


def read_shard(shards: ShardSet, split: str, rank: int) -> Arrays:
    """One rank's rows of one split, as the arrays ``model.fit`` takes (pyarrow, no Spark);
    training rows cut to ``train_rows`` (equal steps on every rank)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    filesystem = shards.store.filesystem
    tables = [pq.read_table(path, filesystem=filesystem) for path in shards.files(split, rank)]
    table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    if split == "train":
        table = table.slice(0, shards.train_rows())
    return table_to_arrays(table)


def table_to_arrays(table) -> Arrays:
    """The inverse of ``arrays_to_table`` (a table or a record batch)."""
    columns = decode_columns(table)
    return columns, columns.pop(TARGET_COLUMN)


def decode_columns(table) -> dict[str, np.ndarray]:
    """A pyarrow table or record batch as NumPy arrays by column: ``(n,)`` for a plain
    column, ``(n, k)`` for a fixed-size list of ``k`` (the shard format)."""
    import pyarrow as pa

    columns = {}
    for name, column in zip(table.column_names, table.columns, strict=True):
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        if pa.types.is_fixed_size_list(column.type):
            flat = column.flatten().to_numpy(zero_copy_only=False)
            columns[name] = flat.reshape(len(column), column.type.list_size)
        else:
            columns[name] = column.to_numpy(zero_copy_only=False)
    return columns


def _check_enough_rows(splits: dict[str, Arrays], world_size: int) -> None:
    for split, (_, target) in splits.items():
        if len(target) < world_size:
            raise UserInputError(
                f"The {split} split has {len(target)} rows, fewer than one per worker; use "
                f"fewer --workers or more data. Received: workers={world_size}"
            )


def arrays_to_table(inputs: dict[str, np.ndarray], target: np.ndarray):
    """Model inputs and target as one Arrow table (the shard file format)."""
    import pyarrow as pa

    columns = {name: _to_column(value) for name, value in inputs.items()}
    columns[TARGET_COLUMN] = _to_column(target)
    return pa.table(columns)


def _to_column(values: np.ndarray):
    """1-D arrays as plain columns, ``(n, k)`` arrays as fixed-size lists of ``k``."""
    import pyarrow as pa

    values = np.ascontiguousarray(values)
    if values.ndim == 1:
        return pa.array(values)
    width = int(np.prod(values.shape[1:]))
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), width)


def write_table(table, store: Store, name: str) -> None:
    """Write one shard file into ``store`` (whole, atomically; row groups of
    ``ROW_GROUP_ROWS``, the unit the streaming reader shuffles)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer, row_group_size=ROW_GROUP_ROWS)
    store.write_bytes(buffer.getvalue().to_pybytes(), name)
