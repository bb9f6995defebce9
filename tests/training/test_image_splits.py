"""Image folders with ``train/`` and ``val/`` but no ``test/`` get a test split carved from
``val/`` (stated in the log); ``test/`` present is used as is. A transfer run logs how many
base layers it unfroze and why fewer than asked (BatchNorm stays frozen), and a fresh two-phase
run is no resume (``resumed_from_epoch`` is ``None``)."""

from __future__ import annotations

import logging

import pytest

import deepspark
from deepspark.config import make_config
from deepspark.training.prepare import prepare_data
from tests.image_data import pattern_folder

BASE = {"base": "mobilenet_v2", "weights": "none", "base_options": {"alpha": 0.35}}


def split_folder(root, *, test: bool):
    pattern_folder(root / "train", per_class=12, size=16, mess=False)
    pattern_folder(root / "val", per_class=8, size=16, mess=False, seed=1)
    if test:
        pattern_folder(root / "test", per_class=3, size=16, mess=False, seed=2)
    return root


def prepare(folder, **settings):
    return prepare_data(make_config({"data": str(folder), "image_size": "16", **settings}))


def test_without_a_test_folder_half_of_val_is_held_out_as_test(tmp_path, caplog):
    folder = split_folder(tmp_path / "data", test=False)
    with caplog.at_level(logging.INFO, logger="deepspark"):
        prepared = prepare(folder)
    assert prepared.split.sizes() == {"train": 24, "val": 8, "test": 8}
    assert "no test/ folder: 8 of the 16 val images held out as test" in caplog.text
    for name in ("val", "test"):  # stratified: both classes in both parts
        assert sorted(prepared.split.__getattribute__(name)["label"].value_counts()) == [4, 4]
    val_paths = set(prepared.split.val["path"])
    assert not val_paths & set(prepared.split.test["path"])
    assert all("/val/" in path for path in prepared.split.test["path"])
    again = prepare(folder)  # deterministic for a seed
    assert list(again.split.test["path"]) == list(prepared.split.test["path"])


def test_a_test_folder_is_used_as_is_and_test_fraction_zero_holds_nothing_out(tmp_path):
    with_test = prepare(split_folder(tmp_path / "with", test=True))
    assert with_test.split.sizes() == {"train": 24, "val": 16, "test": 6}
    no_test = prepare(split_folder(tmp_path / "without", test=False), test_fraction=0.0)
    assert no_test.split.sizes() == {"train": 24, "val": 16, "test": 0}


def test_a_fresh_two_phase_run_reports_its_unfrozen_layers_and_no_resume(workdir, caplog):
    folder = split_folder(workdir / "photos", test=False)
    with caplog.at_level(logging.INFO, logger="deepspark"):
        result = deepspark.train(
            str(folder), epochs=1, fine_tune_layers=10, fine_tune_epochs=1, image_size=32,
            batch_size=8, patience=5, **BASE,
        )  # fmt: skip
    assert result.epochs_completed == 2
    assert result.resumed_from_epoch is None  # was 1: the fine-tuning phase looked resumed
    assert result.rows["test"] == 8 and "test_accuracy" in result.metrics
    # MobileNetV2's top 10 layers with weights alternate convolutions and BatchNorms.
    assert (
        "10 layers requested: 5 unfrozen, 5 BatchNormalization layers kept frozen "
        "(their statistics stay ImageNet's)" in caplog.text
    )


@pytest.mark.parametrize(("count", "expected"), [(10, (10, 5, 5)), (1, (1, 0, 1))])
def test_unfreezing_counts_requested_unfrozen_and_batch_norm_layers(count, expected):
    from deepspark.data.image_inputs import image_schema
    from deepspark.data.schema import ImageSpec
    from deepspark.models.transfer import build_transfer, unfreeze_top_layers

    config = make_config({"data": "x", **BASE})
    schema = image_schema(ImageSpec(32, 32, 3), target="y", task="binary", class_labels=("a", "b"))
    unfrozen = unfreeze_top_layers(build_transfer(schema, config), count)
    assert (unfrozen.requested, unfrozen.unfrozen, unfrozen.batch_norm_frozen) == expected
