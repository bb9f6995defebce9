"""Image models end to end: train on a folder, the logged artifact (deepspark, MLflow pyfunc),
predict on folders, paths and bytes with bad images reported per row, the CLI and its errors."""

from __future__ import annotations

import json
import os

import mlflow
import numpy as np
import pandas as pd
import pytest

import deepspark
from deepspark.errors import UserInputError
from tests.conftest import run_cli
from tests.image_data import pattern_folder

CLASSES = ("centre", "horizontal", "vertical")
SMALL_CNN = {"filters": (8, 16), "epochs": 10, "batch_size": 16, "patience": 5, "lr": 0.003}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    folder = pattern_folder(root / "patterns", classes=CLASSES, per_class=40)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    result = deepspark.train(str(folder), tracking_uri=uri, seed=3, **SMALL_CNN)
    mlflow.set_tracking_uri(uri)
    return folder, result, uri


def test_a_cnn_learns_the_patterns_and_the_run_lists_bad_images(trained):
    folder, result, uri = trained
    assert result.task == "multiclass" and result.bad_images == 1
    assert result.metrics["test_accuracy"] >= 0.9, result.metrics
    run = mlflow.MlflowClient(uri).get_run(result.run_id)
    assert run.data.params["model"] == "cnn" and run.data.tags["deepspark.kind"] == "image"
    assert run.data.metrics["bad_images"] == 1
    listing = mlflow.artifacts.download_artifacts(
        run_id=result.run_id, artifact_path="bad_images.csv"
    )
    bad = pd.read_csv(listing)
    assert list(bad.columns) == ["source", "reason"] and bad["source"][0].endswith("notes.jpg")


def test_the_model_scores_paths_and_bytes_and_reports_bad_rows(trained):
    folder, result, _ = trained
    model = deepspark.load_model(result.model_uri)
    assert model.kind == "image" and model.schema.image.size == (16, 16)
    good = sorted((folder / "vertical").glob("*.png"))[:3]
    frame = pd.DataFrame(
        {
            "path": [
                str(good[0]),
                str(folder / "centre" / "notes.jpg"),
                None,
                str(good[1]),
                str(folder / "missing.png"),
            ]
        }
    )
    scored = model.predict(frame)
    assert list(scored.columns) == [
        "prediction",
        *(f"probability_{label}" for label in CLASSES),
        "error",
    ]
    assert scored["prediction"].tolist()[0] == "vertical" and scored["error"][0] is None
    assert scored["prediction"][[1, 2, 4]].isna().all()
    assert "not an image" in scored["error"][1] and "empty" in scored["error"][2]
    assert "not found" in scored["error"][4]
    probabilities = scored.filter(like="probability_").to_numpy()
    np.testing.assert_allclose(probabilities[[0, 3]].sum(axis=1), 1.0, rtol=1e-5)
    from_bytes = model.predict(pd.DataFrame({"image": [path.read_bytes() for path in good]}))
    from_paths = model.predict(pd.DataFrame({"path": [str(path) for path in good]}))
    np.testing.assert_allclose(
        from_bytes.filter(like="probability_"), from_paths.filter(like="probability_"), rtol=1e-6
    )


def test_mlflow_pyfunc_takes_images_with_the_same_answers(trained):
    folder, result, _ = trained
    pyfunc = mlflow.pyfunc.load_model(result.model_uri)
    inputs = pyfunc.metadata.get_input_schema().input_names()
    assert inputs == ["image", "path"]
    paths = sorted((folder / "horizontal").glob("*.png"))[:4]
    frame = pd.DataFrame({"image": [path.read_bytes() for path in paths]})
    expected = deepspark.load_model(result.model_uri).predict(frame)
    got = pyfunc.predict(frame)
    assert got["prediction"].tolist() == expected["prediction"].tolist()
    np.testing.assert_allclose(
        got.filter(like="probability_"), expected.filter(like="probability_")
    )


def test_the_image_kinds_example_scores_with_the_kinds_output_columns(trained):
    _, result, _ = trained
    model = deepspark.load_model(result.model_uri)
    kind = model.model_kind
    scored = model.predict(kind.example_input(model.schema))
    assert list(scored.columns) == [column.name for column in kind.output_columns(model.schema)]
    assert scored["error"].tolist() == [None]
    assert scored.filter(like="probability_").sum(axis=1).round(5).tolist() == [1.0]


