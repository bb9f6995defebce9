"""``deepspark explain``: JSON, output files, MLflow run, and one-line errors for bad input."""

from __future__ import annotations

import json

import mlflow
import pandas as pd
import pytest

from tests.cli.test_cli import assert_one_line_error, invoke
from tests.conftest import make_table


def base_args(trained, output, *extra):
    return [
        "explain", "--model", trained.model_uri, "--data", str(trained.data),
        "--output", str(output), "--tracking-uri", trained.tracking_uri, "--json", *extra,
    ]  # fmt: skip


def test_json_output_files_and_mlflow_run(regression_model, tmp_path, capsys):
    output = tmp_path / "why"
    args = base_args(regression_model, output, "--rows", "12", "--background", "30")
    code, out, err = invoke(capsys, *args)
    assert code == 0, err
    document = json.loads(out)
    assert document["method"] == "gradient" and document["rows"] == 12
    assert document["seconds_per_row"] > 0
    assert document["max_additivity_error"] <= 0.01
    outputs = document["outputs"]
    table = pd.read_parquet(outputs["attributions_parquet"])
    assert list(table.columns) == ["row_id", "prediction", "baseline", "x1", "x2", "count", "color"]
    assert len(table) == 12 and table["row_id"].tolist() == list(range(12))
    pd.testing.assert_frame_equal(pd.read_csv(outputs["attributions_csv"]), table)
    page = (output / "index.html").read_text()
    for name in ("importance.png", "beeswarm.png", "waterfall_row0.png", "waterfall_row2.png"):
        assert (output / name).read_bytes().startswith(b"\x89PNG")
        assert f'src="{name}"' in page
    run = mlflow.MlflowClient(regression_model.tracking_uri).get_run(document["mlflow_run_id"])
    assert run.data.tags["mlflow.parentRunId"] == regression_model.run_id
    assert run.data.metrics["max_additivity_error"] == pytest.approx(
        document["max_additivity_error"]
    )
    artifacts = mlflow.MlflowClient(regression_model.tracking_uri).list_artifacts(
        run.info.run_id, "explanation"
    )
    assert "explanation/index.html" in {item.path for item in artifacts}


def test_rows_beyond_the_data_explain_all_and_say_so(regression_model, tmp_path, capsys):
    small = tmp_path / "small.csv"
    make_table(rows=7, seed=9).to_csv(small, index=False)
    args = base_args(regression_model, tmp_path / "out", "--rows", "50", "--background", "5")
    args[args.index("--data") + 1] = str(small)
    code, out, err = invoke(capsys, *args, "--method", "lime", "--no-mlflow")
    assert code == 0, err
    assert json.loads(out)["rows"] == 7
    assert json.loads(out)["max_additivity_error"] is None
    assert "more than the data's 7 rows: explaining all" in err
    assert (tmp_path / "out" / "lime_row0.png").exists()
    assert not (tmp_path / "out" / "waterfall_row0.png").exists()  # LIME is not additive


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        (["--method", "shapley"], r"valid methods are gradient, kernel, lime, permutation"),
        (["--background", "5000"], r"Background larger than the training split: it has \d+"),
        (["--rows", "0"], r"--rows must be a positive integer"),
        (["--method", "kernel", "--baseline", "mean"], r"--baseline is an option of --method"),
    ],
)
def test_bad_options_are_one_line_errors(regression_model, tmp_path, capsys, change, pattern):
    output = tmp_path / "out"
    code, out, err = invoke(capsys, *base_args(regression_model, output), *change)
    assert_one_line_error(code, out, err, pattern)
    assert not output.exists()
    assert not list(tmp_path.glob(".out*"))


def test_missing_columns_are_named(regression_model, tmp_path, capsys):
    data = tmp_path / "partial.csv"
    make_table(rows=20).drop(columns=["count", "color"]).to_csv(data, index=False)
    args = base_args(regression_model, tmp_path / "out")
    args[args.index("--data") + 1] = str(data)
    code, out, err = invoke(capsys, *args)
    assert_one_line_error(code, out, err, r"missing 2 column\(s\) the model needs: count, color")


def test_unknown_model_and_existing_output(regression_model, tmp_path, capsys):
    args = base_args(regression_model, tmp_path / "out")
    args[args.index("--model") + 1] = "models:/m-doesnotexist"
    code, out, err = invoke(capsys, *args)
    assert_one_line_error(code, out, err, r"Model not found.*Received: model='models:/m-doe")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    code, out, err = invoke(capsys, *base_args(regression_model, taken))
    assert_one_line_error(code, out, err, r"not empty; pass --overwrite")
    assert [path.name for path in taken.iterdir()] == ["keep.txt"]


def test_background_falls_back_to_the_data_for_a_model_folder(regression_model, tmp_path):
    import deepspark
    from deepspark.tracking.model import resolve_model_dir

    mlflow.set_tracking_uri(regression_model.tracking_uri)
    folder = resolve_model_dir(regression_model.model_uri)
    data = pd.read_csv(regression_model.data)
    result = deepspark.explain(
        str(folder), data, rows=5, background=20, log_to_mlflow=False, tracking_uri="sqlite:///"
        + str(tmp_path / "empty.db"),
    )  # fmt: skip
    assert result.summary["background_source"].startswith("the explained data")
    assert result.summary["max_additivity_error"] <= 0.01
