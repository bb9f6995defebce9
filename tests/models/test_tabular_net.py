"""The tabular network (``--model tabular_net``): its layers, its builder, training through
``deepspark.train`` on several seeds, saving, backend parity, and additive explanations."""

from __future__ import annotations

import subprocess
import sys

import keras
import numpy as np
import pytest

import deepspark
from deepspark.config import TrainConfig, make_config
from deepspark.data.encoding import encode_features
from deepspark.data.schema import infer_schema, learn_vocabularies
from deepspark.errors import UserInputError
from deepspark.models import fit_numeric_stats
from deepspark.models.builders import BuildContext, build_model
from deepspark.models.tabular_layers import EnsembleDense, EnsembleHead, SmoothClip
from deepspark.models.tabular_net import build_tabular_net, robust_statistics
from tests.conftest import make_table

SMALL = {"hidden": (16, 8), "ensemble_size": 4}
FAST_NET = {**SMALL, "epochs": 8, "batch_size": 32, "patience": 3}


def prepared(task="regression", rows=120):
    schema, frame = infer_schema(make_table(rows=rows, task=task), "y")
    schema = learn_vocabularies(schema, frame)
    inputs = encode_features(frame, schema)
    return schema, inputs, fit_numeric_stats(inputs["numeric"])


def _numpy(tensor) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(tensor))


@pytest.mark.parametrize(("task", "width"), [("regression", 1), ("binary", 1), ("multiclass", 3)])
def test_builds_for_every_task_with_the_usual_output_names(task, width):
    schema, inputs, stats = prepared(task=task, rows=150)
    config = TrainConfig(data="x", **SMALL)
    model = build_tabular_net(schema, stats, config, numeric_train=inputs["numeric"])
    output = _numpy(model(inputs, training=False))
    assert output.shape == (150, width)
    names = [layer.name for layer in model.layers]
    assert names[-1] == ("prediction" if task == "regression" else "probability")
    assert {"features", "numeric_preprocessing", "smooth_clip", "periodic_embedding"} <= set(names)
    if task == "multiclass":
        np.testing.assert_allclose(output.sum(axis=1), 1.0, rtol=1e-5)
    if task == "binary":
        assert ((output > 0) & (output < 1)).all()


def test_settings_change_the_network():
    schema, inputs, stats = prepared()
    plain = build_tabular_net(
        schema, stats, TrainConfig(data="x", hidden=(8,), ensemble_size=1, numeric_embedding="none")
    )
    names = [layer.name for layer in plain.layers]
    assert "periodic_embedding" not in names
    assert plain.get_layer("ensemble_dense_1").output.shape[1:] == (1, 8)
    assert _numpy(plain(inputs)).shape == (120, 1)


def test_registered_as_a_tabular_builder():
    schema, inputs, stats = prepared()
    context = BuildContext(schema, stats, TrainConfig(data="x", **SMALL), 5.0, 2.0)
    model = build_model(context, "tabular_net")
    assert model.name == "deepspark_tabular_net"
    with pytest.raises(UserInputError, match="takes tabular data"):
        from deepspark.models.builders import check_model

        check_model("tabular_net", "image")


def test_smooth_clip_is_near_identity_in_the_bulk_and_bounded_outside():
    layer = SmoothClip(2, center=[1.0, 0.0], scale=[2.0, 1.0], bound=3.0)
    values = np.array([[1.0, 0.1, 7.0], [1e6, -1e30, -7.0], [13.0, 6.0, 0.0]], "float32")
    out = _numpy(layer(values))
    np.testing.assert_allclose(out[0, :2], [0.0, 0.1], atol=1e-3)
    np.testing.assert_allclose(out[1, :2], [3.0, -3.0], rtol=1e-6)  # no overflow to 0 or NaN
    np.testing.assert_allclose(out[2, :2], [6.0 / np.sqrt(5.0), 6.0 / np.sqrt(5.0)], rtol=1e-6)
    np.testing.assert_array_equal(out[:, 2], [7.0, -7.0, 0.0])  # indicators, one-hot pass through


