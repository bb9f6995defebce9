"""``--tensorboard DIR``: TensorBoard event files (written by tensorboardX, no TensorFlow) read
back with TensorBoard's own event reader, equal to the run's MLflow history; also logged to the
run under ``tensorboard/``. A distributed run (its driver writes the files) is checked in
``tests/distributed/test_train_distributed.py``."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import deepspark
from deepspark.cli.main import main
from deepspark.training.tensorboard import is_epoch_metric, scalar_location
from tests.conftest import FAST

FAST_OPTIONS = ["--hidden", "16", "--epochs", "8", "--batch-size", "32", "--patience", "3"]


def tensorboard_curves(log_dir: Path) -> dict[str, dict[int, float]]:
    """metric (MLflow name) -> {step: value}, read by TensorBoard's event reader."""
    names = {
        ("train", "epoch_learning_rate"): "learning_rate",
    }
    curves = {}
    for folder, prefix in (("train", "train_"), ("validation", "val_")):
        accumulator = EventAccumulator(str(log_dir / folder), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            name = names.get((folder, tag), prefix + tag.removeprefix("epoch_"))
            curves[name] = {event.step: event.value for event in accumulator.Scalars(tag)}
    return curves


def mlflow_curves(run_id: str) -> dict[str, dict[int, float]]:
    """The run's per-epoch curves as MLflow holds them (the final whole-split scores, logged at
    step = epochs_completed, left out)."""
    client = mlflow.MlflowClient()
    metrics = client.get_run(run_id).data.metrics
    epochs = metrics["epochs_completed"]
    curves = {}
    for name in filter(is_epoch_metric, metrics):
        points = {
            m.step: m.value for m in client.get_metric_history(run_id, name) if m.step < epochs
        }
        if points:
            curves[name] = points
    return curves


def assert_same_curves(log_dir: Path, run_id: str) -> dict[str, dict[int, float]]:
    written, logged = tensorboard_curves(log_dir), mlflow_curves(run_id)
    assert sorted(written) == sorted(logged)
    for name, points in logged.items():
        assert sorted(written[name]) == sorted(points), name
        for step, value in points.items():
            assert written[name][step] == pytest.approx(value, rel=1e-6), (name, step)
    return written


def assert_logged_to_run(log_dir: Path, run_id: str) -> None:
    """The run's event files are its artifacts under tensorboard/train and /validation."""
    client = mlflow.MlflowClient()
    for folder in ("train", "validation"):
        local = sorted(path.name for path in (log_dir / folder).iterdir())
        logged = [
            Path(item.path).name for item in client.list_artifacts(run_id, f"tensorboard/{folder}")
        ]
        assert logged == local and all(name.endswith(run_id) for name in logged)


def assert_logged_to_run_only_own(log_dir: Path, run_id: str) -> None:
    client = mlflow.MlflowClient()
    logged = [Path(item.path).name for item in client.list_artifacts(run_id, "tensorboard/train")]
    assert len(logged) == 1 and logged[0].endswith(run_id)


def run_main(args: list[str], capsys) -> dict:
    with pytest.raises(SystemExit) as exit:
        main(args)
    captured = capsys.readouterr()
    assert exit.value.code == 0, captured.err
    return json.loads(captured.out)


def test_scalar_locations_follow_keras_layout():
    assert scalar_location("val_rmse") == ("validation", "epoch_rmse")
    assert scalar_location("train_loss") == ("train", "epoch_loss")
    assert scalar_location("learning_rate") == ("train", "epoch_learning_rate")


def test_train_cli_writes_every_epoch_metric_and_logs_the_files(workdir, regression_csv, capsys):
    log_dir = workdir / "tb"
    document = run_main(
        ["train", "--data", str(regression_csv), "--target", "y", *FAST_OPTIONS,
         "--lr", "0.01", "--tensorboard", str(log_dir), "--json"],
        capsys,
    )  # fmt: skip
    run_id = document["run_id"]
    curves = assert_same_curves(log_dir, run_id)
    assert {"train_loss", "val_loss", "train_rmse", "val_rmse", "learning_rate"} <= set(curves)
    assert sorted(curves["val_loss"]) == list(range(document["epochs_completed"]))
    assert curves["learning_rate"][0] == pytest.approx(0.01)
    assert_logged_to_run(log_dir, run_id)
    # A second run into the same folder adds its own files; each run logs only its own.
    again = deepspark.train(str(regression_csv), "y", tensorboard=str(log_dir), **FAST)
    assert len(list((log_dir / "train").iterdir())) == 2
    assert_logged_to_run_only_own(log_dir, again.run_id)


def test_tune_writes_one_folder_per_trial_and_best(workdir, regression_csv, capsys):
    pytest.importorskip("optuna", reason="the tune extra is not installed")
    log_dir = workdir / "tb"
    document = run_main(
        ["tune", "--data", str(regression_csv), "--target", "y", "--trials", "2",
         "--epochs", "2", "--batch-size", "64", "--patience", "2", "--space", "layers=1",
         "--space", "width=8:16", "--tensorboard", str(log_dir), "--json"],
        capsys,
    )  # fmt: skip
    assert sorted(path.name for path in log_dir.iterdir()) == ["best", "trial-000", "trial-001"]
    client = mlflow.MlflowClient()
    children = client.search_runs(
        [client.get_run(document["run_id"]).info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{document['run_id']}'",
    )
    trials = {run.info.run_name: run.info.run_id for run in children}
    for name in ("trial-000", "trial-001"):
        assert_same_curves(log_dir / name, trials[name])
        assert_logged_to_run(log_dir / name, trials[name])
    assert_same_curves(log_dir / "best", document["best_run_id"])
    assert_logged_to_run(log_dir / "best", document["best_run_id"])


@pytest.mark.slow
def test_fine_tune_writes_both_phases(workdir, capsys):
    from tests.image_data import pattern_folder

    folder = pattern_folder(workdir / "patterns", per_class=8, size=32)
    log_dir = workdir / "tb"
    document = run_main(
        ["train", "--data", str(folder), "--base", "mobilenet", "--weights", "none",
         "--base-option", "alpha=0.25", "--image-size", "32", "--epochs", "1",
         "--fine-tune-layers", "all", "--fine-tune-epochs", "1", "--fine-tune-lr", "1e-4",
         "--lr", "3e-3", "--batch-size", "8", "--patience", "5", "--tensorboard", str(log_dir),
         "--json"],
        capsys,
    )  # fmt: skip
    curves = assert_same_curves(log_dir, document["run_id"])
    assert curves["learning_rate"] == {0: pytest.approx(3e-3), 1: pytest.approx(1e-4)}
    assert sorted(curves["val_accuracy"]) == [0, 1]
