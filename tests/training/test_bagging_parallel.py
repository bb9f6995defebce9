"""Bagged ensembles with ``workers``: members trained in parallel worker processes."""

from __future__ import annotations

import numpy as np
import pytest

from deepspark.config import make_config
from deepspark.models.bagged import is_bagged, members_of
from deepspark.models.inference import predict_arrays
from deepspark.training.bagging import train_bagged
from deepspark.training.prepare import prepare_data
from tests.conftest import make_table

pytestmark = pytest.mark.distributed

SETTINGS = {"bagging": 2, "hidden": (8,), "epochs": 2, "batch_size": 32, "patience": 2}


def test_parallel_members_make_the_sequential_ensemble(workdir):
    """One 2-worker launch (the seconds go to the workers' imports): each rank trains its
    member, the driver averages them and scores the out-of-fold rows."""
    import mlflow

    import deepspark

    table = make_table(rows=200, seed=3, task="regression")
    result = deepspark.train(table, "y", workers=2, **SETTINGS)
    assert (result.world_size, result.launcher) == (2, "local")
    run = mlflow.get_run(result.run_id)
    assert run.data.tags["deepspark.world_size"] == "2"
    assert {"member_0_best_epoch", "member_1_best_epoch"} <= set(run.data.metrics)
    model = deepspark.load_model(result.model_uri).keras_model
    assert is_bagged(model) and len(members_of(model)) == 2
    # The same split, folds and seeds in one process: the same members.
    config = make_config({"data": "<pandas DataFrame>", "target": "y", **SETTINGS})
    prepared = prepare_data(config, data=table)
    sequential = train_bagged(prepared, 2)
    np.testing.assert_allclose(
        predict_arrays(model, prepared.inputs["test"]),
        predict_arrays(sequential.model, prepared.inputs["test"]),
        atol=1e-5,
        rtol=1e-5,
    )
    assert result.metrics["val_rmse"] == pytest.approx(sequential.oof_metrics["rmse"], rel=1e-5)
    assert result.epochs_completed == max(sequential.member_epochs)
    # The members' files were read back and the run's checkpoint folder removed.
    assert not list((workdir / "checkpoints").glob(f"{result.run_id}/bagging/*"))