def test_robust_statistics_use_quartiles_of_present_values():
    rng = np.random.default_rng(0)
    column = rng.normal(10.0, 4.0, size=2000)
    outlier = column.copy()
    outlier[:20] = 1e6  # 1 % wild values move the mean and deviation, not the quartiles
    outlier[20:40] = np.nan
    numeric = np.stack([outlier, np.full(2000, 3.0)], axis=1)
    stats = fit_numeric_stats(numeric)
    center, scale = robust_statistics(stats, numeric)
    standardized_median = (np.nanmedian(outlier) - stats.mean[0]) / stats.scale[0]
    assert center[0] == pytest.approx(standardized_median, rel=1e-3)
    assert scale[0] == pytest.approx(4.0 / stats.scale[0], rel=0.1)
    assert scale[1] == 1.0  # a constant column keeps scale 1
    assert robust_statistics(stats, None) == ([0.0, 0.0], [1.0, 1.0])


def test_ensemble_members_start_different_and_share_the_kernel():
    import keras

    # Seeded: two members' random signs over 4 inputs coincide by chance 1 time in 16.
    keras.utils.set_random_seed(3)
    layer = EnsembleDense(5, 3, random_signs=True)
    out = _numpy(layer(np.ones((2, 4), "float32")))
    assert out.shape == (2, 3, 5)
    assert set(np.unique(_numpy(layer.input_adapter))) <= {-1.0, 1.0}
    assert not np.allclose(out[:, 0], out[:, 1])  # members differ from the first step
    assert [tuple(weight.shape) for weight in layer.weights][0] == (4, 5)  # one shared kernel


def test_training_loss_is_the_mean_of_the_members_own_losses():
    """MSE on the average + the members' variance = the mean of the members' MSEs (TabM trains
    each member on its own loss); evaluation scores the average alone."""
    inputs = keras.Input((4, 3))
    head = EnsembleHead(1, 4, "regression", member_loss=True)
    model = keras.Model(inputs, head(inputs))
    model.compile(keras.optimizers.SGD(0.0), "mse")
    data = np.random.default_rng(0).normal(size=(32, 4, 3)).astype("float32")
    target = np.zeros((32, 1), "float32")
    history = model.fit(data, target, batch_size=32, epochs=1, verbose=0)
    members = np.einsum("bku,kuo->bko", data, _numpy(head.kernel))
    assert history.history["loss"][0] == pytest.approx(np.mean(members**2), rel=1e-4)
    assert model.evaluate(data, target, verbose=0) == pytest.approx(
        np.mean(members.mean(axis=1) ** 2), rel=1e-4
    )


def test_settings_are_validated():
    with pytest.raises(UserInputError, match="ensemble-size"):
        make_config({"data": "x", "ensemble_size": 0})
    with pytest.raises(UserInputError, match="numeric-embedding: unknown value"):
        make_config({"data": "x", "numeric_embedding": "fourier"})
    for bad in (0, -1.0, float("nan"), float("inf"), True, "wide"):
        with pytest.raises(UserInputError, match="embedding-sigma: must be a positive number"):
            make_config({"data": "x", "embedding_sigma": bad})


def test_embedding_sigma_is_smooth_on_small_tables_and_finer_on_larger_ones():
    from deepspark.config import SMOOTH_EMBEDDING_ROWS, default_embedding_sigma, with_data_defaults

    assert SMOOTH_EMBEDDING_ROWS == 3_000
    assert default_embedding_sigma(3_000) == 0.1 and default_embedding_sigma(3_001) == 3.0
    assert default_embedding_sigma(None) == 3.0  # a streamed table of unknown size
    auto = TrainConfig(data="x")
    assert auto.embedding_sigma is None
    assert with_data_defaults(auto, "tabular", rows=500).embedding_sigma == 0.1
    assert with_data_defaults(auto, "tabular", rows=20_000).embedding_sigma == 3.0
    assert with_data_defaults(auto, "image").embedding_sigma is None  # tables only
    chosen = TrainConfig(data="x", embedding_sigma=0.3)
    assert with_data_defaults(chosen, "tabular", rows=20_000).embedding_sigma == 0.3
    schema, inputs, stats = prepared()
    for sigma, expected in ((None, 0.1), (2.5, 2.5)):  # None: built outside train
        config = TrainConfig(data="x", **SMALL, embedding_sigma=sigma)
        model = build_tabular_net(schema, stats, config, numeric_train=inputs["numeric"])
        assert model.get_layer("periodic_embedding").sigma == expected


