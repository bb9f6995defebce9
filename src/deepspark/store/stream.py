"""Stream encoded shard files (Parquet, on a local disk or any pyarrow filesystem) into
``model.fit``, a batch at a time, in memory bounded by the shuffle buffer and the prefetch queue.

The shard format (``distributed.shards``): one column per model input, a fixed-size list for a
2-D input, and the target in ``__target__``. An epoch reads row groups in an order drawn from
``(seed, epoch)``, in chunks of at most ``chunk_rows`` rows, into a shuffle buffer whose rows are
permuted and handed out in batches; half the buffer stays behind to mix with the next row groups.
Two daemon threads per epoch do the work (pyarrow releases the GIL while it reads and decodes):
a reader (Parquet chunks, in order) and a batcher (buffer, batches, sample weights), with bounded
queues between them and the training thread.

How Keras 3 calls it (``trainers/data_adapters/py_dataset_adapter.py``): with ``workers=1`` and
no multiprocessing, ``fit`` calls ``__getitem__`` from the training thread for every index of
``range(len(stream))``, shuffled when ``fit(shuffle=True)`` (its default), and
``on_epoch_end`` after the epoch. Before the first epoch ``fit`` may take one batch to build the
model and then call ``on_epoch_end``; ``evaluate`` calls ``on_epoch_end`` before it starts. So
``__getitem__`` serves the epoch's batches in stream order whatever the index (the stream is
shuffled already), and an epoch counts only once all of its batches were served.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import queue
import threading
import weakref
from collections.abc import Iterator, Sequence

import numpy as np

from deepspark._backend import import_keras
from deepspark.data.parquet_io import READ_BUFFER_BYTES, is_remote_filesystem
from deepspark.distributed.shards import TARGET_COLUMN, decode_columns
from deepspark.errors import DataError, UserInputError

keras = import_keras()
logger = logging.getLogger("deepspark.store")

_READ_AHEAD_CHUNKS = 2  # decoded chunks waiting between the reader and the batcher
_POLL_SECONDS = 0.1  # how often a blocked thread looks whether it should stop
_JOIN_SECONDS = 10.0
Columns = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class _RowGroup:
    file: int
    index: int
    rows: int


class _ShardFiles:
    """The files of one stream: their filesystem, paths, Parquet footers and row groups."""

    def __init__(self, files: Sequence[str], filesystem=None):
        import pyarrow.parquet as pq

        if isinstance(files, str) or not files:
            raise UserInputError(
                f"files must be a non-empty list of shard file paths or URIs. Received: "
                f"files={files!r}"
            )
        self.filesystem, self.paths = _resolve_files(list(files), filesystem)
        self.remote = is_remote_filesystem(self.filesystem)
        self.metadata = []
        for path in self.paths:
            try:
                self.metadata.append(pq.read_metadata(path, filesystem=self.filesystem))
            except Exception as error:
                raise DataError(
                    f"A shard file cannot be opened as Parquet ({error}); check the path and "
                    f"that the file is complete. Received: file={path!r}"
                ) from error
        self.schema = _common_schema(self.paths, self.metadata)
        self.row_groups = [
            _RowGroup(file, index, metadata.row_group(index).num_rows)
            for file, metadata in enumerate(self.metadata)
            for index in range(metadata.num_row_groups)
        ]
        self.rows = sum(group.rows for group in self.row_groups)

    def read(self, group: _RowGroup, *, rows: int, chunk_rows: int) -> Iterator[Columns]:
        """The first ``rows`` rows of a row group, decoded, in chunks of ``chunk_rows`` rows."""
        import pyarrow.parquet as pq

        path = self.paths[group.file]
        try:
            with self.filesystem.open_input_file(path) as handle:
                parquet = pq.ParquetFile(
                    handle,
                    metadata=self.metadata[group.file],
                    pre_buffer=self.remote,  # fewer, coalesced requests to an object store
                    buffer_size=READ_BUFFER_BYTES,
                )
                batches = parquet.iter_batches(batch_size=chunk_rows, row_groups=[group.index])
                for batch in batches:
                    batch = batch.slice(0, rows)
                    rows -= batch.num_rows
                    yield decode_columns(batch)
                    if rows <= 0:
                        return
        except Exception as error:
            raise DataError(
                f"Row group {group.index} of a shard file cannot be read ({error}); check that "
                f"the file is complete and unchanged since the stream opened it. "
                f"Received: file={path!r}"
            ) from error


def _resolve_files(files: list[str], filesystem):
    """(filesystem, paths in it): URIs resolve through ``FileSystem.from_uri``; plain paths
    are local."""
    from pyarrow import fs

    if filesystem is not None:
        return filesystem, [str(path) for path in files]
    if "://" not in str(files[0]):
        return fs.LocalFileSystem(), [str(path) for path in files]
    resolved = [fs.FileSystem.from_uri(str(uri)) for uri in files]
    if len({filesystem.type_name for filesystem, _ in resolved}) > 1:
        raise UserInputError(
            f"All shard files must be on one filesystem. Received: files={files!r}"
        )
    return resolved[0][0], [path for _, path in resolved]


def _common_schema(paths: list[str], metadata: list):
    schema = metadata[0].schema.to_arrow_schema()
    if TARGET_COLUMN not in schema.names or len(schema.names) < 2:
        raise DataError(
            f"A shard file needs the target column {TARGET_COLUMN!r} and at least one input "
            f"column; write it with deepspark's shard writer. Received: file={paths[0]!r}, "
            f"columns={schema.names}"
        )
    for path, other in zip(paths[1:], metadata[1:], strict=True):
        if not other.schema.to_arrow_schema().equals(schema):
            raise DataError(
                f"All shard files of a stream must have the same columns and types as the "
                f"first one ({paths[0]!r}). Received: file={path!r}"
            )
    return schema


def read_shard_rows(files: Sequence[str], *, filesystem=None) -> tuple[Columns, np.ndarray]:
    """Whole shard files as arrays, in file order (for data that fits in memory); the same
    decoding as ``ShardStream``.

    Args:
        files: Parquet shard files: paths in ``filesystem``, or URIs when it is ``None``.
        filesystem: A ``pyarrow.fs.FileSystem``; ``None``: local paths or URIs.

    Returns:
        ``(inputs by name, target)``.

    Raises:
        DataError: A file is missing, unreadable or not in the shard format.
    """
    shard_files = _ShardFiles(files, filesystem)
    parts = [
        chunk
        for group in shard_files.row_groups
        for chunk in shard_files.read(group, rows=group.rows, chunk_rows=max(group.rows, 1))
    ]
    if not parts:
        parts = [decode_columns(shard_files.schema.empty_table())]
    columns = {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
    target = columns.pop(TARGET_COLUMN)
    return columns, target


def epoch_plan(
    row_groups: Sequence[_RowGroup], rows: int, *, shuffle: bool, seed: int, epoch: int
) -> list[tuple[_RowGroup, int]]:
    """The row groups one epoch reads, in order, and how many rows of each (the last one may
    be cut so that the epoch has exactly ``rows`` rows)."""
    order = range(len(row_groups))
    if shuffle:
        order = np.random.default_rng([seed, epoch]).permutation(len(row_groups))
    plan, remaining = [], rows
    for position in order:
        if remaining <= 0:
            break
        group = row_groups[position]
        plan.append((group, min(group.rows, remaining)))
        remaining -= group.rows
    return plan


def shuffled_batches(
    chunks: Iterator[Columns], *, batch_size: int, buffer_rows: int, rng
) -> Iterator[Columns]:
    """Batches of ``batch_size`` rows (the last one smaller) from ``chunks``; with ``rng``,
    rows are permuted within a buffer of at least ``buffer_rows`` rows, half of which waits
    for the next chunks. Without ``rng``, rows keep their order."""
    pool: Columns = {}
    keep = buffer_rows // 2 if rng is not None else 0
    ready_at = buffer_rows if rng is not None else batch_size
    for chunk in chunks:
        pool = {
            name: np.concatenate([pool[name], chunk[name]]) if pool else chunk[name]
            for name in chunk
        }
        size = _length(pool)
        if size < ready_at:
            continue
        if rng is not None:
            pool = _take(pool, rng.permutation(size))
        emit = (size - keep) // batch_size * batch_size
        for start in range(0, emit, batch_size):
            yield {name: values[start : start + batch_size] for name, values in pool.items()}
        pool = {name: values[emit:] for name, values in pool.items()}
    size = _length(pool)
    if size and rng is not None:
        pool = _take(pool, rng.permutation(size))
    for start in range(0, size, batch_size):
        yield {name: values[start : start + batch_size] for name, values in pool.items()}


def _length(columns: Columns) -> int:
    return len(next(iter(columns.values()))) if columns else 0


def _take(columns: Columns, order: np.ndarray) -> Columns:
    return {name: np.take(values, order, axis=0) for name, values in columns.items()}


def class_weights(target: np.ndarray, class_weight: dict[int, float]) -> np.ndarray:
    """Per-row weights from a class index -> weight mapping, as Keras' ``class_weight`` (one-hot
    targets by argmax; classes not in the mapping weigh 1), vectorised."""
    labels = np.asarray(target)
    if labels.ndim > 1:
        labels = labels.argmax(axis=-1) if labels.shape[-1] != 1 else labels[..., 0]
    codes = np.round(labels).astype(np.int64)
    weights = np.ones(len(codes), dtype=keras.backend.floatx())
    for code, weight in class_weight.items():
        weights[codes == int(code)] = weight
    return weights


@dataclasses.dataclass(frozen=True)
class _BatchSettings:
    batch_size: int
    buffer_rows: int
    prefetch_batches: int
    class_weight: dict[int, float] | None

    @property
    def chunk_rows(self) -> int:
        """Rows per Parquet read: a part of the buffer, so that the buffer bounds memory."""
        return max(1024, min(65_536, self.buffer_rows // 2))


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


_END = object()


class _EpochPipeline:
    """One epoch's reader and batcher threads and the bounded queues after each."""

    def __init__(self, shard_files: _ShardFiles, plan: list, settings: _BatchSettings, rng):
        self._stopping = threading.Event()
        chunks = queue.Queue(maxsize=_READ_AHEAD_CHUNKS)
        self._batches = queue.Queue(maxsize=settings.prefetch_batches)
        read = (
            chunk
            for group, rows in plan
            for chunk in shard_files.read(group, rows=rows, chunk_rows=settings.chunk_rows)
        )
        batches = (
            _as_batch(columns, settings.class_weight)
            for columns in shuffled_batches(
                self._drain(chunks),
                batch_size=settings.batch_size,
                buffer_rows=settings.buffer_rows,
                rng=rng,
            )
        )
        self._threads = [
            threading.Thread(target=self._pump, args=(items, into), name=name, daemon=True)
            for items, into, name in (
                (read, chunks, "deepspark-stream-reader"),
                (batches, self._batches, "deepspark-stream-batcher"),
            )
        ]
        for thread in self._threads:
            thread.start()
        self._output = self._drain(self._batches)
        self._failure: BaseException | None = None

    def next_batch(self):
        """The next batch; raises the reader's or the batcher's error in the calling thread
        (again at every later call)."""
        if self._failure is None:
            try:
                return next(self._output)
            except StopIteration:
                self._failure = RuntimeError("The stream stopped while a batch was awaited.")
            except Exception as error:
                self._failure = error
        raise self._failure

    def stop(self) -> None:
        self._stopping.set()
        for thread in self._threads:
            thread.join(_JOIN_SECONDS)
            if thread.is_alive():
                logger.warning("%s did not stop within %.0f s", thread.name, _JOIN_SECONDS)

    def _pump(self, items: Iterator, into: queue.Queue) -> None:
        """Put every item (then the end, or the error) into ``into`` until told to stop."""
        try:
            for item in items:
                if not self._put(into, item):
                    return
            self._put(into, _END)
        except BaseException as error:  # raised again where the items are taken
            self._put(into, _Failure(error))
        finally:
            if hasattr(items, "close"):
                items.close()  # closes the Parquet file of an interrupted read

    def _put(self, into: queue.Queue, item) -> bool:
        while not self._stopping.is_set():
            try:
                into.put(item, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                pass
        return False

    def _drain(self, source: queue.Queue) -> Iterator:
        while not self._stopping.is_set():
            try:
                item = source.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                continue
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item


def _as_batch(columns: Columns, class_weight: dict[int, float] | None) -> tuple:
    inputs = dict(columns)
    target = inputs.pop(TARGET_COLUMN)
    if class_weight is None:
        return inputs, target
    return inputs, target, class_weights(target, class_weight)


def _stop_current(holder: dict) -> None:
    """Stop the pipeline in ``holder`` (also run when a stream is garbage-collected or at exit:
    the holder, not the stream, is what the finalizer keeps)."""
    pipeline = holder.pop("pipeline", None)
    if pipeline is not None:
        pipeline.stop()


class ShardStream(keras.utils.PyDataset):
    """Batches of encoded shard files for ``model.fit``, streamed, shuffled and prefetched.

    Yields ``(inputs by name, target)``, or ``(inputs, target, sample weights)`` with
    ``class_weight`` (Keras also accepts ``fit(class_weight=...)`` with a ``PyDataset``, but
    computes the weights row by row in the training thread; here a background thread does it).

    Args:
        files: Parquet shard files: paths in ``filesystem``, or URIs when it is ``None``.
        filesystem: A ``pyarrow.fs.FileSystem``; ``None``: local paths or URIs.
        batch_size: Rows per batch (the epoch's last batch may be smaller).
        rows: Rows per epoch, at most the files' rows (the same cap on every rank gives every
            rank the same steps); ``None``: all rows.
        shuffle: Shuffle the row-group order per epoch and the rows within a buffer;
            ``False``: file order exactly.
        seed: With the epoch, seeds the orders: the same seed gives the same batches.
        start_epoch: The epoch the first pass is (a resumed run continues the same sequence).
        shuffle_buffer_rows: Rows mixed together (several row groups when they are smaller).
        prefetch_batches: Batches prepared ahead of the training thread.
        class_weight: Class index -> weight, for per-row sample weights.

    Memory: at most about 5 x ``shuffle_buffer_rows`` rows (the buffer, its permuted copy and
    the chunks read ahead, each half a buffer within 1,024..65,536 rows) plus
    ``prefetch_batches`` batches, whatever the sizes of the files and their row groups.

    Raises:
        UserInputError: A bad option.
        DataError: A file missing or not in the shard format, or fewer rows than ``rows``.

    Example:
        >>> train = ShardStream(files, batch_size=256, rows=shards.train_rows(), seed=7)
        >>> val = ShardStream(val_files, batch_size=4096, shuffle=False)
        >>> model.fit(train, validation_data=val, epochs=10)
    """

    def __init__(
        self,
        files: Sequence[str],
        *,
        filesystem=None,
        batch_size: int,
        rows: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        start_epoch: int = 0,
        shuffle_buffer_rows: int = 65_536,
        prefetch_batches: int = 8,
        class_weight: dict[int, float] | None = None,
    ):
        # Keras' own enqueuer stays off (workers=1): the stream prefetches in its own threads.
        super().__init__(workers=1, use_multiprocessing=False)
        for name, value, least in (
            ("batch_size", batch_size, 1),
            ("shuffle_buffer_rows", shuffle_buffer_rows, 1),
            ("prefetch_batches", prefetch_batches, 1),
            ("seed", seed, 0),
            ("start_epoch", start_epoch, 0),
            ("rows", 1 if rows is None else rows, 1),
        ):
            _check_int(name, value, least)
        self.shard_files_ = _ShardFiles(files, filesystem)
        held = self.shard_files_.rows
        self.rows = held if rows is None else int(rows)
        if self.rows > held or held == 0:
            raise DataError(
                f"The shard files hold {held} rows, fewer than the {max(self.rows, 1)} asked "
                f"per epoch; ask for at most {held} rows or add files. Received: rows={rows}"
            )
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.settings_ = _BatchSettings(
            int(batch_size),
            int(shuffle_buffer_rows),
            int(prefetch_batches),
            dict(class_weight) if class_weight else None,
        )
        self._epoch = int(start_epoch)
        self._served = 0
        self._lock = threading.Lock()
        self._holder: dict = {}
        self._finalizer = weakref.finalize(self, _stop_current, self._holder)

    @property
    def batch_size(self) -> int:
        return self.settings_.batch_size

    @property
    def epoch(self) -> int:
        """The epoch being served (``start_epoch`` plus the epochs completed since)."""
        return self._epoch

    def __len__(self) -> int:
        """Steps per epoch: ``ceil(rows / batch_size)``."""
        return math.ceil(self.rows / self.settings_.batch_size)

    def __getitem__(self, index: int):
        """The epoch's next batch in stream order (Keras may ask for the indices in any order:
        each call gets the next batch, each batch once)."""
        if not 0 <= index < len(self):
            raise IndexError(f"ShardStream index out of range. Received: index={index}")
        with self._lock:
            if self._served == len(self):  # a full pass without on_epoch_end: iterated by hand
                self._end_epoch()
            pipeline = self._holder.get("pipeline")
            if pipeline is None:
                pipeline = self._holder["pipeline"] = self._start_pipeline()
            batch = pipeline.next_batch()
            self._served += 1
            if self._served == len(self):
                _stop_current(self._holder)
            return batch

    def on_epoch_end(self) -> None:
        """Move to the next epoch when this one was served whole; else (a batch taken to build
        the model, a run stopped early) start this epoch again from its first batch."""
        with self._lock:
            self._end_epoch()

    def close(self) -> None:
        """Stop the background threads now (they also stop at each epoch's end, when the
        stream is garbage-collected and at interpreter exit)."""
        with self._lock:
            _stop_current(self._holder)
            self._served = 0

    def __enter__(self) -> ShardStream:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _end_epoch(self) -> None:
        _stop_current(self._holder)
        if self._served == len(self):
            self._epoch += 1
        self._served = 0

    def _start_pipeline(self) -> _EpochPipeline:
        plan = epoch_plan(
            self.shard_files_.row_groups,
            self.rows,
            shuffle=self.shuffle,
            seed=self.seed,
            epoch=self._epoch,
        )
        rng = np.random.default_rng([self.seed, self._epoch, 1]) if self.shuffle else None
        return _EpochPipeline(self.shard_files_, plan, self.settings_, rng)


def _check_int(name: str, value, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < least:
        raise UserInputError(
            f"{name} must be an integer of at least {least}. Received: {name}={value!r}"
        )
