"""The model registry: ``deepspark register`` / ``models``, ``train --register``, and
``models:/NAME@alias`` / ``models:/NAME/<version>`` in every verb, against a real MLflow sqlite
store under ``tmp_path``."""

from __future__ import annotations

import json
import shutil

import mlflow
import pandas as pd
import pytest

import deepspark
from deepspark.cli.main import main
from deepspark.errors import ModelNotFoundError, UserInputError
from deepspark.tracking.registry import list_models, register_model
from tests.conftest import FAST, make_table


def run_main(args: list[str], capsys) -> tuple[int, str, str]:
    """``deepspark ARGS`` in-process: exit code, stdout, stderr."""
    with pytest.raises(SystemExit) as exit:
        main(args)
    captured = capsys.readouterr()
    return exit.value.code, captured.out, captured.err


def assert_one_line_error(code: int, out: str, err: str, expected: str) -> None:
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert expected in lines[0], lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, mlflow_template):
    """One MLflow sqlite store for the module with two trained runs, the first registered as
    ``houses`` (alias ``champion``) by ``train`` itself. Each test registers its own names."""
    folder = tmp_path_factory.mktemp("registry")
    shutil.copy(mlflow_template, folder / "mlflow.db")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    data = folder / "table.csv"
    make_table().to_csv(data, index=False)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.setenv("DEEPSPARK_CHECKPOINT_DIR", str(folder / "checkpoints"))
        mlflow.set_tracking_uri(uri)
        first = deepspark.train(str(data), "y", register="houses", aliases=["champion"], **FAST)
        second = deepspark.train(str(data), "y", **{**FAST, "seed": 7})
        yield {"folder": folder, "data": data, "first": first, "second": second}


def test_train_registers_and_the_alias_and_version_load(trained):
    result = trained["first"]
    assert result.registered["name"] == "houses" and result.registered["version"] == 1
    assert result.registered["aliases"] == ["champion"]
    assert result.registered["model_uri"] == "models:/houses/1"
    assert result.registered["run_id"] == result.run_id
    run = mlflow.MlflowClient().get_run(result.run_id)
    assert run.data.tags["deepspark.registered_model"] == "houses/1"
    rows = make_table(rows=20, seed=5).drop(columns="y")
    expected = deepspark.load_model(result.model_uri).predict(rows)
    for uri in ("models:/houses@champion", "models:/houses/1"):
        pd.testing.assert_frame_equal(deepspark.load_model(uri).predict(rows), expected)
    # Through the pandas predict verb, and MLflow's own pyfunc loader.
    scored = deepspark.predict("models:/houses@champion", rows)
    assert scored["prediction"].tolist() == pytest.approx(expected["prediction"].tolist())
    pyfunc = mlflow.pyfunc.load_model("models:/houses@champion")
    assert pyfunc.predict(rows)["prediction"].tolist() == pytest.approx(
        expected["prediction"].tolist()
    )


def test_register_cli_moves_aliases_and_models_lists_versions(trained, capsys):
    first, second = trained["first"], trained["second"]
    code, out, _ = run_main(
        ["register", "--model", first.model_uri, "--name", "prices", "--alias", "champion",
         "--json"],
        capsys,
    )  # fmt: skip
    assert code == 0
    document = json.loads(out)
    assert (document["name"], document["version"], document["aliases"]) == (
        "prices",
        1,
        ["champion"],
    )
    assert document["metric"] == "test_rmse"
    assert document["metric_value"] == pytest.approx(first.metrics["test_rmse"])
    # A runs:/ URI works too; champion moves to version 2, staging and challenger are added.
    code, out, _ = run_main(
        ["register", "--model", f"runs:/{second.run_id}/model", "--name", "prices",
         "--alias", "champion,staging", "--alias", "challenger"],
        capsys,
    )  # fmt: skip
    assert code == 0 and "version:    2" in out and "challenger, champion, staging" in out

    code, out, _ = run_main(["models", "--json"], capsys)
    assert code == 0
    listed = {model["name"]: model for model in json.loads(out)["models"]}
    assert sorted(listed) == ["houses", "prices"]
    model = listed["prices"]
    assert model["aliases"] == {"champion": 2, "staging": 2, "challenger": 2}
    versions = {version["version"]: version for version in model["versions"]}
    assert versions[1]["aliases"] == [] and versions[1]["run_id"] == first.run_id
    assert versions[2]["aliases"] == ["challenger", "champion", "staging"]
    assert versions[2]["metric_value"] == pytest.approx(second.metrics["test_rmse"])
    assert versions[2]["created"].endswith("+00:00")
    assert deepspark.load_model("models:/prices@champion").metadata["run_id"] == second.run_id

    code, out, _ = run_main(["models", "--name", "prices"], capsys)
    assert code == 0 and "prices" in out and "test_rmse" in out and second.run_id in out
    assert "houses" not in out
    assert list_models("prices") == [model]


def test_predict_cli_reads_a_registered_alias(trained, capsys):
    output = trained["folder"] / "scored.csv"
    code, out, _ = run_main(
        ["predict", "--model", "models:/houses@champion", "--data", str(trained["data"]),
         "--output", str(output), "--json"],
        capsys,
    )  # fmt: skip
    assert code == 0 and json.loads(out)["rows"] == 400
    expected = deepspark.load_model("models:/houses/1").predict(pd.read_csv(trained["data"]))
    scored = pd.read_csv(output)
    assert scored["prediction"].tolist() == pytest.approx(expected["prediction"].tolist())


def test_bad_registry_input_is_one_line_and_exit_2(trained, capsys):
    model_uri, data = trained["first"].model_uri, str(trained["data"])
    output = str(trained["folder"] / "out.csv")
    cases = [
        (["register", "--model", "models:/m-0000", "--name", "houses"], "Model not found"),
        (["register", "--model", model_uri, "--name", "bad/name"], "Invalid --name"),
        (
            ["register", "--model", model_uri, "--name", "houses", "--alias", "latest"],
            "'latest' and v<number> are reserved",
        ),
        (["models", "--name", "nope"], "Received: name='nope'"),
        (
            ["predict", "--model", "models:/houses@nope", "--data", data, "--output", output],
            "alias nope not found",
        ),
        (
            ["predict", "--model", "models:/houses/9", "--data", data, "--output", output],
            "version=9",
        ),
        (
            ["train", "--data", data, "--target", "y", "--alias", "champion"],
            "Invalid --aliases: aliases name versions of a registered model; add --register",
        ),
        (["train", "--data", data, "--target", "y", "--register", "a b"], "Invalid --register"),
    ]
    for args, expected in cases:
        assert_one_line_error(*run_main(args, capsys), expected)
    with pytest.raises(ModelNotFoundError, match="Not a deepspark model"):
        _register_plain_pyfunc()
    with pytest.raises(UserInputError, match=r"Received: alias='v3'"):
        register_model(model_uri, "houses", aliases=["v3"])


class _Echo(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return model_input


def _register_plain_pyfunc():
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="echo", python_model=_Echo())
    register_model(info.model_uri, "echo")


@pytest.mark.spark
def test_spark_predict_reads_a_registered_alias(trained, spark):
    import deepspark.spark

    rows = make_table(rows=30, seed=3).drop(columns="y")
    scored = deepspark.spark.predict(
        spark.createDataFrame(rows), "models:/houses@champion"
    ).toPandas()
    expected = deepspark.load_model("models:/houses/1").predict(rows)
    assert scored["prediction"].tolist() == pytest.approx(expected["prediction"].tolist(), rel=1e-5)
