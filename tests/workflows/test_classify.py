"""classify and log-pretrained: real top-5 labels, every kind of image input, bad files as rows,
bad input as one UserInputError with nothing written, the CLI, and a logged pretrained model
scoring through deepspark and MLflow pyfunc."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import deepspark
from deepspark.cli.pretrained import classify as classify_command
from deepspark.cli.pretrained import log_pretrained as log_pretrained_command
from deepspark.config import parse_options as parse_base_options
from deepspark.errors import DataError, UserInputError
from deepspark.models.applications import imagenet_class_names as model_labels
from deepspark.workflows.classify import classify, result_columns
from deepspark.workflows.pretrained import log_pretrained
from tests.conftest import SHARED_DATA
from tests.image_data import pattern_folder

WEIGHTS = SHARED_DATA / "images" / "weights"
TOP_1_0 = WEIGHTS / "mobilenet_v2_1.0_224_imagenet_top_dequant.weights.h5"
PHOTOS = SHARED_DATA / "images" / "photos"
# A random MobileNetV2 (alpha 0.35, 96 px) with the 1000-class top: fast, for the plumbing.
RANDOM_SMALL = {"weights": None, "base_options": {"alpha": 0.35}, "image_size": 96}
CATS = {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat"}


@pytest.fixture(scope="module")
def patterns(tmp_path_factory):
    """20 generated images in two class folders, plus a text file named .jpg."""
    return pattern_folder(tmp_path_factory.mktemp("classify") / "p", per_class=10, size=24)


@pytest.mark.slow
def test_top_5_of_the_photos_folder_and_csv_output(tmp_path):
    output = tmp_path / "top.csv"
    classified = classify(PHOTOS, weights=TOP_1_0, output=output)
    assert list(classified.columns) == ["path", *result_columns(5)]
    by_name = classified.set_index(classified["path"].str.rsplit("/", n=1).str[-1])
    top5 = by_name[[f"label_{rank}" for rank in range(1, 6)]]
    assert CATS & set(top5.loc["cat.bmp"]) and top5.loc["parrot.jpg", "label_1"] == "macaw"
    assert "hotdog" in set(top5.loc["hot_dog.jpg"])
    assert top5.loc["dragonfly.bmp", "label_1"] == "dragonfly"
    probabilities = classified.filter(like="probability_").to_numpy()
    assert (np.diff(probabilities, axis=1) <= 0).all() and (probabilities.sum(axis=1) <= 1).all()
    written = pd.read_csv(output)
    assert list(written.columns) == list(classified.columns) and len(written) == 10


def test_a_bad_file_is_a_row_with_its_reason_and_parquet_keeps_the_folder_labels(
    patterns, tmp_path
):
    output = tmp_path / "classes.parquet"
    classified = classify(patterns, top=2, output=output, **RANDOM_SMALL)
    assert list(classified.columns) == ["path", "label", *result_columns(2)]
    assert len(classified) == 22  # 20 images, one name with a space, one text file
    bad = classified[classified["error"].notna()]
    assert len(bad) == 1 and bad["path"].iloc[0].endswith("notes.jpg")
    assert "not an image" in bad["error"].iloc[0]
    assert bad["label_1"].isna().all() and bad["probability_1"].isna().all()
    good = classified[classified["error"].isna()]
    assert good["label_1"].notna().all() and (good["probability_1"] > 0).all()
    written = pd.read_parquet(output)
    assert written["error"].notna().sum() == 1 and len(written) == 22


def test_one_file_a_glob_a_flat_folder_and_a_table_of_bytes(patterns, tmp_path):
    one = sorted((patterns / "vertical").glob("*.png"))[0]
    assert len(classify(one, top=1, **RANDOM_SMALL)) == 1
    assert len(classify(f"{patterns}/vertical/*.jpg", top=1, **RANDOM_SMALL)) == 2
    flat = tmp_path / "flat"
    flat.mkdir()
    for image in sorted((patterns / "horizontal").glob("*.png"))[:3]:
        (flat / image.name).write_bytes(image.read_bytes())
    assert list(classify(flat, top=1, **RANDOM_SMALL).columns) == ["path", *result_columns(1)]
    pd.DataFrame({"id": [1], "path": [str(one)]}).to_csv(tmp_path / "table.csv", index=False)
    from_csv = classify(tmp_path / "table.csv", top=1, **RANDOM_SMALL)
    assert list(from_csv.columns) == ["id", "path", *result_columns(1)]
    table = pd.DataFrame({"id": [7, 8], "image": [one.read_bytes(), None]})
    classified = classify(table, top=1, **RANDOM_SMALL)
    assert list(classified.columns) == ["id", *result_columns(1)]  # the bytes are left out
    assert classified["error"].tolist()[0] is None and "empty" in classified["error"].iloc[1]


def test_bad_input_is_one_user_input_error_and_nothing_is_written(patterns, tmp_path):
    output = tmp_path / "out.csv"
    for top in (0, 1001, 2.5):
        with pytest.raises(UserInputError, match=r"Invalid --top"):
            classify(patterns, top=top, output=output, **RANDOM_SMALL)
    with pytest.raises(UserInputError, match=r"Cannot write this output type"):
        classify(patterns, output=tmp_path / "out.txt", **RANDOM_SMALL)
    with pytest.raises(UserInputError, match=r"Unknown pretrained network"):
        classify(patterns, model="alexnet", output=output)
    with pytest.raises(UserInputError, match=r"Weights file not found"):
        classify(patterns, weights=tmp_path / "missing.h5", output=output)
    with pytest.raises(DataError, match=r"No image files in this folder"):
        classify(tmp_path, output=output, **RANDOM_SMALL)
    with pytest.raises(DataError, match=r"Images not found: no such file or folder"):
        classify(tmp_path / "nothing", output=output, **RANDOM_SMALL)
    with pytest.raises(UserInputError, match=r"Invalid --image-size"):
        classify(patterns, weights=None, image_size="big", output=output)
    assert not output.exists() and list(tmp_path.iterdir()) == []
    output.write_text("kept")
    with pytest.raises(UserInputError, match=r"Output already exists"):
        classify(patterns, output=output, **RANDOM_SMALL)
    assert output.read_text() == "kept"


def test_base_options_parse_like_the_training_options():
    parsed = parse_base_options(("alpha=0.35", "minimalistic=true", "pooling=avg", "x=none"))
    assert parsed == {"alpha": 0.35, "minimalistic": True, "pooling": "avg", "x": None}
    assert parse_base_options(("depth=3",)) == {"depth": 3}


def test_the_cli_prints_one_json_object_and_refuses_bad_options(patterns, tmp_path):
    runner = CliRunner()
    small = ["--weights", "none", "--base-option", "alpha=0.35", "--image-size", "96"]
    output = tmp_path / "out.jsonl"
    args = ["--data", str(patterns), *small, "--top", "3", "--output", str(output), "--json"]
    done = runner.invoke(classify_command, args)
    assert done.exit_code == 0, done.output
    document = json.loads(done.stdout)
    assert document["rows"] == 22 and document["bad_images"] == 1
    assert document["columns"] == ["path", "label", *result_columns(3)]
    assert len(output.read_text().splitlines()) == 22
    one = str(sorted((patterns / "vertical").glob("*.png"))[0])
    done = runner.invoke(classify_command, ["--data", one, *small, "--top", "2"])
    assert done.exit_code == 0 and "classified 1 images (0 unreadable)" in done.stdout
    done = runner.invoke(classify_command, ["--data", one, "--base-option", "alpha"])
    assert isinstance(done.exception, UserInputError) and "KEY=VALUE" in str(done.exception)
    done = runner.invoke(classify_command, ["--data", one, "--master", "local[1]"])
    assert done.exit_code == 2 and "--master needs --spark" in done.output
    done = runner.invoke(classify_command, ["--data", one, "--model", "alexnet"])
    assert isinstance(done.exception, UserInputError)  # main() maps it to exit code 2


def test_a_logged_random_model_predicts_like_classify(workdir, patterns):
    import keras

    keras.utils.set_random_seed(3)  # the same random network twice
    model_uri = log_pretrained("MobileNetV2", experiment="pretrained", **RANDOM_SMALL)
    paths = sorted(str(path) for path in (patterns / "vertical").glob("*.png"))[:3]
    predicted = deepspark.load_model(model_uri).predict(pd.DataFrame({"path": paths}))
    keras.utils.set_random_seed(3)
    classified = classify(pd.DataFrame({"path": paths}), top=1, **RANDOM_SMALL)
    # A random network's probabilities are all about 0.001: compare them, not the labels.
    probabilities = predicted.filter(like="probability_").to_numpy()
    assert probabilities.shape == (3, 1000)
    np.testing.assert_allclose(probabilities.max(axis=1), classified["probability_1"], rtol=1e-5)
    top = np.asarray(model_labels(), dtype=object)[probabilities.argmax(axis=1)]
    assert predicted["prediction"].tolist() == top.tolist()
    run = mlflow.search_runs(experiment_names=["pretrained"], output_format="list")[0]
    assert run.data.tags["deepspark.kind"] == "image"
    assert run.data.tags["deepspark.model_uri"] == model_uri
    assert run.data.params["base_option.alpha"] == "0.35" and run.info.status == "FINISHED"


@pytest.mark.slow
def test_log_pretrained_cli_gives_a_model_that_scores_through_pyfunc(workdir):
    done = CliRunner().invoke(
        log_pretrained_command, ["--weights", str(TOP_1_0), "--run-name", "zoo", "--json"]
    )
    assert done.exit_code == 0, done.output
    model_uri = json.loads(done.stdout)["model_uri"]
    model = deepspark.load_model(model_uri)
    assert model.metadata["pretrained"] == "mobilenet_v2" and len(model.schema.class_labels) == 1000
    assert model.metadata["weights"] == TOP_1_0.name and len(model.metadata["weights_sha256"]) == 64
    photos = pd.DataFrame({"path": [str(PHOTOS / "parrot.jpg"), str(PHOTOS / "missing.jpg")]})
    scored = mlflow.pyfunc.load_model(model_uri).predict(photos)
    assert scored["prediction"].iloc[0] == "macaw" and scored["probability_macaw"].iloc[0] > 0.5
    assert scored["prediction"].iloc[1] is None and "not found" in scored["error"].iloc[1]
