"""Every image explanation method writes the overlay PNG of every image its table and JSON
list, in the output folder and in the MLflow child run (issue 20: SHAP left ``overlays/``
empty)."""

from __future__ import annotations

import json

import mlflow
import pandas as pd
import pytest
from PIL import Image

from tests.cli.test_cli import invoke


@pytest.mark.parametrize("method", ["shap", "gradcam", "gradient", "lime"])
def test_each_image_method_writes_the_overlays_it_lists(image_run, tmp_path, capsys, method):
    output = tmp_path / method
    args = [
        "explain", "--model", image_run.model_uri, "--data", str(image_run.data),
        "--output", str(output), "--tracking-uri", image_run.tracking_uri, "--json",
        "--method", method, "--rows", "2", "--background", "4",
    ]  # fmt: skip
    code, out, err = invoke(capsys, *args)
    assert code == 0, err
    document = json.loads(out)
    assert document["outputs"]["overlays"] == str(output / "overlays")
    table = pd.read_parquet(document["outputs"]["explanations_parquet"])
    assert len(table) == 2
    written = sorted(path.name for path in (output / "overlays").iterdir())
    assert written == sorted(name.split("/")[-1] for name in table["overlay"])
    for name in table["overlay"]:
        assert Image.open(output / name).size == (192, 192)
    client = mlflow.MlflowClient(image_run.tracking_uri)
    logged = client.list_artifacts(document["mlflow_run_id"], "explanation/overlays")
    assert sorted(item.path.split("/")[-1] for item in logged) == written
