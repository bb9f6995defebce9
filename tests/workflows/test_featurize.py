"""featurize: one vector per image (the pooled last block, or a layer by name), the same as the
network computes directly, Parquet as a fixed-size list, bad files as rows, bad input refused
before any work, and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from deepspark.cli.pretrained import featurize as featurize_command
from deepspark.data.image_decode import decode_images
from deepspark.errors import UserInputError
from deepspark.models.image_features import feature_extractor
from deepspark.runtime import forward
from deepspark.workflows.featurize import featurize
from tests.conftest import SHARED_DATA
from tests.image_data import pattern_folder

BASE_0_35 = SHARED_DATA / "images" / "weights" / "mobilenet_v2_0.35_224_imagenet_no_top.weights.h5"
PHOTOS = SHARED_DATA / "images" / "photos"
SMALL = {"weights": BASE_0_35, "base_options": {"alpha": 0.35}, "image_size": 96}


@pytest.fixture(scope="module")
def patterns(tmp_path_factory):
    """20 generated images in two class folders, plus a text file named .jpg."""
    return pattern_folder(tmp_path_factory.mktemp("featurize") / "p", per_class=10, size=24)


def test_photos_become_pooled_last_block_vectors_written_as_float_lists(tmp_path):
    output = tmp_path / "features.parquet"
    featurized = featurize(PHOTOS, output=output, **SMALL)
    assert list(featurized.columns) == ["path", "features", "error"] and len(featurized) == 10
    assert featurized["error"].isna().all()
    vectors = np.stack(featurized["features"])
    assert vectors.shape == (10, 1280) and vectors.dtype == np.float32
    network = feature_extractor("mobilenet_v2", **SMALL)
    pixels = decode_images(featurized["path"].tolist(), size=(96, 96)).images
    np.testing.assert_allclose(vectors, forward(network, pixels), rtol=1e-5, atol=1e-6)
    schema = pq.read_schema(output)
    assert schema.field("features").type == pa.list_(pa.float32())
    assert schema.metadata[b"deepspark.feature_size"] == b"1280"
    assert schema.field("error").type in (pa.string(), pa.large_string())
    written = pd.read_parquet(output)
    np.testing.assert_array_equal(np.stack(written["features"]), vectors)


def test_a_layer_by_name_is_pooled_and_an_unknown_one_lists_valid_names(patterns, tmp_path):
    featurized = featurize(patterns, layer="block_13_expand_relu", **SMALL)
    assert list(featurized.columns) == ["path", "label", "features", "error"]
    assert featurized["features"].dropna().map(len).eq(192).all()
    with pytest.raises(UserInputError, match=r"did you mean block_13_expand_relu.*out_relu"):
        featurize(patterns, layer="block_13_expand_rel", **SMALL)
    with pytest.raises(UserInputError, match=r"Layer not found.*end with .*Conv_1_bn, out_relu"):
        featurize(patterns, layer="nothing", **SMALL)


def test_a_bad_file_is_a_null_vector_with_its_reason_in_parquet_and_json_lines(patterns, tmp_path):
    featurized = featurize(patterns, output=tmp_path / "f.jsonl", **SMALL)
    bad = featurized[featurized["error"].notna()]
    assert len(featurized) == 22 and len(bad) == 1 and bad["features"].iloc[0] is None
    assert "not an image" in bad["error"].iloc[0]
    lines = [json.loads(line) for line in (tmp_path / "f.jsonl").read_text().splitlines()]
    assert sum(line["features"] is None for line in lines) == 1
    assert {len(line["features"]) for line in lines if line["features"]} == {1280}
    featurize(patterns, output=tmp_path / "f.parquet", **SMALL)
    written = pq.read_table(tmp_path / "f.parquet")
    assert written.column("features").null_count == 1 and written.num_rows == 22


def test_bad_input_is_refused_before_any_work(patterns, tmp_path):
    with pytest.raises(UserInputError, match=r"Cannot write this output type; use one of"):
        featurize(patterns, output=tmp_path / "f.csv", **SMALL)
    with pytest.raises(UserInputError, match=r"cannot be built.*--base-option"):
        featurize(patterns, weights=None, base_options={"width": 2})
    with pytest.raises(UserInputError, match=r"Images not found: no such file or folder"):
        featurize(tmp_path / "missing.csv", **SMALL)
    existing = tmp_path / "f.parquet"
    existing.write_text("kept")
    with pytest.raises(UserInputError, match=r"Output already exists"):
        featurize(patterns, output=existing, **SMALL)
    assert existing.read_text() == "kept" and sorted(tmp_path.iterdir()) == [existing]


def test_the_cli_prints_one_json_object(patterns, tmp_path):
    output = tmp_path / "f.parquet"
    args = [
        "--data",
        f"{patterns}/vertical/*.png",
        "--weights",
        str(BASE_0_35),
        "--base-option",
        "alpha=0.35",
        "--image-size",
        "96,128",
        "--output",
        str(output),
        "--json",
    ]
    done = CliRunner().invoke(featurize_command, args)
    assert done.exit_code == 0, done.output
    document = json.loads(done.stdout)
    assert document["rows"] == 9 and document["bad_images"] == 0  # 10 images, 2 JPEG, 1 space
    assert pq.read_schema(output).metadata[b"deepspark.feature_size"] == b"1280"
    done = CliRunner().invoke(featurize_command, ["--data", str(patterns)])
    assert done.exit_code == 2 and "Missing option '--output'" in done.output
