"""``deepspark explain`` on image models: the folder it writes, the MLflow child run, and one-line
errors (exit 2) for images given to a table model, tables to an image model, and layers,
classes or methods the model does not have."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.cli.test_cli import assert_one_line_error, invoke


def image_args(trained, output, *extra):
    return [
        "explain", "--model", trained.model_uri, "--data", str(trained.data),
        "--output", str(output), "--tracking-uri", trained.tracking_uri, "--json", *extra,
    ]  # fmt: skip


def test_gradcam_writes_overlays_arrays_grid_and_a_child_run(image_run, tmp_path, capsys):
    output = tmp_path / "cams"
    args = image_args(image_run, output, "--method", "gradcam", "--rows", "5")
    args += ["--class", "vertical"]
    code, out, err = invoke(capsys, *args)
    assert code == 0, err
    document = json.loads(out)
    assert document["kind"] == "image" and document["rows"] == 5
    assert document["data_rows"] == 48 and document["background"] == 0
    assert document["explained_class"] == "vertical"
    assert document["details"]["layer"] == "conv2_2_relu"
    assert document["max_additivity_error"] is None
    table = pd.read_parquet(document["outputs"]["explanations_parquet"])
    assert table["row_id"].tolist() == list(range(5))
    assert (table["explained_class"] == "vertical").all()
    assert table["source"].iloc[0].endswith("horizontal/000.png")  # path order
    page = (output / "index.html").read_text()
    for row in table.itertuples():
        overlay = Image.open(output / row.overlay)
        assert overlay.size == (192, 192)  # 32 px enlarged to be seen
        assert np.load(output / row.attributions).shape == (32, 32)
        assert f'src="{row.overlay}"' in page
    assert (output / "grid.png").read_bytes().startswith(b"\x89PNG")
    assert 'src="grid.png"' in page
    client = mlflow.MlflowClient(image_run.tracking_uri)
    run = client.get_run(document["mlflow_run_id"])
    assert run.data.tags["mlflow.parentRunId"] == image_run.run_id
    assert run.data.params["layer"] == "conv2_2_relu" and run.data.params["class"] == "vertical"
    logged = {item.path for item in client.list_artifacts(run.info.run_id, "explanation")}
    assert {"explanation/index.html", "explanation/overlays", "explanation/grid.png"} <= logged


def test_gradient_on_images_reports_its_additivity_error(image_run, tmp_path, capsys):
    args = image_args(image_run, tmp_path / "ig", "--rows", "2", "--background", "10")
    code, out, err = invoke(capsys, *args, "--baseline", "black", "--no-mlflow")
    assert code == 0, err
    document = json.loads(out)
    assert document["max_additivity_error"] <= 0.01
    assert document["details"]["baseline_image"] == "black"
    assert np.load(tmp_path / "ig" / "attributions" / "row1.npy").shape == (32, 32, 3)
    table = pd.read_csv(document["outputs"]["explanations_csv"])
    assert (table["additivity_error"] <= 0.01).all()


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        (["--method", "gradcam", "--layer", "nope"], r"Layer 'nope' is not in the model"),
        (["--method", "gradcam", "--class", "diagonal"], r"Unknown --class: not one of the "),
        (["--method", "kernel"], r"Method 'kernel' does not explain models of images; for "),
        (["--method", "gradient", "--layer", "conv1_1"], r"--layer is an option of --method gr"),
        (["--method", "gradient", "--baseline", "background"], r"Unknown baseline for method"),
        (["--method", "lime", "--background", "0"], r"--background must be a positive integer"),
    ],
)
def test_bad_image_options_are_one_line_errors(image_run, tmp_path, capsys, change, pattern):
    output = tmp_path / "out"
    code, out, err = invoke(capsys, *image_args(image_run, output, "--no-mlflow"), *change)
    assert_one_line_error(code, out, err, pattern)
    assert not output.exists()


def test_a_table_given_to_an_image_model_is_one_line(image_run, tmp_path, capsys):
    table = tmp_path / "rows.csv"
    pd.DataFrame({"x1": [1.0, 2.0], "x2": [3.0, 4.0]}).to_csv(table, index=False)
    args = image_args(image_run, tmp_path / "out", "--method", "gradcam", "--no-mlflow")
    args[args.index("--data") + 1] = str(table)
    code, out, err = invoke(capsys, *args)
    assert_one_line_error(code, out, err, r"This model takes images: give a binary column 'image'")


def test_images_given_to_a_table_model_are_one_line(binary_model, image_run, tmp_path, capsys):
    args = image_args(binary_model, tmp_path / "out", "--no-mlflow")
    args[args.index("--data") + 1] = str(image_run.data)
    code, out, err = invoke(capsys, *args)
    assert_one_line_error(code, out, err, r"This model takes tables \(columns x1, x2, count, col")
    code, out, err = invoke(capsys, *image_args(binary_model, tmp_path / "o", "--method", "shap"))
    assert_one_line_error(code, out, err, r"Method 'shap' does not explain models of tables")
