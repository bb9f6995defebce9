"""Per-rank Parquet shards of the encoded training and validation rows, written once and cached.

Layout of one shard set (``<cache>/<data key>-w<world size>/``)::

    manifest.json                 rows per split and rank, input widths, target shape
    (image models: the column of image references, paths or bytes; each rank decodes its own)
    train-00000-of-00002.parquet  rank 0's training rows (every rank has the same count)
    val-00001-of-00002.parquet    rank 1's validation rows (counts may differ by one)

Rows go to ranks round-robin (row ``i`` to rank ``i % N``), so that the local batches of all ranks
at step ``k`` are together exactly the global batch ``k`` of a single-process run without
shuffling. Training rows are cut to a multiple of ``N`` (fewer than ``N`` rows dropped) so that
every rank runs the same number of steps and none waits forever at the last batch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from deepspark.errors import UserInputError

logger = logging.getLogger("deepspark.distributed")

SHARD_CACHE_ENV = "DEEPSPARK_SHARD_CACHE"
MANIFEST = "manifest.json"
TARGET_COLUMN = "__target__"
IMAGE_SOURCES = "__image_sources__"  # an image model's shard column: paths or encoded bytes
FORMAT_VERSION = 1
Arrays = tuple[dict[str, np.ndarray], np.ndarray]  # (model inputs by name, target)


def shard_cache_root() -> Path:
    """``$DEEPSPARK_SHARD_CACHE`` or ``./.deepspark/shards``."""
    return Path(os.environ.get(SHARD_CACHE_ENV, ".deepspark/shards"))


def data_key(*parts: Any) -> str:
    """A short stable key for the data and every setting that changes its encoding."""
    document = json.dumps([FORMAT_VERSION, *parts], sort_keys=True, default=str)
    return hashlib.sha256(document.encode()).hexdigest()[:20]


@dataclasses.dataclass(frozen=True)
class ShardSet:
    """A folder of shards for ``world_size`` ranks."""

    directory: Path
    world_size: int

    def path(self, split: str, rank: int) -> Path:
        return self.directory / f"{split}-{rank:05d}-of-{self.world_size:05d}.parquet"

    def manifest(self) -> dict[str, Any]:
        return json.loads((self.directory / MANIFEST).read_text())


def write_shards(
    splits: dict[str, Arrays],
    *,
    world_size: int,
    key: str,
    root: str | Path | None = None,
) -> ShardSet:
    """Write ``splits`` as per-rank Parquet files, or reuse the cached set for ``key``.

    Args:
        splits: Split name (``train``, ``val``) -> (inputs by name, target).
        world_size: Number of ranks.
        key: Identifies the data and its encoding (``data_key``); same key, same files.
        root: Cache folder; default ``shard_cache_root()``.

    Returns:
        The ``ShardSet``.

    Raises:
        UserInputError: When a rank would get no training or validation rows.
    """
    directory = Path(root or shard_cache_root()).resolve() / f"{key}-w{world_size}"
    shards = ShardSet(directory, world_size)
    if (directory / MANIFEST).exists():
        logger.info("reusing data shards in %s", directory)
        return shards
    _check_enough_rows(splits, world_size)
    temporary = directory.with_name(f".{directory.name}.tmp-{os.getpid()}")
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    staged = ShardSet(temporary, world_size)
    manifest = {"world_size": world_size, "splits": {}}
    for split, (inputs, target) in splits.items():
        rows = len(target) - len(target) % world_size if split == "train" else len(target)
        counts = []
        for rank in range(world_size):
            selected = slice(rank, rows, world_size)
            table = _to_table(
                {name: value[selected] for name, value in inputs.items()}, target[selected]
            )
            _write_table(table, staged.path(split, rank))
            counts.append(table.num_rows)
        manifest["splits"][split] = {"rows": counts, "dropped": len(target) - rows}
    (temporary / MANIFEST).write_text(json.dumps(manifest, indent=1))
    try:
        os.replace(temporary, directory)
    except OSError:  # another process wrote the same set first: theirs is as good as ours
        shutil.rmtree(temporary, ignore_errors=True)
    logger.info("wrote data shards for %d ranks in %s", world_size, directory)
    return shards


def read_shard(shards: ShardSet, split: str, rank: int) -> Arrays:
    """One rank's rows of one split, as the arrays ``model.fit`` takes (pyarrow, no Spark)."""
    import pyarrow.parquet as pq

    table = pq.read_table(shards.path(split, rank))
    inputs = {
        name: _column_array(table.column(name))
        for name in table.column_names
        if name != TARGET_COLUMN
    }
    return inputs, _column_array(table.column(TARGET_COLUMN))


def _check_enough_rows(splits: dict[str, Arrays], world_size: int) -> None:
    for split, (_, target) in splits.items():
        if len(target) < world_size:
            raise UserInputError(
                f"The {split} split has {len(target)} rows, fewer than one per worker; use "
                f"fewer --workers or more data. Received: workers={world_size}"
            )


def _to_table(inputs: dict[str, np.ndarray], target: np.ndarray):
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


def _column_array(column) -> np.ndarray:
    import pyarrow as pa

    chunk = column.combine_chunks()
    if pa.types.is_fixed_size_list(chunk.type):
        flat = chunk.flatten().to_numpy(zero_copy_only=False)
        return flat.reshape(len(chunk), chunk.type.list_size)
    return chunk.to_numpy(zero_copy_only=False)


def _write_table(table, path: Path) -> None:
    import pyarrow.parquet as pq

    pq.write_table(table, path)
