"""`deepspark predict --spark`: Parquet out, SQL, refusing to overwrite, no partial output on a
failed job. In this process (reusing the session's Spark) and once as a real command."""

import json

import numpy as np
import pandas as pd
import pytest

import deepspark
from tests.cli.test_cli import assert_one_line_error, invoke
from tests.conftest import run_cli

pytestmark = pytest.mark.spark


@pytest.fixture
def houses(trained_models, workdir):
    trained = trained_models["regression"]
    path = workdir / "houses.parquet"
    trained.data.assign(row=range(len(trained.data))).to_parquet(path, index=False)
    return trained, path


def test_predict_spark_writes_parquet_and_refuses_to_overwrite(spark, houses, workdir, capsys):
    trained, path = houses
    output = workdir / "scored"
    args = ["predict", "--spark", "--model", str(trained.model_dir), "--data", str(path)]
    code, out, err = invoke(capsys, *args, "--output", str(output), "--batch-rows", "128", "--json")
    assert code == 0, err
    document = json.loads(out)
    assert document["rows"] == 600 and document["engine"] == "spark"
    assert document["columns"][-1] == "prediction"
    scored = pd.read_parquet(output).sort_values("row")
    expected = deepspark.load_model(str(trained.model_dir)).predict(trained.data)
    np.testing.assert_allclose(scored["prediction"], expected["prediction"], rtol=1e-6)

    before = sorted(p.name for p in output.iterdir())
    code, out, err = invoke(capsys, *args, "--output", str(output))
    assert_one_line_error(code, out, err, "Output already exists; pass --overwrite")
    assert sorted(p.name for p in output.iterdir()) == before

    query = "SELECT row, model(struct(*)) AS price FROM data WHERE row < 10"
    code, out, err = invoke(capsys, *args, "--output", str(output), "--overwrite", "--sql", query)
    assert code == 0, err
    replaced = pd.read_parquet(output).sort_values("row")
    assert list(replaced.columns) == ["row", "price"] and len(replaced) == 10
    np.testing.assert_allclose(replaced["price"], expected["prediction"][:10], rtol=1e-6)


def test_failed_job_leaves_no_output(spark, houses, workdir, capsys):
    trained, path = houses
    output = workdir / "never"
    # text in a numeric feature is only found inside the Python workers
    query = "SELECT model(struct('oops' AS x1, x2, count, color)) AS p FROM data"
    args = ["predict", "--spark", "--model", str(trained.model_dir), "--data", str(path)]
    code, out, err = invoke(capsys, *args, "--output", str(output), "--sql", query)
    assert_one_line_error(code, out, err, r"Column 'x1' is numeric in 0% of rows but has text")
    assert not output.exists()
    assert [p.name for p in workdir.iterdir() if "never" in p.name] == []


@pytest.mark.parametrize(
    ("extra", "pattern"),
    [
        (["--sql", "SELEC nonsense"], r"SQL query failed: .*PARSE_SYNTAX_ERROR"),
        (["--data", "no_such_table"], r"Spark data source not found"),
        (["--model", "models:/m-missing"], r"Model not found"),
    ],
)
def test_bad_input_is_one_line(spark, houses, workdir, capsys, extra, pattern):
    trained, path = houses
    args = {"--model": str(trained.model_dir), "--data": str(path), "--output": "out"}
    for flag, value in zip(extra[::2], extra[1::2], strict=True):
        args[flag] = value
    flat = [item for pair in args.items() for item in pair]
    code, out, err = invoke(capsys, "predict", "--spark", *flat)
    assert_one_line_error(code, out, err, pattern)
    assert not (workdir / "out").exists()


def test_spark_options_need_spark(houses, workdir, capsys):
    trained, path = houses
    args = ["predict", "--model", str(trained.model_dir), "--data", str(path), "--output", "o.csv"]
    code, out, err = invoke(capsys, *args, "--batch-rows", "10")
    assert code == 2 and "--batch-rows needs --spark" in err


@pytest.mark.slow
def test_predict_spark_as_a_real_command_with_models_uri(trained_models, workdir, monkeypatch):
    trained = trained_models["binary"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained.tracking_uri)
    path = workdir / "people.csv"
    trained.data.to_csv(path, index=False)
    done = run_cli(
        "predict", "--spark", "--master", "local[1]", "--model", trained.model_uri,
        "--data", str(path), "--output", str(workdir / "scored"), "--json",
        cwd=workdir, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["rows"] == 600
    scored = pd.read_parquet(workdir / "scored")
    assert set(scored["prediction"]) <= {"yes", "no"}
    assert {"no", "yes"} == set(scored["probability"].iloc[0])
