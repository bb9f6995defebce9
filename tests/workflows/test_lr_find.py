"""``find_learning_rate``: data and network as ``train`` prepares them, the plot written, the
run tracked in MLflow."""

import json
import logging

import mlflow
import pytest

from deepspark.errors import UserInputError
from deepspark.training.lr_find import RULE_MIN_OVER_10, RULE_STEEPEST
from deepspark.workflows.lr_find import CURVE_ARTIFACT, PLOT_ARTIFACT, find_learning_rate
from tests.image_data import pattern_folder

PNG = b"\x89PNG\r\n\x1a\n"


def test_table_writes_the_plot_and_logs_the_run(regression_csv, workdir):
    output = workdir / "plots" / "lr.png"
    found = find_learning_rate(
        str(regression_csv), "y", steps=60, hidden=(16,), batch_size=32, output=output
    )
    assert found["rule"] in (RULE_STEEPEST, RULE_MIN_OVER_10)
    assert 1e-7 <= found["suggested_lr"] <= 10.0
    assert found["steps"] <= 60 and found["plot"] == str(output)
    assert output.read_bytes()[:8] == PNG
    json.dumps(found)

    run = mlflow.get_run(found["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == "lr-find"
    assert run.data.metrics["suggested_lr"] == pytest.approx(found["suggested_lr"])
    assert run.data.params["lr_find_steps"] == "60" and run.data.params["hidden"] == "16"
    assert run.data.tags["deepspark.purpose"] == "lr-find"
    artifacts = {item.path for item in mlflow.MlflowClient().list_artifacts(found["run_id"])}
    assert {PLOT_ARTIFACT, CURVE_ARTIFACT} <= artifacts
    assert found["plot_uri"] == f"runs:/{found['run_id']}/{PLOT_ARTIFACT}"
    curve = mlflow.artifacts.load_dict(f"runs:/{found['run_id']}/{CURVE_ARTIFACT}")
    assert len(curve["rates"]) == found["steps"] and curve["suggestion"] == found["suggested_lr"]


def test_image_folder_streamed_without_tracking(tmp_path, workdir, monkeypatch, caplog):
    monkeypatch.setenv("DEEPSPARK_IMAGE_MEMORY_MB", "0")  # decoded a batch at a time
    caplog.set_level(logging.INFO, logger="deepspark")
    folder = pattern_folder(tmp_path / "images", per_class=12, size=16, mess=False)
    found = find_learning_rate(
        str(folder),
        steps=20,
        max_lr=1e-2,
        image_size=16,
        filters=(8,),
        batch_size=8,
        log=False,
        output=tmp_path / "lr.png",
    )
    assert found["run_id"] is None and found["plot_uri"] is None
    assert (tmp_path / "lr.png").read_bytes()[:8] == PNG
    assert found["suggested_lr"] > 0 and found["steps"] == 20
    assert "decoded a batch at a time" in caplog.text
    assert mlflow.search_runs(search_all_experiments=True).empty


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"steps": 0}, r"Invalid --steps: .* Received: steps=0"),
        ({"min_lr": 1e-2, "max_lr": 1e-3}, r"Invalid --min-lr: .* Received: min_lr=0.01"),
        ({"output": "plot.txt"}, r"Invalid --output: .*\.png"),
    ],
)
def test_bad_settings_fail_before_the_data_is_read(workdir, settings, message):
    with pytest.raises(UserInputError, match=message):
        find_learning_rate("no-such-file.csv", "y", **settings)
