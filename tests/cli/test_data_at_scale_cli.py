"""Bad sources and stores: one line on stderr, exit code 2, no traceback, nothing written to the
store. A bad store and a streamed folder run as the real command; the bad folders run the same
command in this process (a fresh process costs ~6 CPU-s of imports before it fails)."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.cli.test_cli import invoke
from tests.conftest import make_table, run_cli


def _one_line_exit_2(done, *fragments: str) -> str:
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("deepspark:")]
    assert len(lines) == 1, done.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def test_a_store_that_cannot_be_written(workdir, regression_csv):
    blocker = workdir / "not-a-folder"
    blocker.write_text("x")
    done = run_cli(
        "train", "--data", str(regression_csv), "--target", "y", "--store", str(blocker / "s"),
        cwd=workdir,
    )  # fmt: skip
    _one_line_exit_2(done, "store is not writable", "Received: store=")


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({}, "no data files"),
        ({"a.parquet": {"x": [1.0, 2.0], "y": [1.0, 2.0]}, "b.parquet": {"x": [3.0]}}, "b.parquet"),
        (
            {"a.parquet": {"x": [1.0], "y": [1.0]}, "b.parquet": {"x": ["text"], "y": [2.0]}},
            "b.parquet",
        ),
    ],
    ids=["empty folder", "column missing in one file", "column retyped in one file"],
)
def test_bad_folders_are_one_line(workdir, files, message, capsys):
    folder = workdir / "houses"
    folder.mkdir()
    (folder / "_SUCCESS").write_text("")
    for name, columns in files.items():
        pq.write_table(pa.table(columns), folder / name)
    code, out, err = invoke(capsys, "train", "--data", str(folder), "--target", "y")
    assert code == 2 and out == "", err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("deepspark:")]
    assert len(lines) == 1, err
    line = lines[0]
    assert message in line.lower() or message in line
    shards = workdir / ".deepspark" / "store" / "shards"
    assert not shards.exists() or not any(shards.iterdir())


def test_a_streamed_folder_trains_from_the_command_line(workdir):
    folder = workdir / "houses"
    folder.mkdir()
    table = make_table(rows=300)
    for part in range(3):
        table.iloc[part * 100 : (part + 1) * 100].to_parquet(folder / f"part-{part}.parquet")
    done = run_cli(
        "train", "--data", str(folder), "--target", "y", "--model", "mlp", "--hidden", "16",
        "--epochs", "3", "--max-memory", "0.01", "--json", cwd=workdir,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "streamed from" in done.stderr
    result = json.loads(done.stdout)
    assert sum(result["rows"].values()) == 300 and result["epochs_completed"] == 3
