"""Writing shard sets a batch at a time: each (split, rank) file is a Parquet stream in the store,
rows dealt round-robin to ranks, the manifest written last.

The driver streaming a table writes one file per split and rank; each Spark partition writing
its own rows (``partition=``) writes its own files, and the driver writes the manifest from the
partitions' records (``write_manifest``), so no row passes through the driver.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from typing import Any

import numpy as np

from deepspark.distributed.shards import (
    FORMAT_VERSION,
    MANIFEST,
    ROW_GROUP_ROWS,
    ShardSet,
    arrays_to_table,
)
from deepspark.errors import StorageFullError
from deepspark.store.store import SHARD_CACHE_ENV, Store

logger = logging.getLogger("deepspark.store")


class ShardSetWriter:
    """Appends encoded rows to the per-rank files of a shard set.

    Args:
        store: The shard set's folder.
        world_size: Ranks.
        partition: The Spark partition writing (its files are named after it); ``None``: the
            only writer (files ``<split>-<rank>-of-<ranks>.parquet``).
    """

    def __init__(self, store: Store, *, world_size: int, partition: int | None = None):
        self.store = store
        self.world_size = int(world_size)
        self.partition = partition
        self._writers: dict[tuple[str, int], _ParquetStream] = {}
        self._dealt: dict[str, int] = {}

    def is_complete(self) -> bool:
        return self.store.exists(MANIFEST)

    def file_name(self, split: str, rank: int) -> str:
        if self.partition is None:
            return f"{split}-{rank:05d}-of-{self.world_size:05d}.parquet"
        return f"{split}-p{self.partition:05d}-r{rank:05d}.parquet"

    def add(self, split: str, inputs: dict[str, np.ndarray], target: np.ndarray) -> None:
        """Deal ``len(target)`` rows to the ranks, continuing the round-robin of ``split``."""
        with self._aborting_on_error():
            self._add(split, inputs, target)

    def _add(self, split: str, inputs: dict[str, np.ndarray], target: np.ndarray) -> None:
        start = self._dealt.get(split, 0)
        ranks = (start + np.arange(len(target))) % self.world_size
        self._dealt[split] = start + len(target)
        for rank in range(self.world_size):
            chosen = ranks == rank
            if not chosen.any():
                continue
            table = arrays_to_table(
                {name: value[chosen] for name, value in inputs.items()}, target[chosen]
            )
            key = (split, rank)
            if key not in self._writers:
                self._writers[key] = _ParquetStream(self.store, self.file_name(split, rank))
            self._writers[key].write(table)

    def close(self) -> list[dict[str, Any]]:
        """Finish every file; one record per file: split, rank, name, rows."""
        records = []
        with self._aborting_on_error():
            for (split, rank), writer in sorted(self._writers.items()):
                rows = writer.close()
                records.append({"split": split, "rank": rank, "name": writer.name, "rows": rows})
        self._writers.clear()
        return records

    def abort(self) -> None:
        """Drop every file not closed yet (their staged copies included)."""
        for writer in self._writers.values():
            writer.abort()
        self._writers.clear()

    @contextlib.contextmanager
    def _aborting_on_error(self):
        try:
            yield
        except BaseException as error:
            self.abort()
            if StorageFullError.caused(error):
                raise StorageFullError.writing(
                    "the data shards", self.store.uri,
                    f"free space there, or choose another location with --store or "
                    f"${SHARD_CACHE_ENV}",
                ) from error  # fmt: skip
            raise

    def finish(self) -> ShardSet:
        """Close the files and write the manifest (last); a complete set is returned as is."""
        shards = ShardSet(self.store, self.world_size)
        if self.is_complete():
            logger.info("reusing data shards in %s", self.store.uri)
            return shards
        write_manifest(self.store, self.world_size, self.close())
        return shards


def write_manifest(store: Store, world_size: int, records: list[dict[str, Any]]) -> ShardSet:
    """The manifest of a set from its files' records (any writer, any partition)."""
    splits: dict[str, dict[str, list]] = {}
    for record in sorted(records, key=lambda item: (item["split"], item["name"])):
        split = splits.setdefault(
            record["split"],
            {"rows": [0] * world_size, "files": [[] for _ in range(world_size)]},
        )
        split["rows"][record["rank"]] += int(record["rows"])
        split["files"][record["rank"]].append(record["name"])
    for split in splits.values():
        split["dropped"] = sum(split["rows"]) - min(split["rows"]) * world_size
    manifest = {"format": FORMAT_VERSION, "world_size": world_size, "splits": splits}
    store.write_json(manifest, MANIFEST)
    return ShardSet(store, world_size)


class _ParquetStream:
    """One Parquet file written as row groups; visible under its name only once closed."""

    def __init__(self, store: Store, name: str):
        import pyarrow.parquet  # noqa: F401  (imported here: pyarrow loads only when writing)

        self.store = store
        self.name = name
        self.rows = 0
        self._writer = None
        self._stream = None
        staged = name if not store.is_local else f".{name}.partial-{uuid.uuid4().hex[:8]}"
        self._staged = staged
        self._pending: list = []
        self._pending_rows = 0

    def write(self, table) -> None:
        self._pending.append(table)
        self._pending_rows += table.num_rows
        self.rows += table.num_rows
        if self._pending_rows >= ROW_GROUP_ROWS:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self._pending:
            return
        table = pa.concat_tables(self._pending)
        self._pending, self._pending_rows = [], 0
        if self._writer is None:
            filesystem = self.store.filesystem
            filesystem.create_dir(self.store.root, recursive=True)
            self._stream = filesystem.open_output_stream(self.store.path(self._staged))
            self._writer = pq.ParquetWriter(self._stream, table.schema)
        self._writer.write_table(table, row_group_size=ROW_GROUP_ROWS)

    def abort(self) -> None:
        """Close and delete the staged file; nothing of it is left under any name."""
        with contextlib.suppress(Exception):
            if self._writer is not None:
                self._writer.close()
        with contextlib.suppress(Exception):
            if self._stream is not None:
                self._stream.close()
        self._writer = self._stream = None
        with contextlib.suppress(Exception):
            self.store.delete(self._staged)

    def close(self) -> int:
        self._flush()
        if self._writer is not None:
            self._writer.close()
            self._stream.close()
            if self._staged != self.name:
                self.store.filesystem.move(
                    self.store.path(self._staged), self.store.path(self.name)
                )
        return self.rows
