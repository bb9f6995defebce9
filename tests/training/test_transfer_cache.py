"""A frozen base's features computed once: the head trains on them, the model that comes out
(and every checkpoint) is the whole network taking raw images; augmentation keeps the old path;
early stopping stops a plateau (``min_delta``)."""

from __future__ import annotations

import dataclasses
import logging

import mlflow
import numpy as np
import pandas as pd
import pytest

import deepspark
from deepspark.config import make_config
from deepspark.training.cached_features import base_features, fit_head_on_features, split_at_pool
from deepspark.training.checkpoint import CheckpointStore
from deepspark.training.fit import build_compiled_model, default_callbacks
from deepspark.training.prepare import prepare_data
from deepspark.training.transfer import DEFAULT_MIN_DELTA, set_min_delta
from tests.image_data import pattern_folder

BASE = {"base": "mobilenet_v2", "weights": "none", "base_options": {"alpha": 0.35}}
SMALL = {**BASE, "image_size": "32", "batch_size": 8, "patience": 50, "lr": 0.003}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    folder = pattern_folder(tmp_path_factory.mktemp("photos"), per_class=12, size=32, mess=False)
    return prepare_data(make_config({"data": str(folder), "epochs": 3, **SMALL}))


@pytest.mark.parity  # the head compiled from the model's own config, on torch too
def test_the_head_trains_on_features_and_the_whole_network_comes_out(prepared, tmp_path):
    model = build_compiled_model(prepared)
    store = CheckpointStore(tmp_path / "checkpoints")
    callbacks = default_callbacks(prepared.config, store, log_metrics=False)
    outcome = fit_head_on_features(
        model, prepared, config=prepared.config, callbacks=callbacks, state=None
    )
    assert outcome is not None and outcome.model is model
    assert outcome.epochs_completed == 3 and len(outcome.history) == 3
    assert model.train_function is None  # the whole network never ran a training step
    pixels = prepared.inputs["val"]
    features, head = split_at_pool(model)
    whole = np.asarray(model.predict(pixels, verbose=0))
    np.testing.assert_allclose(
        whole, np.asarray(head.predict(base_features(features, pixels), verbose=0)), atol=1e-5
    )
    # The checkpoint is the whole network (raw uint8 images in) with the head's trained weights.
    state = store.read_state()
    restored = store.load_model(state)
    assert restored.input.dtype == "uint8" and restored.input.shape[1:] == (32, 32, 3)
    if outcome.best_epoch == outcome.epochs_completed - 1:  # else early stopping restored best
        np.testing.assert_allclose(restored.predict(pixels, verbose=0), whole, atol=1e-5)
    assert np.isfinite(outcome.history[-1]["val_loss"])


def test_augmentation_or_a_trainable_base_keeps_the_whole_model_path(prepared):
    from deepspark.models.transfer import unfreeze_top

    config = dataclasses.replace(prepared.config, augment=True)
    model = build_compiled_model(dataclasses.replace(prepared, config=config))
    assert split_at_pool(model) is None
    plain = build_compiled_model(prepared)
    assert split_at_pool(plain) is not None
    unfreeze_top(plain, 4)
    assert split_at_pool(plain) is None


def test_early_stopping_stops_a_plateau_by_min_delta(prepared, tmp_path, caplog):
    callbacks = default_callbacks(prepared.config, CheckpointStore(tmp_path), log_metrics=False)
    with caplog.at_level(logging.INFO, logger="deepspark"):
        set_min_delta(callbacks.early_stopping, prepared.config, log=True)
    assert f"val_loss must improve by at least {DEFAULT_MIN_DELTA:g}" in caplog.text
    stopping = callbacks.early_stopping
    stopping.patience = 2
    stopping.set_model(build_compiled_model(prepared))
    stopping.on_train_begin()
    for epoch, loss in enumerate([1.0, 0.9995, 0.9991, 0.9990]):  # improving by < 1e-3
        stopping.on_epoch_end(epoch, {"val_loss": loss})
    assert stopping.stopped_epoch == 3 and stopping.best_epoch == 0  # min_delta=0: no stop


@pytest.mark.parity  # the head compiled from the model's own config, on torch too
def test_a_head_only_run_computes_the_base_features_once(workdir, caplog):
    folder = pattern_folder(workdir / "photos", per_class=12, size=32, mess=False)
    with caplog.at_level(logging.INFO, logger="deepspark"):
        result = deepspark.train(str(folder), epochs=2, **SMALL)
    # Needs fit.fit_model to route every --base run through training.transfer.fit_transfer.
    assert "frozen base: features of 20 images computed once" in caplog.text
    params = mlflow.get_run(result.run_id).data.params
    assert float(params["min_delta"]) == DEFAULT_MIN_DELTA
    assert result.resumed_from_epoch is None and result.epochs_completed == 2
    paths = sorted(str(path) for path in folder.rglob("*.*"))
    predictions = deepspark.load_model(result.model_uri).predict(pd.DataFrame({"path": paths}))
    assert len(predictions) == 24 and set(predictions["prediction"]) <= {"horizontal", "vertical"}
