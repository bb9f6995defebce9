"""The per-rank streaming loader: shuffled row groups and buffer, exact epochs, background
prefetch that stops and reports errors, bounded memory, ``model.fit`` on JAX and torch, S3."""

from __future__ import annotations

import gc
import math
import threading
import tracemalloc

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from deepspark.errors import DataError, UserInputError
from deepspark.store.stream import ShardStream, class_weights, read_shard_rows
from tests.object_store import s3_bucket, s3_server  # noqa: F401

WIDTH = 3


def shard_table(ids: np.ndarray, *, width: int = WIDTH, classes: int = 0) -> pa.Table:
    """The shard format: a ``row_id`` input, a 2-D ``numeric`` input (a fixed-size list) and
    ``__target__`` (the id, or a class index when ``classes``)."""
    ids = np.asarray(ids, dtype=np.int64)
    numeric = (ids[:, None] * 10 + np.arange(width)).astype(np.float32)
    target = (ids % classes).astype(np.int32) if classes else ids.astype(np.float32)
    return pa.table(
        {
            "row_id": pa.array(ids),
            "numeric": pa.FixedSizeListArray.from_arrays(pa.array(numeric.reshape(-1)), width),
            "__target__": pa.array(target),
        }
    )


def write_shard(path, ids, *, row_group_rows: int, **table_options) -> str:
    pq.write_table(shard_table(ids, **table_options), path, row_group_size=row_group_rows)
    return str(path)


def epoch_ids(stream: ShardStream) -> list[np.ndarray]:
    """One epoch as Keras' fit iterates it (shuffled indices; each call gets the next batch)."""
    indices = np.random.default_rng(1).permutation(len(stream))
    batches = [stream[int(index)] for index in indices]
    stream.on_epoch_end()
    return [inputs["row_id"] for inputs, *_ in batches]


def stream_threads() -> list[threading.Thread]:
    return [
        thread for thread in threading.enumerate() if thread.name.startswith("deepspark-stream")
    ]


@pytest.fixture
def two_files(tmp_path) -> list[str]:
    """1,000 rows in two files of row groups of 100 rows (the last ones shorter)."""
    return [
        write_shard(tmp_path / "a.parquet", np.arange(0, 550), row_group_rows=100),
        write_shard(tmp_path / "b.parquet", np.arange(550, 1000), row_group_rows=100),
    ]


def test_without_shuffle_batches_follow_file_order(two_files):
    stream = ShardStream(two_files, batch_size=64, shuffle=False)
    assert len(stream) == math.ceil(1000 / 64) and stream.rows == 1000
    batches = [stream[index] for index in range(len(stream))]
    inputs, target = read_shard_rows(two_files)
    assert [len(batch[1]) for batch in batches] == [64] * 15 + [40]
    np.testing.assert_array_equal(
        np.concatenate([b[0]["row_id"] for b in batches]), np.arange(1000)
    )
    np.testing.assert_array_equal(
        np.concatenate([b[0]["numeric"] for b in batches]), inputs["numeric"]
    )
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), target)
    assert inputs["numeric"].shape == (1000, WIDTH) and inputs["numeric"].dtype == np.float32
    np.testing.assert_array_equal(inputs["numeric"][7], [70, 71, 72])
    assert target.dtype == np.float32 and inputs["row_id"].dtype == np.int64


def test_every_row_once_per_epoch_in_a_new_order(two_files):
    stream = ShardStream(two_files, batch_size=64, shuffle_buffer_rows=300, seed=3)
    first, second = np.concatenate(epoch_ids(stream)), np.concatenate(epoch_ids(stream))
    for order in (first, second):
        np.testing.assert_array_equal(np.sort(order), np.arange(1000))
    assert not np.array_equal(first, second) and not np.array_equal(first, np.arange(1000))
    assert stream.epoch == 2


def test_same_seed_same_batches_and_a_resumed_run_continues(two_files):
    options = {"batch_size": 64, "shuffle_buffer_rows": 300, "seed": 5}
    run = ShardStream(two_files, **options)
    epochs = [np.concatenate(epoch_ids(run)) for _ in range(2)]
    again = ShardStream(two_files, **options)
    np.testing.assert_array_equal(np.concatenate(epoch_ids(again)), epochs[0])
    resumed = ShardStream(two_files, **options, start_epoch=1)
    np.testing.assert_array_equal(np.concatenate(epoch_ids(resumed)), epochs[1])
    other_seed = ShardStream(two_files, **{**options, "seed": 6})
    assert not np.array_equal(np.concatenate(epoch_ids(other_seed)), epochs[0])


