"""Image shards for distributed training: what a rank on another host can read.

A local image path means nothing to a rank on another host, so when the shards go to a remote
store their local paths become the files' bytes; URIs (``s3://...``) stay references that every
host reads itself. Either way each rank decodes its own rows (never the driver)."""

from __future__ import annotations

import dataclasses

from deepspark.config import TrainConfig
from deepspark.distributed.shards import IMAGE_SOURCES, read_shard, write_shards
from deepspark.distributed.training import _shard_rows
from deepspark.store.store import Store
from deepspark.training.prepare import prepare_data
from tests.image_data import pattern_folder


def _prepared(tmp_path):
    folder = pattern_folder(tmp_path / "images", per_class=10, mess=False)
    config = TrainConfig(data=str(folder), image_size=(16, 16), epochs=1, seed=0)
    return prepare_data(config), folder


def test_remote_store_shards_carry_the_bytes_of_local_images(tmp_path):
    prepared, folder = _prepared(tmp_path)
    local = _shard_rows(prepared, "train")[0][IMAGE_SOURCES]
    rows = _shard_rows(prepared, "train", embed=True)
    embedded, targets = rows
    assert len(local) == len(embedded[IMAGE_SOURCES]) == len(targets) > 0
    for path, payload in zip(local, embedded[IMAGE_SOURCES], strict=True):
        assert str(path).startswith(str(folder))
        assert payload == open(path, "rb").read()  # noqa: SIM115

    shards = write_shards(
        {"train": rows},
        world_size=2,
        key="embedded-images",
        root=Store(tmp_path / "store"),
    )
    read_back = [read_shard(shards, "train", rank) for rank in range(2)]
    payloads = [value for inputs, _ in read_back for value in inputs[IMAGE_SOURCES]]
    # Equal steps: ranks keep the smaller shard's row count (at most one row dropped here).
    assert len(payloads) >= len(embedded[IMAGE_SOURCES]) - 1
    written = set(embedded[IMAGE_SOURCES].tolist())
    assert all(isinstance(payload, bytes) and payload in written for payload in payloads)


def test_uris_stay_references_and_an_unreadable_file_becomes_empty_bytes(tmp_path):
    prepared, _ = _prepared(tmp_path)
    frame = prepared.split.train
    column = prepared.schema.feature_names[0]
    uris = [f"s3://bucket/images/{index}.png" for index in range(len(frame))]
    uris[0] = str(tmp_path / "gone.png")  # a local path that no longer exists
    changed = dataclasses.replace(
        prepared, split=dataclasses.replace(prepared.split, train=frame.assign(**{column: uris}))
    )
    values = _shard_rows(changed, "train", embed=True)[0][IMAGE_SOURCES]
    assert values[0] == b""
    assert list(values[1:]) == uris[1:]
