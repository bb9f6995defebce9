"""``--model linear`` and ``--activation linear``: linear / logistic regression whose coefficients
and intercept come back in the raw columns' units."""

import json

import mlflow
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import deepspark
from tests.conftest import make_table


def _linear_table(rows: int = 500, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x1 = rng.normal(10.0, 3.0, rows)
    x2 = rng.uniform(-5.0, 5.0, rows)
    y = 3.0 * x1 - 2.0 * x2 + 5.0 + rng.normal(0.0, 0.1, rows)
    return pd.DataFrame({"x1": x1, "x2": x2, "y": y})


def test_linear_regression_recovers_raw_coefficients(workdir):
    result = deepspark.train(
        _linear_table(), "y", model="linear", optimizer="sgd", lr=0.3, epochs=6, batch_size=32
    )
    assert result.coefficients["x1"] == pytest.approx(3.0, rel=0.02)
    assert result.coefficients["x2"] == pytest.approx(-2.0, rel=0.02)
    assert result.intercept == pytest.approx(5.0, rel=0.02)
    logged = mlflow.artifacts.load_dict(f"runs:/{result.run_id}/coefficients.json")
    assert logged == {"coefficients": result.coefficients, "intercept": result.intercept}
    params = mlflow.get_run(result.run_id).data.params
    assert params["model"] == "linear"
    assert not {"hidden", "activation", "ensemble_size", "filters"} & set(params)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _logits(rows: pd.DataFrame, coefficients: dict, intercept: float, schema_names) -> np.ndarray:
    """``intercept + sum(coefficient * raw value)`` with categories as 0/1 columns."""
    total = np.full(len(rows), intercept, dtype=np.float64)
    for name, value in coefficients.items():
        if "=" in name:
            column, level = name.split("=", 1)
            present = rows[column].astype(object).where(rows[column].notna(), "<missing>")
            total += value * (present.astype(str) == level).to_numpy()
        elif name.startswith("log1p("):
            total += value * np.log1p(rows[name[6:-1]].to_numpy())
        else:
            total += value * rows[name].to_numpy()
    return total


def test_cli_multiclass_logistic_regression_reports_per_class_coefficients(multiclass_csv, workdir):
    from deepspark.cli.main import cli

    arguments = ["train", "--data", str(multiclass_csv), "--target", "y", "--model", "linear"]
    arguments += ["--epochs", "3", "--batch-size", "64", "--json"]
    outcome = CliRunner().invoke(cli, arguments)
    assert outcome.exit_code == 0, outcome.output
    document = json.loads(outcome.stdout)
    assert set(document["coefficients"]) == {"high", "low", "mid"}
    per_class = document["coefficients"]["low"]
    assert {"x1", "x2", "count", "x2=<missing>", "color=red", "color=<missing>"} <= set(per_class)
    # The reported numbers are the model: softmax of the raw-unit logits is its probabilities.
    rows = make_table(rows=30, seed=5, task="multiclass").dropna(subset=["x2"])
    model = deepspark.load_model(document["model_uri"])
    probabilities = model.predict_output(rows.drop(columns="y"))
    labels = list(model.schema.class_labels)
    logits = np.stack(
        [
            _logits(rows, document["coefficients"][label], document["intercept"][label], labels)
            for label in labels
        ],
        axis=1,
    )
    np.testing.assert_allclose(_softmax(logits), np.asarray(probabilities), atol=1e-4)


def test_activation_linear_mlp_is_a_linear_model_with_coefficients(regression_csv):
    result = deepspark.train(
        str(regression_csv), "y", activation="linear", hidden=(4, 3), epochs=2, batch_size=64
    )
    params = mlflow.get_run(result.run_id).data.params
    assert params["model"] == "mlp" and params["activation"] == "linear"
    assert "log1p(count)" in result.coefficients  # the MLP log-scales the skewed column
    rows = make_table(rows=30, seed=3).dropna(subset=["x2"])
    expected = _logits(rows, result.coefficients, result.intercept, None)
    predicted = deepspark.load_model(result.model_uri).predict(rows.drop(columns="y"))
    np.testing.assert_allclose(predicted["prediction"], expected, rtol=1e-4, atol=1e-3)