def test_the_buffer_mixes_several_row_groups(two_files):
    stream = ShardStream(two_files, batch_size=64, shuffle_buffer_rows=300, seed=0)
    row_groups_per_batch = [len(np.unique(ids // 100)) for ids in epoch_ids(stream)]
    assert min(row_groups_per_batch[:-1]) >= 2  # every full batch draws on 2+ row groups
    assert max(row_groups_per_batch) >= 3


def test_rows_caps_every_epoch(two_files):
    stream = ShardStream(two_files, batch_size=64, rows=250, seed=1)
    assert len(stream) == 4
    for _ in range(3):
        batches = epoch_ids(stream)
        assert sorted(len(ids) for ids in batches) == [58, 64, 64, 64]
        ids = np.concatenate(batches)
        assert len(np.unique(ids)) == 250 and ids.min() >= 0 and ids.max() < 1000
    first_250 = np.concatenate(
        epoch_ids(ShardStream(two_files, batch_size=64, rows=250, shuffle=False))
    )
    np.testing.assert_array_equal(first_250, np.arange(250))


def test_more_rows_than_the_files_hold_is_refused(tmp_path, two_files):
    with pytest.raises(DataError, match="hold 1000 rows, fewer than the 1001 asked"):
        ShardStream(two_files, batch_size=64, rows=1001)
    empty = write_shard(tmp_path / "empty.parquet", np.arange(0), row_group_rows=10)
    with pytest.raises(DataError, match="hold 0 rows, fewer than the 1 asked"):
        ShardStream([empty], batch_size=64)
    inputs, target = read_shard_rows([empty])
    assert target.shape == (0,) and inputs["numeric"].shape == (0, WIDTH)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"batch_size": 0}, "batch_size must be an integer of at least 1"),
        ({"batch_size": 8, "rows": 0}, "rows must be an integer of at least 1"),
        ({"batch_size": 8, "prefetch_batches": 0}, "prefetch_batches must be"),
        ({"batch_size": 8, "seed": -1}, "seed must be an integer of at least 0"),
        ({"batch_size": 2.5}, r"Received: batch_size=2.5"),
    ],
)
def test_bad_options_are_refused(two_files, options, message):
    with pytest.raises(UserInputError, match=message):
        ShardStream(two_files, **options)


def test_missing_and_mismatched_files_are_named(tmp_path, two_files):
    missing = str(tmp_path / "missing.parquet")
    with pytest.raises(DataError, match=f"cannot be opened as Parquet.*{missing}"):
        ShardStream([two_files[0], missing], batch_size=8)
    other = write_shard(tmp_path / "wide.parquet", np.arange(10), row_group_rows=10, width=5)
    with pytest.raises(DataError, match=f"same columns and types.*{other}"):
        ShardStream([two_files[0], other], batch_size=8)
    with pytest.raises(UserInputError, match="non-empty list"):
        ShardStream([], batch_size=8)


def test_class_weight_gives_sample_weights(tmp_path):
    path = write_shard(tmp_path / "classes.parquet", np.arange(300), row_group_rows=50, classes=3)
    stream = ShardStream([path], batch_size=32, class_weight={0: 0.5, 2: 4.0}, seed=2)
    for index in range(len(stream)):
        inputs, target, weights = stream[index]
        expected = np.select([target == 0, target == 2], [0.5, 4.0], 1.0)
        np.testing.assert_array_equal(weights, expected)
        np.testing.assert_array_equal(target, inputs["row_id"] % 3)
        assert weights.dtype == np.float32


def test_class_weights_match_keras_class_weight():
    """The same weights as ``fit(class_weight=...)`` computes for a PyDataset (which Keras 3
    accepts, row by row in the training thread): index targets, ``(n, 1)`` and one-hot."""
    from keras.src.trainers.data_adapters.data_adapter_utils import (
        class_weight_to_sample_weights,
    )

    mapping = {0: 0.25, 1: 2.0, 3: 7.0}
    codes = np.random.default_rng(0).integers(0, 4, size=50)
    for target in (codes, codes[:, None].astype(np.float32), np.eye(4)[codes]):
        np.testing.assert_array_equal(
            class_weights(target, mapping), class_weight_to_sample_weights(target, mapping)
        )


def tiny_model():
    import keras

    row_id = keras.Input((), name="row_id", dtype="int32")
    numeric = keras.Input((WIDTH,), name="numeric")
    hidden = keras.layers.Dense(4)(keras.layers.Rescaling(1e-3)(numeric))
    model = keras.Model({"row_id": row_id, "numeric": numeric}, keras.layers.Dense(1)(hidden))
    model.compile(optimizer="adam", loss="mse")
    return model


