"""``deepspark tune``: JSON on stdout, a text summary, one-line errors with exit code 2."""

from __future__ import annotations

import json
import sys

import pytest

pytest.importorskip("optuna", reason="the tune extra is not installed")

from deepspark.cli.main import cli  # noqa: E402
from deepspark.cli.tune import tune  # noqa: E402
from deepspark.tuning.space import OPTIONAL_ENTRIES, config_fields  # noqa: E402
from tests.cli.test_cli import assert_one_line_error, invoke  # noqa: E402


def _default(name):
    return config_fields()[name].default


TINY_ARGS = ["--epochs", "3", "--batch-size", "32", "--patience", "3"]
# The network settings TrainConfig has now (ensemble size, embeddings...) are fixed (--set).
FIXED_OPTIONAL = [
    argument
    for name in OPTIONAL_ENTRIES
    if name in config_fields()
    for argument in ("--set", f"{name}={_default(name)}")
]


@pytest.fixture(autouse=True)
def registered(monkeypatch):
    """The command as ``deepspark`` registers it (``cli.add_command``)."""
    monkeypatch.setitem(cli.commands, "tune", tune)


def test_json_is_one_object_on_stdout(regression_csv, workdir, capsys):
    code, out, err = invoke(
        capsys,
        "tune",
        "--data",
        str(regression_csv),
        "--target",
        "y",
        "--trials",
        "2",
        "--space",
        "hidden=8|4",
        "--space",
        "lr=1e-3:1e-2:log",
        "--space",
        "dropout=0",
        *FIXED_OPTIONAL,
        *TINY_ARGS,
        "--json",
    )
    assert code == 0, err
    found = json.loads(out)
    assert found["trials"] == {"complete": 2, "pruned": 0, "failed": 0}
    assert set(found["best_params"]) == {"hidden", "lr", "dropout"}
    assert found["model_uri"].startswith("models:/") and "test_rmse" in found["metrics"]
    assert found["best_settings"]["hidden"] in ([8], [4])


def test_text_output_summarises_the_search(regression_csv, workdir, capsys):
    args = ["--data", str(regression_csv), "--target", "y", "--trials", "1"]
    args += ["--space", "hidden=8", "--set", "activation=gelu", *FIXED_OPTIONAL]
    code, out, err = invoke(capsys, "tune", *args, *TINY_ARGS)
    assert code == 0, err
    assert out.startswith("search run id:")
    assert "trials:         1 (1 complete, 0 pruned, 0 failed)" in out
    assert "best settings:" in out and "hidden=8" in out and "test_rmse:" in out
    import mlflow

    parent = mlflow.MlflowClient().get_run(out.split()[3])
    assert parent.data.params["activation"] == "gelu" and "space_dropout" in parent.data.params


@pytest.mark.parametrize(
    ("options", "pattern"),
    [
        (["--trials", "0"], r"Invalid --trials: must be a positive integer"),
        (["--space", "units=1:4"], r"Unknown search space key 'units'; valid keys are"),
        (["--space", "lr"], r"Invalid --space: give KEY=VALUE such as lr=1e-4:1e-1:log"),
        (["--set", "lr=0.1", "--space", "lr=0.2"], r"'lr' is both a fixed setting"),
        (["--space", "dropout=1:2"], r"The search space yields no valid trial"),
        (["--metric", "f1"], r"Invalid --metric; valid metrics are rmse, mae"),
        (["--task", "regression", "--metric", "auc"], r"Invalid --metric for a regression"),
        (["--timeout", "0"], r"Invalid --timeout"),
    ],
)
def test_bad_input_exits_2_with_one_line(regression_csv, workdir, capsys, options, pattern):
    args = ["--data", str(regression_csv), "--target", "y"]
    code, out, err = invoke(capsys, "tune", *args, *options)
    assert_one_line_error(code, out, err, pattern)


def test_spark_without_pyspark_exits_2(regression_csv, workdir, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyspark", None)
    args = ["--data", str(regression_csv), "--target", "y", "--spark"]
    code, out, err = invoke(capsys, "tune", *args)
    assert_one_line_error(code, out, err, r"needs the 'pyspark' package.*deepspark\[spark\]")


def test_missing_data_is_a_usage_error(workdir, capsys):
    code, out, err = invoke(capsys, "tune", "--trials", "3")
    assert_one_line_error(code, out, err, r"Missing option '--data' \(or --resume RUN_ID\)")


def test_resume_of_an_unknown_run_exits_2(workdir, capsys):
    code, out, err = invoke(capsys, "tune", "--resume", "0123456789abcdef")
    assert_one_line_error(code, out, err, r"MLflow run not found")
