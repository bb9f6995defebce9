"""The store: one location by URI, local or on S3 (moto's server), whole-file writes, pickled as
its URI; checkpoints and shards written into it and read back."""

import pickle
from pathlib import Path

import numpy as np
import pytest

from deepspark.distributed.shards import read_shard, write_shards
from deepspark.errors import UserInputError
from deepspark.store.store import STORE_ENV, Store
from deepspark.training.checkpoint import CheckpointStore, checkpoint_root
from tests.object_store import s3_bucket, s3_server  # noqa: F401


def test_local_store_resolves_paths_and_file_uris(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(STORE_ENV, raising=False)
    assert Store.resolve().uri == str(tmp_path / ".deepspark" / "store")
    monkeypatch.setenv(STORE_ENV, "elsewhere")
    assert Store.resolve().uri == str(tmp_path / "elsewhere")
    assert Store.resolve(f"file://{tmp_path}/x/").uri == str(tmp_path / "x")
    store = Store("s3://bucket/prefix/")
    assert store.uri == "s3://bucket/prefix" and not store.is_local
    assert store.child("shards", "k-w2").uri == "s3://bucket/prefix/shards/k-w2"
    assert pickle.loads(pickle.dumps(store)) == store


def test_local_writes_are_whole_and_leave_no_partial_files(tmp_path):
    store = Store(tmp_path / "s")
    store.write_json({"epoch": 1}, "run", "state.json")
    store.write_bytes(b"abc", "run", "blob.bin")
    store.write_bytes(b"abcd", "run", "blob.bin")
    assert store.read_json("run", "state.json") == {"epoch": 1}
    assert store.read_bytes("run", "blob.bin") == b"abcd"
    assert store.list("run") == ["blob.bin", "state.json"]
    with store.local_copy("run", "blob.bin") as path:
        assert path == tmp_path / "s" / "run" / "blob.bin"
    store.delete("run")
    assert not store.exists("run") and store.list("run") == []


def test_a_store_that_cannot_be_written_is_one_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(UserInputError, match=r"store is not writable.*Received: store="):
        Store(blocker / "store").check_writable()


def test_checkpoints_default_to_the_store(tmp_path, monkeypatch):
    monkeypatch.delenv("DEEPSPARK_CHECKPOINT_DIR", raising=False)
    assert checkpoint_root(None, str(tmp_path)).uri == str(tmp_path / "checkpoints")
    assert checkpoint_root(str(tmp_path / "c"), "s3://b/x").uri == str(tmp_path / "c")
    monkeypatch.setenv("DEEPSPARK_CHECKPOINT_DIR", str(tmp_path / "env"))
    assert checkpoint_root(None, "s3://b/x").uri == str(tmp_path / "env")


@pytest.mark.slow
def test_shards_and_checkpoints_on_s3(s3_bucket, tmp_path):  # noqa: F811
    import keras

    store = Store(f"{s3_bucket.uri}/deepspark")
    store.check_writable()
    rows = 9
    inputs = {"numeric": np.arange(rows * 2, dtype=np.float32).reshape(rows, 2)}
    target = np.arange(rows, dtype=np.float32)
    shards = write_shards(
        {"train": (inputs, target), "val": (inputs, target)},
        world_size=2,
        key="k",
        root=store.child("shards"),
    )
    assert store.child("shards", "k-w2").exists("manifest.json")
    numeric, labels = read_shard(shards, "train", 1)
    np.testing.assert_array_equal(labels, target[1:8:2])
    np.testing.assert_array_equal(numeric["numeric"], inputs["numeric"][1:8:2])

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    model.fit(inputs["numeric"], target, epochs=1, verbose=0)
    checkpoints = CheckpointStore(store.child("checkpoints", "run"))
    checkpoints.write_run_info({"config": {}})
    checkpoints.save_epoch(model, 0, {"history": []}, best_weights=model.get_weights())
    checkpoints.save_epoch(model, 1, {"history": []})
    assert sorted(checkpoints.store.list()) == [
        "best.weights.npz", "epoch-0001.npz", "model.keras", "run.json", "state.json",
    ]  # fmt: skip
    restored = checkpoints.load_model(checkpoints.read_state())
    for saved, loaded in zip(model.get_weights(), restored.get_weights(), strict=True):
        np.testing.assert_allclose(loaded, saved)
    checkpoints.remove()
    assert checkpoints.store.list() == []
    assert not any(Path(tmp_path).iterdir())  # nothing was staged on the local disk
