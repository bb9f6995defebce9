"""The command line: exit codes, one-line errors, JSON on stdout, files written or not."""

import json
import re

import numpy as np
import pandas as pd
import pytest

from deepspark.cli.main import main
from tests.conftest import make_table, run_cli

FAST_ARGS = ["--hidden", "16", "--epochs", "6", "--batch-size", "32", "--patience", "3"]


def invoke(capsys, *args):
    """Run the CLI in this process; return (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    captured = capsys.readouterr()
    return exited.value.code, captured.out, captured.err


def assert_one_line_error(code, out, err, pattern):
    assert code == 2, err
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("deepspark: error: ")
    assert "Traceback" not in err
    assert re.search(pattern, lines[0]), lines[0]


@pytest.fixture
def trained(regression_csv, capsys):
    code, out, err = invoke(
        capsys, "train", "--data", str(regression_csv), "--target", "y", *FAST_ARGS, "--json"
    )
    assert code == 0, err
    return json.loads(out)


def test_train_json_is_one_object_on_stdout(trained):
    assert set(trained) >= {"run_id", "model_uri", "metrics", "epochs_completed", "rows"}
    assert trained["metrics"]["test_rmse"] > 0
    assert trained["epochs_completed"] <= 6


def test_predict_and_runs(trained, workdir, capsys):
    data = workdir / "new.csv"
    make_table(rows=15, seed=4).drop(columns="y").assign(note="kept").to_csv(data, index=False)
    output = workdir / "scored.csv"
    code, out, err = invoke(
        capsys,
        "predict",
        "--model",
        trained["model_uri"],
        "--data",
        str(data),
        "--output",
        str(output),
        "--json",
    )
    assert code == 0, err
    document = json.loads(out)
    assert document["rows"] == 15 and document["columns"][-1] == "prediction"
    scored = pd.read_csv(output)
    assert scored["note"].eq("kept").all() and np.isfinite(scored["prediction"]).all()

    code, out, err = invoke(
        capsys,
        "predict",
        "--model",
        trained["model_uri"],
        "--data",
        str(data),
        "--output",
        str(output),
    )
    assert_one_line_error(code, out, err, r"Output already exists; pass --overwrite")
    code, out, err = invoke(
        capsys,
        "predict",
        "--model",
        trained["model_uri"],
        "--data",
        str(data),
        "--output",
        str(output),
        "--overwrite",
    )
    assert code == 0, err

    code, out, err = invoke(capsys, "runs", "--json")
    assert code == 0, err
    runs = json.loads(out)["runs"]
    assert runs[0]["run_id"] == trained["run_id"] and runs[0]["status"] == "FINISHED"
    code, out, err = invoke(capsys, "runs")
    assert code == 0 and trained["run_id"] in out


def test_predict_missing_columns_named_and_nothing_written(trained, workdir, capsys):
    data = workdir / "partial.csv"
    make_table(rows=5).drop(columns=["x1", "color"]).to_csv(data, index=False)
    output = workdir / "out.csv"
    code, out, err = invoke(
        capsys,
        "predict",
        "--model",
        trained["model_uri"],
        "--data",
        str(data),
        "--output",
        str(output),
    )
    assert_one_line_error(code, out, err, r"missing 2 column\(s\) the model needs: x1, color")
    assert not output.exists()


def test_predict_unknown_model_uri(workdir, capsys):
    data = workdir / "d.csv"
    make_table(rows=5).to_csv(data, index=False)
    for uri in (
        "models:/m-0123456789abcdef",
        "runs:/0123456789abcdef/model",
        str(workdir / "no-such-model"),
    ):
        code, out, err = invoke(
            capsys,
            "predict",
            "--model",
            uri,
            "--data",
            str(data),
            "--output",
            str(workdir / "o.csv"),
        )
        assert_one_line_error(code, out, err, r"Model not found .*Received: model=")


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (["--data", "missing.csv", "--target", "y"], r"Data not found"),
        (["--data", "empty.csv", "--target", "y"], r"Data file is empty \(0 bytes\)"),
        (["--data", "junk.csv", "--target", "y"], r"not text \(binary content\)"),
        (
            ["--data", "table.csv", "--target", "price"],
            r"Target column not found; choose one of: x1, x2, count, color, y",
        ),
        (["--data", "no_target.csv", "--target", "y"], r"Target column 'y' has no values"),
        (
            ["--data", "blank_feature.csv", "--target", "y"],
            r"Feature column 'blank' is entirely missing",
        ),
        (["--data", "texty.csv", "--target", "y"], r"Column 'x1' is numeric in .*\(row 3: 'abc'\)"),
        (["--data", "tiny.csv", "--target", "y"], r"Too few rows for the split"),
        (["--data", "single.csv", "--target", "y", "--task", "binary"], r"has a single class"),
        (["--data", "table.csv", "--target", "y", "--epochs", "0"], r"Invalid --epochs"),
        (["--data", "table.csv", "--target", "y", "--lr", "-1"], r"Invalid --lr"),
        (
            [
                "--data",
                "table.csv",
                "--target",
                "y",
                "--val-fraction",
                "0.6",
                "--test-fraction",
                "0.4",
            ],
            r"leave less than 5% of rows for training",
        ),
        (
            ["--data", "table.csv", "--target", "y", "--activation", "mish"],
            r"valid values are sigmoid, tanh, relu, leaky_relu, prelu, elu, selu, gelu, swish",
        ),
        (
            ["--data", "table.csv", "--target", "y", "--optimizer", "lion"],
            r"valid values are sgd, momentum, nesterov, adam, adamw, rmsprop, adagrad",
        ),
        (
            ["--data", "table.csv", "--target", "y", "--epochs", "many"],
            r"'many' is not a valid integer",
        ),
        (["--data", "table.csv", "--target", "y", "--resume-from", "x"], r"No such option"),
        (["--data", "table.csv"], r"No target given; pass --target with one of: x1, x2"),
        (
            ["--data", "table.csv", "--target", "y", "--keras-backend", "theano"],
            r"Invalid --keras-backend: unknown value; valid values are jax, torch",
        ),
        (
            ["--data", "table.csv", "--target", "y", "--collectives", "mpi"],
            r"Invalid --collectives: unknown value; valid values are jax, torch, horovod",
        ),
        (
            ["--data", "table.csv", "--target", "y", "--workers", "2", "--launcher", "horovod"],
            r"Horovod trains Keras on the torch backend only; add --keras-backend torch",
        ),
    ],
)
def test_train_bad_input(args, pattern, workdir, capsys):
    frame = make_table(rows=40)
    frame.to_csv(workdir / "table.csv", index=False)
    (workdir / "empty.csv").write_bytes(b"")
    (workdir / "junk.csv").write_bytes(bytes(range(256)) * 8)
    frame.assign(y=np.nan).to_csv(workdir / "no_target.csv", index=False)
    frame.assign(blank=np.nan).to_csv(workdir / "blank_feature.csv", index=False)
    texty = frame.copy()
    texty["x1"] = texty["x1"].astype(object)
    texty.loc[3, "x1"] = "abc"
    texty.to_csv(workdir / "texty.csv", index=False)
    frame.head(8).to_csv(workdir / "tiny.csv", index=False)
    frame.assign(y="same").to_csv(workdir / "single.csv", index=False)
    code, out, err = invoke(capsys, "train", *args)
    assert_one_line_error(code, out, err, pattern)
    assert not (workdir / "mlruns").exists()


@pytest.mark.slow
def test_real_process_exit_codes(workdir):
    """The installed entry point, in its own process: help, a usage error, a bad input."""
    done = run_cli("--help", cwd=workdir)
    assert done.returncode == 0 and "train" in done.stdout
    done = run_cli("train", "--data", "nope.csv", "--target", "y", "--json", cwd=workdir)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "deepspark: error: Data not found: no such file, and not a built-in dataset (diabetes, "
        "california); check the path. Received: data='nope.csv'"
    ]
    done = run_cli("frobnicate", cwd=workdir)
    assert done.returncode == 2 and "No such command 'frobnicate'" in done.stderr
