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


class _TrainedOnDemand(dict):
    """Task -> ``TrainedModel``, each trained on first use: a test module (one xdist process)
    trains only the tasks its tests ask for."""

    def __init__(self, folder: Path, tracking_uri: str) -> None:
        super().__init__()
        self.folder = folder
        self.tracking_uri = tracking_uri

    def __missing__(self, task: str) -> TrainedModel:
        import mlflow

        import deepspark
        from deepspark.tracking.model import resolve_model_dir

        previous = mlflow.get_tracking_uri()
        cwd = Path.cwd()
        checkpoints = os.environ.get("DEEPSPARK_CHECKPOINT_DIR")
        os.chdir(self.folder)  # MLflow puts the artifacts of a sqlite store under ./mlruns
        os.environ["DEEPSPARK_CHECKPOINT_DIR"] = str(self.folder / "checkpoints")
        try:
            frame = make_table(rows=600, seed=3, task=task)
            path = self.folder / f"{task}.csv"
            frame.to_csv(path, index=False)
            result = deepspark.train(str(path), "y", tracking_uri=self.tracking_uri, **FAST)
            mlflow.set_tracking_uri(self.tracking_uri)
            model_dir = resolve_model_dir(result.model_uri)
        finally:
            os.chdir(cwd)
            if checkpoints is None:
                os.environ.pop("DEEPSPARK_CHECKPOINT_DIR", None)
            else:
                os.environ["DEEPSPARK_CHECKPOINT_DIR"] = checkpoints
            mlflow.set_tracking_uri(previous)
        trained = self[task] = TrainedModel(
            task, result.model_uri, model_dir, self.tracking_uri, frame
        )
        return trained


@pytest.fixture(scope="session")
def trained_models(tmp_path_factory, mlflow_template) -> dict[str, TrainedModel]:
    """``regression``, ``binary`` and ``multiclass`` models (600 rows each), trained on demand."""
    import shutil

    folder = tmp_path_factory.mktemp("spark-models")
    shutil.copy(mlflow_template, folder / "mlflow.db")
    return _TrainedOnDemand(folder, f"sqlite:///{folder / 'mlflow.db'}")