@pytest.mark.parity
def test_fit_on_streams_with_validation(tmp_path, two_files):
    """Keras may take a batch to build the model and then end the epoch: that pass does not
    count, so two epochs leave the training stream at epoch 2. No thread outlives the fit."""
    val = write_shard(tmp_path / "val.parquet", np.arange(1000, 1100), row_group_rows=40)
    train = ShardStream(two_files, batch_size=128, rows=900, seed=4)
    validation = ShardStream([val], batch_size=64, shuffle=False)
    history = tiny_model().fit(train, validation_data=validation, epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2 and len(history.history["val_loss"]) == 2
    assert all(np.isfinite(history.history["val_loss"]))
    assert train.epoch == 2 and validation.epoch == 2
    assert stream_threads() == []


def test_a_read_error_reaches_fit_with_the_file_named(tmp_path, two_files):
    stream = ShardStream(two_files, batch_size=64, shuffle=False)
    data = open(two_files[1], "rb").read()
    with open(two_files[1], "wb") as handle:  # damaged after the stream read the footer
        handle.write(data[: len(data) // 3])
    with pytest.raises(DataError, match=f"cannot be read.*{two_files[1]}"):
        tiny_model().fit(stream, epochs=1, verbose=0)
    with pytest.raises(DataError, match=f"cannot be read.*{two_files[1]}"):
        stream[1]  # the error stays until the epoch ends
    stream.close()
    assert stream_threads() == []


def test_threads_stop_when_fit_raises_and_when_the_stream_is_dropped(two_files):
    import keras

    class Boom(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 2:
                raise RuntimeError("boom")

    stream = ShardStream(two_files, batch_size=32, prefetch_batches=2)
    with pytest.raises(RuntimeError, match="boom"):
        tiny_model().fit(stream, epochs=1, verbose=0, callbacks=[Boom()])
    assert stream_threads() and all(thread.daemon for thread in stream_threads())
    stream.close()
    assert stream_threads() == []
    dropped = ShardStream(two_files, batch_size=32, prefetch_batches=2)
    dropped[0]
    assert stream_threads()
    del dropped
    gc.collect()
    assert stream_threads() == []


def test_memory_is_bounded_by_the_buffer_not_the_file(tmp_path):
    """15 MB of rows in row groups of 50,000 rows, through a buffer of 4,096 rows."""
    rows, width = 200_000, 16
    path = write_shard(
        tmp_path / "big.parquet", np.arange(rows), row_group_rows=50_000, width=width
    )
    decoded_bytes = rows * (width * 4 + 8 + 4)
    stream = ShardStream([path], batch_size=256, shuffle_buffer_rows=4096, prefetch_batches=4)
    default_pool = pa.default_memory_pool()
    arrow_pool = pa.proxy_memory_pool(default_pool)  # its own peak, for this test only
    pa.set_memory_pool(arrow_pool)
    tracemalloc.start()
    try:
        seen = sum(len(stream[index][1]) for index in range(len(stream)))
        _, numpy_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        stream.close()
        pa.set_memory_pool(default_pool)
    assert seen == rows
    assert numpy_peak < decoded_bytes / 10, numpy_peak
    assert arrow_pool.max_memory() < decoded_bytes / 5, arrow_pool.max_memory()
    assert arrow_pool.bytes_allocated() == 0  # nothing read through it outlives the stream


def test_streams_from_s3(s3_bucket):  # noqa: F811
    files = [f"{s3_bucket.uri}/shards/train-{part}.parquet" for part in range(2)]
    for part, uri in enumerate(files):
        pq.write_table(shard_table(np.arange(part * 150, (part + 1) * 150)), uri, row_group_size=50)
    stream = ShardStream(files, batch_size=40, seed=9)
    ids = np.concatenate(epoch_ids(stream))
    np.testing.assert_array_equal(np.sort(ids), np.arange(300))
    inputs, target = read_shard_rows(files)
    np.testing.assert_array_equal(inputs["row_id"], np.arange(300))
    np.testing.assert_array_equal(target, np.arange(300, dtype=np.float32))
    filesystem, first = pafs.FileSystem.from_uri(files[0])  # a filesystem and paths in it
    paths = [first, first.replace("train-0", "train-1")]
    in_order = ShardStream(paths, filesystem=filesystem, batch_size=40, shuffle=False)
    np.testing.assert_array_equal(np.concatenate(epoch_ids(in_order)), np.arange(300))
