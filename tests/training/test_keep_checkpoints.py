"""``keep_checkpoints`` (``--keep-checkpoints``): the best and last epoch's model as run
artifacts, loaded back with ``load_checkpoint``; MLflow params hold the chosen model's settings
only."""

import mlflow
import numpy as np
import pytest

import deepspark
from deepspark.errors import UserInputError
from deepspark.training.checkpoint import load_checkpoint
from tests.conftest import FAST


def test_kept_checkpoints_load_and_params_fit_the_model(regression_csv, workdir):
    result = deepspark.train(
        str(regression_csv), "y", model="mlp", keep_checkpoints=True, **{**FAST, "epochs": 3}
    )
    artifacts = {
        item.path for item in mlflow.MlflowClient().list_artifacts(result.run_id, "checkpoints")
    }
    assert artifacts == {"checkpoints/best.keras", "checkpoints/last.keras"}
    best = load_checkpoint(result.run_id, which="best")
    last = load_checkpoint(result.run_id, which="last")
    logged = deepspark.load_model(result.model_uri).keras_model
    for left, right in zip(best.get_weights(), logged.get_weights(), strict=True):
        np.testing.assert_array_equal(left, right)  # best: the weights the run's model has
    assert int(last.optimizer.iterations) == int(best.optimizer.iterations) > 0
    # checkpoints of a finished run are still removed from the store; the artifacts stay
    assert not (workdir / "checkpoints" / result.run_id).exists()

    params = mlflow.get_run(result.run_id).data.params
    assert {"hidden", "activation", "dropout", "lr", "epochs", "keep_checkpoints"} <= set(params)
    assert not {
        "ensemble_size",
        "numeric_embedding",
        "embedding_sigma",
        "filters",
        "weights",
        "base",
    } & set(params)
    assert result.coefficients is None and result.intercept is None  # a non-linear MLP


def test_load_checkpoint_says_how_to_keep_them(regression_csv):
    result = deepspark.train(str(regression_csv), "y", model="mlp", **{**FAST, "epochs": 1})
    with pytest.raises(UserInputError, match="keep_checkpoints=True"):
        load_checkpoint(result.run_id)
    with pytest.raises(UserInputError, match="'best' or 'last'"):
        load_checkpoint(result.run_id, which="first")
    params = mlflow.get_run(result.run_id).data.params
    assert params["keep_checkpoints"] == "False"
    assert not {"ensemble_size", "filters"} & set(params)
