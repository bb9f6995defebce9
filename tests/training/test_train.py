"""Training for real: local Keras on torch, a real sqlite MLflow store per test."""

import json

import mlflow
import numpy as np
import pandas as pd
import pytest

import deepspark
from deepspark.errors import TrainingDivergedError
from tests.conftest import FAST, make_table


def test_regression_run_is_tracked_and_model_loads_everywhere(regression_csv, workdir):
    result = deepspark.train(
        str(regression_csv),
        "y",
        hidden=(32, 16),
        epochs=60,
        patience=8,
        batch_size=32,
        run_name="first",
    )
    assert result.metrics["test_r2"] > 0.8
    assert set(result.metrics) >= {
        "val_rmse",
        "val_mse",
        "val_mae",
        "val_sse",
        "test_rmse",
        "test_mae",
        "test_sse",
        "test_mse",
    }
    assert result.metrics["test_rmse"] == pytest.approx(np.sqrt(result.metrics["test_mse"]))
    assert result.rows == {"train": 283, "val": 54, "test": 63}  # split by a hash of each row

    run = mlflow.get_run(result.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "first"
    assert run.data.params["hidden"] == "32,16" and run.data.params["optimizer"] == "adam"
    assert run.data.params["task_resolved"] == "regression"
    history = mlflow.MlflowClient().get_metric_history(result.run_id, "val_rmse")
    assert len(history) >= result.epochs_completed  # per epoch, plus the final evaluation
    assert run.data.metrics["test_rmse"] == pytest.approx(result.metrics["test_rmse"])
    artifacts = {item.path for item in mlflow.MlflowClient().list_artifacts(result.run_id)}
    assert {"loss_curve.png", "feature_schema.json"} <= artifacts
    schema = mlflow.artifacts.load_dict(f"runs:/{result.run_id}/feature_schema.json")
    assert [item["name"] for item in schema["features"]] == ["x1", "x2", "count", "color"]

    raw = make_table(rows=25, seed=9)
    ours = deepspark.load_model(result.model_uri).predict(raw)
    theirs = mlflow.pyfunc.load_model(result.model_uri).predict(raw.drop(columns="y"))
    assert list(ours.columns) == ["prediction"] and ours["prediction"].dtype == np.float64
    np.testing.assert_allclose(ours["prediction"], theirs["prediction"], rtol=1e-6)
    # predictions in target units, close to the truth
    assert np.corrcoef(ours["prediction"], raw["y"])[0, 1] > 0.9
    # checkpoints are removed once the run finished
    assert not (workdir / "checkpoints" / result.run_id).exists()


def test_model_signature_names_raw_columns(regression_csv):
    result = deepspark.train(str(regression_csv), "y", **FAST)
    info = mlflow.models.get_model_info(result.model_uri)
    inputs = {spec["name"]: spec["type"] for spec in info.signature.inputs.to_dict()}
    assert inputs == {"x1": "double", "x2": "double", "count": "double", "color": "string"}
    assert [spec["name"] for spec in info.signature.outputs.to_dict()] == ["prediction"]


def test_binary_classification_probabilities(binary_csv):
    result = deepspark.train(
        str(binary_csv), "y", hidden=(16,), epochs=40, patience=6, batch_size=32
    )
    assert result.task == "binary"
    assert result.metrics["test_accuracy"] > 0.75 and result.metrics["test_auc"] > 0.8
    scored = deepspark.load_model(result.model_uri).predict(make_table(rows=30, task="binary"))
    assert list(scored.columns) == ["prediction", "probability_no", "probability_yes"]
    np.testing.assert_allclose(scored["probability_no"] + scored["probability_yes"], 1.0)
    assert set(scored["prediction"]) <= {"yes", "no"}
    expected = np.where(scored["probability_yes"] > 0.5, "yes", "no")
    assert (scored["prediction"] == expected).all()


def test_multiclass_classification(multiclass_csv):
    result = deepspark.train(
        str(multiclass_csv), "y", hidden=(32,), epochs=40, patience=6, batch_size=32
    )
    assert result.task == "multiclass"
    assert result.metrics["test_accuracy"] > 0.6
    scored = deepspark.load_model(result.model_uri).predict(make_table(rows=20, task="multiclass"))
    probabilities = scored[["probability_high", "probability_low", "probability_mid"]]
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_builtin_dataset_needs_no_target(workdir):
    result = deepspark.train("diabetes", **FAST)
    assert result.rows == {"train": 314, "val": 60, "test": 68}  # split by a hash of each row
    assert result.metrics["test_rmse"] < 90  # target spread is about 77


def test_nan_loss_fails_the_run_with_advice(regression_csv):
    with pytest.raises(
        TrainingDivergedError,
        match=r"loss became NaN or infinite at epoch 1, batch \d+; lower --lr "
        r"\(now 1e\+30\)",
    ):
        deepspark.train(str(regression_csv), "y", optimizer="sgd", lr=1e30, **FAST)
    runs = mlflow.search_runs(experiment_names=["deepspark"])
    assert runs["status"].tolist() == ["FAILED"]


def test_bad_input_fails_before_any_run_is_created(workdir):
    path = workdir / "t.csv"
    make_table(rows=40).to_csv(path, index=False)
    with pytest.raises(deepspark.errors.UserInputError, match="Target column not found"):
        deepspark.train(str(path), "price")
    assert mlflow.get_experiment_by_name("deepspark") is None


def test_unknown_setting_is_rejected(regression_csv):
    with pytest.raises(ValueError, match="Unknown setting learning_rate"):
        deepspark.train(str(regression_csv), "y", learning_rate=0.1)


def test_same_seed_same_metrics(regression_csv):
    first = deepspark.train(str(regression_csv), "y", **FAST)
    second = deepspark.train(str(regression_csv), "y", **FAST)
    assert first.metrics["test_rmse"] == pytest.approx(second.metrics["test_rmse"], rel=1e-5)


def test_runs_listing(regression_csv):
    result = deepspark.train(str(regression_csv), "y", run_name="listed", **FAST)
    listed = deepspark.list_runs("deepspark")
    assert listed[0]["run_id"] == result.run_id and listed[0]["status"] == "FINISHED"
    assert listed[0]["metrics"]["test_rmse"] == pytest.approx(result.metrics["test_rmse"])
    assert listed[0]["model_uri"] == result.model_uri
    json.dumps(listed)
    with pytest.raises(ValueError, match="Experiment not found.*Received: experiment='nope'"):
        deepspark.list_runs("nope")


def test_predict_passes_extra_columns_and_writes_atomically(regression_csv, workdir):
    result = deepspark.train(str(regression_csv), "y", **FAST)
    frame = make_table(rows=12).assign(row_id=range(12))
    output = workdir / "scored.parquet"
    scored = deepspark.predict(result.model_uri, frame, output=output)
    written = pd.read_parquet(output)
    assert list(written.columns) == [*frame.columns, "prediction"]
    assert written["row_id"].tolist() == list(range(12))
    np.testing.assert_allclose(written["prediction"], scored["prediction"])
    with pytest.raises(ValueError, match="Output already exists; pass --overwrite"):
        deepspark.predict(result.model_uri, frame, output=output)
    assert not list(workdir.glob(".*partial*"))
