"""Per-rank Parquet shards: round-robin rows, equal training rows per rank, written once."""

from pathlib import Path

import numpy as np
import pytest

from deepspark.distributed.shards import data_key, read_shard, write_shards
from deepspark.errors import UserInputError


def arrays(rows: int):
    numeric = np.arange(rows * 3, dtype=np.float32).reshape(rows, 3)
    categorical = np.arange(rows, dtype=np.int32).reshape(rows, 1)
    target = np.arange(rows, dtype=np.float32)
    return {"numeric": numeric, "categorical": categorical}, target


def test_round_robin_equal_training_rows_and_cache(tmp_path):
    splits = {"train": arrays(11), "val": arrays(5)}
    shards = write_shards(splits, world_size=2, key=data_key("fingerprint"), root=tmp_path)
    manifest = shards.manifest()
    assert manifest["splits"]["train"] == {"rows": [5, 5], "dropped": 1}
    assert manifest["splits"]["val"] == {"rows": [3, 2], "dropped": 0}
    assert shards.train_rows() == 5
    for rank in (0, 1):
        inputs, target = read_shard(shards, "train", rank)
        np.testing.assert_array_equal(inputs["numeric"], splits["train"][0]["numeric"][rank:10:2])
        np.testing.assert_array_equal(target, splits["train"][1][rank:10:2])
        assert inputs["categorical"].dtype == np.int32 and inputs["categorical"].shape == (5, 1)
    written = Path(shards.path("train", 0)).stat().st_mtime_ns
    again = write_shards(splits, world_size=2, key=data_key("fingerprint"), root=tmp_path)
    assert again == shards and Path(shards.path("train", 0)).stat().st_mtime_ns == written


def test_a_set_without_its_manifest_is_written_again(tmp_path):
    """The manifest is written last: files left by a crash before it are not taken as a set."""
    splits = {"train": arrays(8), "val": arrays(4)}
    shards = write_shards(splits, world_size=2, key="k", root=tmp_path)
    Path(shards.store.path("manifest.json")).unlink()
    Path(shards.path("train", 1)).write_bytes(b"torn")
    again = write_shards(splits, world_size=2, key="k", root=tmp_path)
    assert again.is_complete()
    inputs, target = read_shard(again, "train", 1)
    np.testing.assert_array_equal(target, splits["train"][1][1:8:2])


def test_fewer_rows_than_workers_is_a_user_error(tmp_path):
    with pytest.raises(UserInputError, match="fewer than one per worker.*Received: workers=4"):
        write_shards({"train": arrays(10), "val": arrays(3)}, world_size=4, key="k", root=tmp_path)