def test_predict_on_an_image_folder_writes_path_prediction_probabilities(trained, tmp_path):
    folder, result, uri = trained
    output = tmp_path / "scored.csv"
    scored = deepspark.predict(result.model_uri, str(folder), output=str(output))
    written = pd.read_csv(output)
    assert len(written) == len(scored) == 122  # every listed file, the bad one included
    assert {"path", "label", "prediction", "probability_centre", "error"} <= set(written.columns)
    good = written[written["error"].isna()]
    assert (good["prediction"] == good["label"]).mean() >= 0.9
    assert written.loc[written["error"].notna(), "path"].str.endswith("notes.jpg").all()


def test_table_models_and_image_models_refuse_each_others_data(trained, tmp_path):
    folder, result, _ = trained
    table = tmp_path / "table.csv"
    pd.DataFrame({"x": [1.0, 2.0], "image": [3, 4]}).to_csv(table, index=False)
    with pytest.raises(UserInputError, match=r"Column 'image' must hold encoded image bytes"):
        deepspark.predict(result.model_uri, str(table))
    pd.DataFrame({"x": [1.0, 2.0]}).to_csv(table, index=False)
    with pytest.raises(UserInputError, match=r"This model takes images"):
        deepspark.predict(result.model_uri, str(table))


def test_cli_trains_and_predicts_images_and_rejects_bad_input(tmp_path, capsys, monkeypatch):
    from tests.cli.test_cli import invoke

    monkeypatch.chdir(tmp_path)  # the in-process commands below run where the real ones do

    folder = pattern_folder(tmp_path / "photos", per_class=12, size=12)
    env_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = env_uri
    try:
        done = run_cli(
            "train",
            "--data",
            str(folder),
            "--model",
            "cnn",
            "--filters",
            "4",
            "--epochs",
            "1",
            "--augment",
            "--json",
            cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        assert result["bad_images"] == 1 and result["task"] == "binary"
        table = tmp_path / "table.csv"
        pd.DataFrame({"x": np.arange(30.0), "y": np.arange(30.0)}).to_csv(table, index=False)
        # One bad input through the real command (a separate process: nothing else reaches its
        # stderr); the others through the same main() in this process, sparing a start-up each.
        model_uri = _table_model(table, tmp_path)
        args = ("predict", "--model", model_uri, "--data", str(folder), "--output", "x.csv")
        failed = run_cli(*args, cwd=tmp_path)
        assert failed.returncode == 2, failed.stderr
        lines = failed.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("deepspark: error:"), lines
        assert not (tmp_path / "x.csv").exists()
        failures = {
            "size": ("train", "--data", str(folder), "--image-size", "0"),
            "cnn on a table": ("train", "--data", str(table), "--target", "y", "--model", "cnn"),
            "no images": ("train", "--data", str(tmp_path / "nothing")),
        }
        (tmp_path / "nothing" / "a").mkdir(parents=True)
        capsys.readouterr()  # what the in-process training above logged is not the error's
        for name, args in failures.items():
            code, _, err = invoke(capsys, *args)
            assert code == 2, (name, err)
            lines = err.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("deepspark: error:"), (name, lines)
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI")


def _table_model(table, tmp_path) -> str:
    result = deepspark.train(
        str(table), "y", hidden=(4,), epochs=1, tracking_uri=os.environ["MLFLOW_TRACKING_URI"]
    )
    return result.model_uri


# Trained on JAX, scored on torch; torch-trained artifacts load on JAX in
# test_backend_parity.py, and CNN training on torch runs in the parity set
# (tests/models/test_cnn.py).
def test_an_image_model_scores_the_same_on_the_other_backend(workdir):
    from tests.integration.test_backend_parity import on_the_other_backend

    folder = pattern_folder(workdir / "patterns", per_class=12, size=12)
    result = deepspark.train(str(folder), filters=(4, 8), epochs=2, augment=True, dropout=0.1)
    here = deepspark.predict(result.model_uri, str(folder))
    output = workdir / "there.parquet"
    job = {"data": str(folder), "model_uri": result.model_uri, "output": str(output)}
    on_the_other_backend({"images": job}, workdir)
    there = pd.read_parquet(output)
    assert there["prediction"].fillna("-").tolist() == here["prediction"].fillna("-").tolist()
    assert there["error"].notna().sum() == here["error"].notna().sum() == 1
    np.testing.assert_allclose(
        there.filter(like="probability_"), here.filter(like="probability_"), rtol=1e-5, atol=1e-6
    )