@pytest.mark.parity
def test_train_resolves_embedding_sigma_by_rows_and_logs_it(workdir):
    import mlflow

    quick = {"hidden": (8,), "ensemble_size": 1, "epochs": 1, "batch_size": 256}
    for rows, expected in ((400, "0.1"), (3_200, "3.0")):
        result = deepspark.train(make_table(rows=rows, seed=5), "y", bagging=1, **quick)
        assert mlflow.get_run(result.run_id).data.params["embedding_sigma"] == expected
        model = deepspark.load_model(result.model_uri).keras_model
        assert model.get_layer("periodic_embedding").sigma == float(expected)


def _fit_on_make_table(config: TrainConfig, seed: int, epochs: int):
    """The network fit on ``make_table`` (300 rows) for a few epochs; its model and RMSE on
    200 other rows, with the target's own deviation."""
    keras.utils.set_random_seed(seed)
    schema, frame = infer_schema(make_table(rows=300, seed=seed), "y")
    schema = learn_vocabularies(schema, frame)
    inputs = encode_features(frame, schema)
    target = frame["y"].to_numpy("float32")
    stats = fit_numeric_stats(inputs["numeric"])
    model = build_tabular_net(
        schema,
        stats,
        config,
        target_center=float(target.mean()),
        target_scale=float(target.std()),
        numeric_train=inputs["numeric"],
    )
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    model.fit(inputs, target, epochs=epochs, batch_size=50, verbose=0)  # no partial batch
    held_out = make_table(rows=200, seed=seed + 100)
    predicted = _numpy(model.predict(encode_features(held_out, schema), verbose=0))
    errors = predicted.reshape(-1) - held_out["y"].to_numpy()
    return model, float(np.sqrt(np.mean(errors**2))), float(held_out["y"].std())


@pytest.mark.parametrize("seed", [0, 1])
def test_learns_a_table_on_every_seed(seed):
    _, rmse, spread = _fit_on_make_table(TrainConfig(data="x", **SMALL), seed, epochs=15)
    assert rmse < 0.35 * spread


@pytest.mark.parity
def test_trains_saves_and_loads_on_this_backend(tmp_path):
    model, rmse, spread = _fit_on_make_table(TrainConfig(data="x", **SMALL), 0, epochs=10)
    assert rmse < 0.5 * spread
    schema, inputs, _ = prepared(rows=50)
    path = tmp_path / "net.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(
        _numpy(loaded.predict(inputs, verbose=0)),
        _numpy(model.predict(inputs, verbose=0)),
        rtol=1e-5,
    )


def test_train_logs_a_model_whose_gradient_explanations_are_additive(regression_csv, workdir):
    result = deepspark.train(str(regression_csv), "y", model="tabular_net", seed=3, **FAST_NET)
    assert result.metrics["test_rmse"] < 25.0  # the target's deviation is about 40
    explained = deepspark.explain(
        result.model_uri,
        str(regression_csv),
        method="gradient",
        rows=10,
        background=20,
        seed=3,
        log_to_mlflow=False,
    )
    assert explained.summary["max_additivity_error"] <= 0.01


def test_a_saved_network_loads_in_a_fresh_process(tmp_path):
    schema, inputs, stats = prepared(rows=50)
    model = build_tabular_net(schema, stats, TrainConfig(data="x", **SMALL))
    path = tmp_path / "net.keras"
    model.save(path)
    code = (
        "import sys; from deepspark.models.loader import load_keras_model; "
        "load_keras_model(sys.argv[1], compile=False)"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr[-500:]
