"""Issue 21, item 3: a full disk while writing checkpoints, data shards, the model or scored
output. Each test mounts a small tmpfs, fills it with a ballast file to leave a few kilobytes,
and checks: one ``StorageFullError`` line (what, where, the disk is full, the fix), the previous
file or checkpoint intact, no partial file left that could pass for a whole one."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deepspark.errors import StorageFullError

DISK_BYTES = 16 * 1024 * 1024  # a logged model carries deepspark's source (~1.8 MB in pages)
PAGE = 4096


@pytest.fixture
def small_disk(tmp_path) -> Path:
    """A 16 MiB tmpfs mounted under ``tmp_path`` (unmounted at the end)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs", str(disk)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=True)


def fill(disk: Path, *, leave: int) -> Path:
    """Write a ballast file so that ``leave`` bytes stay free on ``disk``."""
    stats = os.statvfs(disk)
    free = stats.f_bavail * stats.f_frsize
    ballast = disk / "ballast"
    with ballast.open("ab") as handle:
        handle.write(b"\0" * (free - leave))
    return ballast


def free_bytes(disk: Path) -> int:
    stats = os.statvfs(disk)
    return stats.f_bavail * stats.f_frsize


def hidden_files(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.rglob(".*"))


def test_full_disk_in_checkpoints_and_the_model_keeps_the_last_epoch_and_resume_finishes(
    workdir, regression_csv, small_disk, monkeypatch, capsys
):
    import keras
    import mlflow
    from mlflow.entities import LoggedModelStatus

    import deepspark
    from deepspark.training.checkpoint import CheckpointStore
    from tests.cli.test_cli import invoke

    checkpoints = small_disk / "checkpoints"
    monkeypatch.setenv("DEEPSPARK_CHECKPOINT_DIR", str(checkpoints))
    mlflow.create_experiment("disk-full", artifact_location=str(small_disk / "artifacts"))

    class FillAfterFirstEpoch(keras.callbacks.Callback):
        """Runs after deepspark's checkpoint of the epoch: the next one meets a full disk."""

        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                fill(small_disk, leave=PAGE)

    settings = {"hidden": (8,), "epochs": 3, "batch_size": 64, "patience": 5}
    with pytest.raises(StorageFullError, match=r"disk is full.*checkpoint of epoch 2") as failed:
        deepspark.train(
            str(regression_csv),
            "y",
            experiment="disk-full",
            callbacks=[FillAfterFirstEpoch()],
            **settings,
        )
    (run_folder,) = list(checkpoints.iterdir())
    run_id = run_folder.name
    message = str(failed.value)
    assert (
        f"the checkpoint of epoch 1 is kept: free space there and continue with: "
        f"deepspark train --resume {run_id}" in message
    )
    assert str(run_folder) in message
    assert mlflow.get_run(run_id).info.status == "FAILED"
    # The checkpoint of epoch 1 is whole and loadable; epoch 2 left nothing behind.
    names = sorted(path.name for path in run_folder.iterdir())
    assert names == ["best.weights.npz", "epoch-0000.npz", "model.keras", "run.json", "state.json"]
    assert hidden_files(run_folder) == []
    store = CheckpointStore(run_folder)
    state = store.read_state()
    assert state["epoch"] == 0
    assert store.load_model(state) is not None

    # Resumed on a still-full disk (the CLI): one line, exit 2, the checkpoint unchanged.
    code, out, err = invoke(capsys, "-q", "train", "--resume", run_id, "--json")
    _one_error_line(code, out, err, r"disk is full.*checkpoint of epoch 2.*epoch 1 is kept")
    assert store.read_state()["epoch"] == 0
    assert hidden_files(run_folder) == []

    # Room for checkpoints, not for the logged model: epochs 2 and 3 are kept, the model is not.
    (small_disk / "ballast").unlink()
    fill(small_disk, leave=16 * PAGE)
    code, out, err = invoke(capsys, "-q", "train", "--resume", run_id, "--json")
    _one_error_line(
        code,
        out,
        err,
        rf"could not write the model to {small_disk}/artifacts/.*deepspark train --resume",
    )
    assert store.read_state()["epoch"] == 2
    assert mlflow.get_run(run_id).info.status == "FAILED"
    experiment = mlflow.get_experiment_by_name("disk-full").experiment_id
    (logged,) = mlflow.search_logged_models(experiment_ids=[experiment], output_format="list")
    assert logged.status == LoggedModelStatus.FAILED  # MLflow's mark of a half-copied model

    # Space freed: the resume continues from the last complete epoch and finishes.
    (small_disk / "ballast").unlink()
    code, out, err = invoke(capsys, "-q", "train", "--resume", run_id, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["resumed_from_epoch"] == 3
    assert result["epochs_completed"] == 3
    assert mlflow.get_run(run_id).info.status == "FINISHED"

    # Scored output of that model on a full disk: the earlier output is kept whole.
    output = small_disk / "scored.csv"
    output.write_text("old,output\n1,2\n")
    fill(small_disk, leave=PAGE)
    with pytest.raises(StorageFullError, match=r"could not write the output scored\.csv"):
        deepspark.predict(result["model_uri"], str(regression_csv), output=output, overwrite=True)
    assert output.read_text() == "old,output\n1,2\n"
    assert hidden_files(small_disk) == []


def test_full_disk_while_writing_shards_removes_the_incomplete_set(small_disk):
    from deepspark.distributed.shards import read_shard, write_shards

    def splits(rows: int):
        rng = np.random.default_rng(0)
        inputs = {"features": rng.normal(size=(rows, 8)).astype("float32")}
        return {"train": (inputs, rng.normal(size=rows)), "val": (inputs, rng.normal(size=rows))}

    root = small_disk / "shards"
    old = write_shards(splits(40), world_size=2, key="old", root=str(root))
    fill(small_disk, leave=16 * PAGE)
    with pytest.raises(StorageFullError, match=r"could not write the data shards .*--store"):
        write_shards(splits(20_000), world_size=2, key="new", root=str(root))
    assert list((root / "new-w2").iterdir()) == []
    assert hidden_files(root) == []
    inputs, target = read_shard(old, "train", 1)
    assert len(target) == 20 and inputs["features"].shape == (20, 8)


def test_a_full_store_is_refused_before_any_work(small_disk):
    from deepspark.store.store import Store

    fill(small_disk, leave=0)
    with pytest.raises(StorageFullError, match=r"could not write a first small file .*--store"):
        Store(small_disk / "store").check_writable()
    assert hidden_files(small_disk) == []


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_full_disk_while_streaming_output_keeps_the_old_file(small_disk, suffix):
    import pyarrow as pa

    from deepspark.data.writers import open_table_writer, write_table

    output = small_disk / f"scored{suffix}"
    old = pd.DataFrame({"prediction": [1.0, 2.0]})
    write_table(old, output)
    before = output.read_bytes()
    fill(small_disk, leave=8 * PAGE)
    batch = pa.table({"prediction": np.random.default_rng(0).normal(size=50_000)})
    with pytest.raises(StorageFullError, match=r"choose another --output"):  # noqa: PT012
        with open_table_writer(output, batch.schema, overwrite=True) as writer:
            for _ in range(4):
                writer.write(batch)
    assert output.read_bytes() == before
    assert hidden_files(small_disk) == []
    assert free_bytes(small_disk) >= 8 * PAGE  # the staged file's space is back


def _one_error_line(code, out, err, pattern):
    """Exit 2, nothing on stdout, exactly one ``deepspark: error:`` line matching ``pattern``
    and no traceback (progress lines a resumed run logged before the failure may precede it)."""
    import re

    assert code == 2, err
    assert out == ""
    errors = [line for line in err.splitlines() if line.startswith("deepspark: error: ")]
    assert len(errors) == 1, err
    assert "Traceback" not in err
    assert re.search(pattern, errors[0]), errors[0]
