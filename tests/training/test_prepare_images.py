"""Preparing image data for training: splits, one decoding pass, bad files, memory or stream."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from deepspark.config import make_config
from deepspark.data.image_inputs import ImageFiles
from deepspark.errors import DataError, UserInputError
from deepspark.training.prepare import prepare_data
from tests.image_data import pattern_folder


def prepare(data, **settings):
    return prepare_data(make_config({"data": str(data), **settings}))


def test_folder_is_split_stratified_and_bad_files_are_listed(tmp_path):
    folder = pattern_folder(tmp_path / "images")
    prepared = prepare(folder)
    assert prepared.schema.kind == "image" and prepared.schema.target == "label"
    assert prepared.schema.class_labels == ("horizontal", "vertical")
    assert prepared.schema.image.size == (16, 16)  # the images' own size (below 128)
    sizes = prepared.split.sizes()
    assert sum(sizes.values()) == 61  # 30 + 31 good files; the text file left out
    assert min(sizes["val"], sizes["test"]) >= 9  # 15% of each class (one bad file dropped)
    ((source, reason),) = prepared.bad_images
    assert source.endswith("notes.jpg") and "not an image" in reason
    pixels = prepared.inputs["train"]
    assert pixels.dtype == np.uint8 and pixels.shape == (sizes["train"], 16, 16, 3)
    assert set(prepared.targets["val"].reshape(-1)) == {0.0, 1.0}
    assert any(
        path.endswith("with space.png")
        for split in ("train", "val", "test")
        for path in getattr(prepared.split, split)["path"]
    )


def test_the_folders_own_split_is_used(tmp_path):
    pattern_folder(tmp_path / "data" / "train", per_class=20, mess=False)
    pattern_folder(tmp_path / "data" / "val", per_class=4, mess=False, seed=1)
    prepared = prepare(tmp_path / "data", image_size="8")
    # No test/ folder: half of val is held out as the test split (per class, seeded).
    assert prepared.split.sizes() == {"train": 40, "val": 4, "test": 4}
    assert prepared.inputs["val"].shape == (4, 8, 8, 3)


def test_large_data_streams_from_files(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPSPARK_IMAGE_MEMORY_MB", "0.01")
    prepared = prepare(pattern_folder(tmp_path / "images"))
    files = prepared.inputs["train"]
    assert isinstance(files, ImageFiles) and len(files) == prepared.split.sizes()["train"]
    assert files.pixels(slice(0, 3)).shape == (3, 16, 16, 3)


def test_on_bad_image_fail_names_the_file(tmp_path):
    with pytest.raises(DataError, match=r"Bad image '.*notes\.jpg': not an image.*--on-bad-image"):
        prepare(pattern_folder(tmp_path / "images"), on_bad_image="fail")


def test_a_table_of_image_bytes_and_labels_trains_like_a_folder(tmp_path):
    folder = pattern_folder(tmp_path / "images", mess=False)
    rows = [
        {"picture": path.read_bytes(), "kind": path.parent.name}
        for path in sorted(folder.rglob("*.*"))
    ]
    pd.DataFrame(rows).to_parquet(tmp_path / "images.parquet")
    prepared = prepare(tmp_path / "images.parquet", target="kind")
    assert prepared.schema.feature_names == ["picture"] and prepared.schema.image is not None
    assert sum(prepared.split.sizes().values()) == 60


@pytest.mark.parametrize(
    ("layout", "settings", "message"),
    [
        ("one_class", {}, r"single class"),
        ("good", {"target": "kind"}, r"Label column not found.*Received: target='kind'"),
        ("good", {"task": "regression"}, r"Image models classify"),
        ("good", {"image_size": "0"}, r"Invalid --image-size"),
    ],
)
def test_bad_image_training_input_is_one_clear_error(tmp_path, layout, settings, message):
    classes = ("horizontal",) if layout == "one_class" else ("horizontal", "vertical")
    folder = pattern_folder(tmp_path / "images", classes=classes, mess=False)
    with pytest.raises((DataError, UserInputError), match=message):
        prepare(folder, **settings)


def test_a_folder_without_images_is_not_an_image_source(tmp_path):
    (tmp_path / "empty" / "cats").mkdir(parents=True)
    (tmp_path / "empty" / "cats" / "readme.txt").write_text("no images")
    with pytest.raises(DataError, match=r"(?i)parquet|no rows|not"):
        prepare(tmp_path / "empty", target="label")


def test_a_glob_of_files_takes_labels_from_their_folders(tmp_path):
    folder = pattern_folder(tmp_path / "images", per_class=15, mess=False)
    prepared = prepare(f"{folder}/*/*.png", val_fraction=0.2, test_fraction=0.2)
    assert prepared.schema.class_labels == ("horizontal", "vertical")
    assert sum(prepared.split.sizes().values()) == 24  # the PNGs (every fifth image is a JPEG)
    with pytest.raises(DataError, match=r"No image files match the pattern"):
        prepare(f"{folder}/*/*.gif")


def test_patience_defaults_to_the_kind_of_data_unless_given(tmp_path, regression_csv):
    folder = pattern_folder(tmp_path / "images", per_class=10, mess=False)
    assert prepare(folder).config.patience == 10  # image epochs cost more
    assert prepare(regression_csv, target="y").config.patience == 30
    assert prepare(folder, patience=4).config.patience == 4
    assert prepare(regression_csv, target="y", patience=4).config.patience == 4
