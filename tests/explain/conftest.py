"""Tiny trained models shared by the explanation tests (trained once per session)."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import FAST, make_table


@dataclasses.dataclass(frozen=True)
class Trained:
    model_uri: str
    run_id: str
    data: Path
    tracking_uri: str
    folder: Path


def _train(folder: Path, tracking_uri: str, task: str) -> Trained:
    import deepspark

    data = folder / f"{task}.csv"
    make_table(rows=300, seed=1, task=task).to_csv(data, index=False)
    result = deepspark.train(str(data), "y", **FAST, seed=3, tracking_uri=tracking_uri)
    return Trained(result.model_uri, result.run_id, data, tracking_uri, folder)


@pytest.fixture(scope="session")
def explain_store(tmp_path_factory, mlflow_template) -> tuple[Path, str]:
    folder = tmp_path_factory.mktemp("explain")
    database = folder / "mlflow.db"
    shutil.copy(mlflow_template, database)
    return folder, f"sqlite:///{database}"


@pytest.fixture(scope="session")
def regression_model(explain_store) -> Trained:
    return _train(*explain_store, "regression")


@pytest.fixture(scope="session")
def binary_model(explain_store) -> Trained:
    return _train(*explain_store, "binary")


@pytest.fixture(scope="session")
def untrained_multiclass(tmp_path_factory):
    """A multiclass deepspark model with initial weights (no training: fast), and its data."""
    from deepspark.config import make_config
    from deepspark.models.mlp import build_mlp
    from deepspark.models.preprocessing import fit_numeric_stats
    from deepspark.tracking.model import DeepsparkModel
    from deepspark.training.prepare import prepare_data

    data = tmp_path_factory.mktemp("multiclass") / "multiclass.csv"
    make_table(rows=300, seed=1, task="multiclass").to_csv(data, index=False)
    config = make_config({"data": str(data), "target": "y", "hidden": (16, 8), "seed": 3})
    prepared = prepare_data(config)
    keras_model = build_mlp(prepared.schema, fit_numeric_stats(prepared.numeric_train), config)
    return DeepsparkModel(keras_model, prepared.schema), pd.read_csv(data)


@pytest.fixture(scope="session")
def quadrant_cnn():
    """A CNN trained on the quadrant task (directly with Keras: seconds) and its images."""
    from tests.explain.quadrants import trained_quadrant_cnn

    return trained_quadrant_cnn()


@pytest.fixture(scope="session")
def image_run(explain_store) -> Trained:
    """A small CNN trained by ``deepspark.train`` on a quadrant folder: a real MLflow run."""
    import deepspark
    from tests.explain.quadrants import quadrant_folder

    folder, tracking_uri = explain_store
    data = quadrant_folder(folder / "quadrants", per_class=24, seed=5)
    result = deepspark.train(
        str(data), filters=(8, 16), epochs=2, image_size=32, seed=3, tracking_uri=tracking_uri
    )
    return Trained(result.model_uri, result.run_id, data, tracking_uri, folder)
