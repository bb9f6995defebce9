"""Models trained once for the Spark tests, in their own MLflow store."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import FAST, make_table


@dataclasses.dataclass(frozen=True)
class TrainedModel:
    task: str
    model_uri: str  # models:/... in ``tracking_uri``
    model_dir: Path  # the same model as a local folder (needs no MLflow store)
    tracking_uri: str
    data: pd.DataFrame


@pytest.fixture(scope="session")
def trained_models(tmp_path_factory, mlflow_template) -> dict[str, TrainedModel]:
    import shutil

    import mlflow

    import deepspark
    from deepspark.tracking.model import resolve_model_dir

    folder = tmp_path_factory.mktemp("spark-models")
    shutil.copy(mlflow_template, folder / "mlflow.db")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri()
    cwd = Path.cwd()
    os.chdir(folder)  # MLflow puts the artifacts of a sqlite store under ./mlruns
    os.environ["DEEPSPARK_CHECKPOINT_DIR"] = str(folder / "checkpoints")
    models = {}
    try:
        for task in ("regression", "binary", "multiclass"):
            frame = make_table(rows=600, seed=3, task=task)
            path = folder / f"{task}.csv"
            frame.to_csv(path, index=False)
            result = deepspark.train(str(path), "y", tracking_uri=uri, **FAST)
            mlflow.set_tracking_uri(uri)
            model_dir = resolve_model_dir(result.model_uri)
            models[task] = TrainedModel(task, result.model_uri, model_dir, uri, frame)
    finally:
        os.chdir(cwd)
        os.environ.pop("DEEPSPARK_CHECKPOINT_DIR", None)
        mlflow.set_tracking_uri(previous)
    return models
