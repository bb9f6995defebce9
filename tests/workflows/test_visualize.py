"""``visualize``: filters and feature maps of a saved image model for a real photo, the numbers
behind each picture, the fallback for other conv nets, and one-line errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from deepspark.cli.visualize import visualize as visualize_command
from deepspark.data.image_decode import decode_image
from deepspark.data.schema import FeatureSchema, FeatureSpec, ImageSpec
from deepspark.errors import UserInputError
from deepspark.models.cnn import build_cnn
from deepspark.tracking.model import DeepsparkModel, load_model
from deepspark.workflows.visualize import visualize
from tests.conftest import SHARED_DATA

PHOTO = SHARED_DATA / "images" / "photos" / "grace_hopper.bmp"
pytestmark = pytest.mark.skipif(not PHOTO.exists(), reason="../shared/data/images is not there")
EXPECTED_FILES = [
    "input.png", "filters.png", "block_1.png", "block_2.png", "block_1.npy", "block_2.npy",
    "index.html",
]  # fmt: skip


def image_schema(spec: ImageSpec) -> FeatureSchema:
    return FeatureSchema(
        features=(FeatureSpec("image", "image", "binary"),),
        target="label",
        task="binary",
        class_labels=("ants", "bees"),
        image=spec,
    )


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """A deepspark CNN, a plain conv net on grayscale (no pool blocks) and a tabular model."""
    folder = tmp_path_factory.mktemp("models")
    keras.utils.set_random_seed(0)
    # Augmentation and dropout are in the model: the maps must come from inference mode.
    cnn = build_cnn((32, 32), classes=2, filters=(4, 8), augment=True, dropout=0.1)
    DeepsparkModel(cnn, image_schema(ImageSpec(32, 32, 3)), {}).save(folder / "cnn")
    inputs = keras.Input((24, 20, 1), dtype="uint8", name="image")
    tensor = keras.layers.Rescaling(1 / 255)(inputs)
    tensor = keras.layers.Conv2D(3, 3, name="edges")(tensor)
    tensor = keras.layers.Conv2D(40, 3, strides=2, name="shapes")(tensor)
    outputs = keras.layers.Dense(1, activation="sigmoid")(
        keras.layers.GlobalAveragePooling2D()(tensor)
    )
    plain = keras.Model(inputs, outputs)
    DeepsparkModel(plain, image_schema(ImageSpec(24, 20, 1)), {}).save(folder / "plain")
    table_input = keras.Input((1,), name="x")
    tabular = keras.Model(table_input, keras.layers.Dense(1)(table_input))
    table_schema = FeatureSchema(
        features=(FeatureSpec("x", "numeric", "float64"),), target="y", task="regression"
    )
    DeepsparkModel(tabular, table_schema, {}).save(folder / "tabular")
    return {name: folder / name for name in ("cnn", "plain", "tabular")}


def test_filters_and_feature_maps_of_every_conv_block(models, tmp_path):
    output = tmp_path / "maps"
    result = visualize(str(models["cnn"]), PHOTO, output_dir=output)
    assert result["files"] == [str(output / name) for name in EXPECTED_FILES]
    assert sorted(path.name for path in output.iterdir()) == sorted(EXPECTED_FILES)
    assert result["layers"] == [
        {"name": "pool1", "shape": [16, 16, 4]},
        {"name": "pool2", "shape": [8, 8, 8]},
    ]
    page = (output / "index.html").read_text()
    for name in EXPECTED_FILES[:4]:
        assert (output / name).read_bytes().startswith(b"\x89PNG")
        assert f'src="{name}"' in page
    assert "block 1: pool1, 16x16x4" in page and 'href="block_2.npy"' in page
    with Image.open(output / "filters.png") as filters, Image.open(output / "input.png") as shown:
        # 4 filters of 3x3 RGB, each enlarged to 48 pixels on a grid with 2-pixel gaps.
        assert (filters.size, filters.mode) == ((4 * 50 + 2, 52), "RGB")
        assert shown.size == (128, 128)
    # The saved numbers are the network's own, in inference mode.
    network = load_model(str(models["cnn"])).keras_model
    pixels = decode_image(PHOTO, size=(32, 32), channels=3)[None]
    extractor = keras.Model(network.inputs, network.get_layer("pool2").output)
    expected = keras.ops.convert_to_numpy(extractor([pixels], training=False))[0]
    np.testing.assert_allclose(np.load(output / "block_2.npy"), expected, rtol=1e-5, atol=1e-6)
    assert np.abs(expected).max() > 0


def test_a_conv_net_without_pool_blocks_shows_every_conv_layer(models, tmp_path):
    result = visualize(str(models["plain"]), PHOTO, output_dir=tmp_path / "maps")
    assert result["layers"] == [
        {"name": "edges", "shape": [22, 18, 3]},
        {"name": "shapes", "shape": [10, 8, 40]},
    ]
    with Image.open(tmp_path / "maps" / "filters.png") as filters:
        assert filters.mode == "L"  # a grayscale model's filters are gray tiles
    with Image.open(tmp_path / "maps" / "block_2.png") as maps:
        # 32 of the 40 channels, 8 per row, each 10x8 map enlarged 5 times.
        assert maps.size == (8 * (40 + 2) + 2, 4 * (50 + 2) + 2)


def test_a_tabular_model_is_refused(models, tmp_path):
    with pytest.raises(UserInputError, match="This model takes tables, not images"):
        visualize(str(models["tabular"]), PHOTO, output_dir=tmp_path / "maps")
    assert not (tmp_path / "maps").exists()


def test_a_file_that_is_not_an_image_is_refused(models, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not pixels")
    with pytest.raises(UserInputError, match=r"Cannot use the image: not an image .*notes\.txt"):
        visualize(str(models["cnn"]), notes, output_dir=tmp_path / "maps")
    assert not (tmp_path / "maps").exists()


def test_an_existing_output_is_kept_unless_overwrite(models, tmp_path):
    output = tmp_path / "maps"
    output.mkdir()
    (output / "mine.txt").write_text("keep me")
    with pytest.raises(UserInputError, match="pass --overwrite"):
        visualize(str(models["cnn"]), PHOTO, output_dir=output)
    assert [path.name for path in output.iterdir()] == ["mine.txt"]
    visualize(str(models["cnn"]), PHOTO, output_dir=output, overwrite=True)
    assert sorted(path.name for path in output.iterdir()) == sorted(EXPECTED_FILES)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["maps"]  # no staging left


def test_cli_command_prints_json_and_text(models, tmp_path):
    runner = CliRunner()
    arguments = ["--model", str(models["cnn"]), "--image", str(PHOTO), "--output"]
    result = runner.invoke(visualize_command, [*arguments, str(tmp_path / "a"), "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert [layer["name"] for layer in document["layers"]] == ["pool1", "pool2"]
    assert document["output_dir"] == str(tmp_path / "a")
    result = runner.invoke(visualize_command, [*arguments, str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    assert "pool2" in result.stdout and "16x16x4" in result.stdout
    assert f"{tmp_path / 'b'}/index.html" in result.stdout
    missing = runner.invoke(visualize_command, ["--model", str(models["cnn"])])
    assert missing.exit_code == 2 and "Missing option '--image'" in missing.output
