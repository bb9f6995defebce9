"""``deepspark lr-find``: JSON on stdout, one-line errors with exit code 2."""

import json

import pytest

from deepspark.cli.lr_find import lr_find
from deepspark.cli.main import cli
from tests.cli.test_cli import assert_one_line_error, invoke


@pytest.fixture(autouse=True)
def registered(monkeypatch):
    """The command as ``deepspark`` registers it (``cli.add_command``)."""
    monkeypatch.setitem(cli.commands, "lr-find", lr_find)


def test_json_is_one_object_on_stdout(regression_csv, workdir, capsys):
    code, out, err = invoke(
        capsys,
        "lr-find",
        "--data",
        str(regression_csv),
        "--target",
        "y",
        "--hidden",
        "16",
        "--batch-size",
        "32",
        "--steps",
        "30",
        "--output",
        "lr.png",
        "--json",
    )
    assert code == 0, err
    found = json.loads(out)
    assert found["steps"] <= 30 and found["suggested_lr"] > 0 and found["run_id"]
    assert (workdir / "lr.png").exists() and found["plot"] == str(workdir / "lr.png")


def test_text_output_names_the_rule(regression_csv, workdir, capsys):
    data = ["--data", str(regression_csv), "--target", "y", "--hidden", "16"]
    code, out, err = invoke(capsys, "lr-find", *data, "--steps", "20")
    assert code == 0, err
    assert out.startswith("suggested lr:") and "rule:" in out and "runs:/" in out


@pytest.mark.parametrize(
    ("options", "pattern"),
    [
        (["--steps", "0"], r"Invalid --steps: the range test needs at least 2 steps"),
        (["--min-lr", "1", "--max-lr", "0.1"], r"Invalid --min-lr: .*--max-lr"),
    ],
)
def test_bad_options_exit_2_with_one_line(workdir, capsys, options, pattern):
    code, out, err = invoke(capsys, "lr-find", "--data", "table.csv", *options)
    assert_one_line_error(code, out, err, pattern)
