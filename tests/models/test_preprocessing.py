import numpy as np
import pytest

from deepspark._backend import import_keras
from deepspark.models.preprocessing import (
    Denormalize,
    NumericPreprocessor,
    StandardizedLoss,
    fit_numeric_stats,
)

keras = import_keras()


def numeric_sample(rows=500, seed=0):
    rng = np.random.default_rng(seed)
    values = np.stack([rng.normal(5, 2, rows), rng.lognormal(3, 1.5, rows)], axis=1)
    values[rng.choice(rows, min(25, rows // 4), replace=False), 0] = np.nan
    return values.astype(np.float32)


def test_stats_pick_log_for_skewed_columns_and_record_missing():
    stats = fit_numeric_stats(numeric_sample())
    assert stats.log_columns == (1,)
    assert stats.missing_columns == (0,)
    assert stats.mean[0] == pytest.approx(5, abs=0.3)


def test_preprocessor_matches_numpy_reference():
    values = numeric_sample()
    stats = fit_numeric_stats(values)
    layer = NumericPreprocessor(stats.mean, stats.scale, stats.log_columns, stats.missing_columns)
    output = keras.ops.convert_to_numpy(layer(values))
    expected = values.astype(np.float64).copy()
    expected[:, 1] = np.log1p(expected[:, 1])
    expected = (expected - np.array(stats.mean)) / np.array(stats.scale)
    missing = np.isnan(expected[:, 0])
    expected[missing, 0] = 0.0
    assert output.shape == (500, 3)
    np.testing.assert_allclose(output[:, :2], expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(output[:, 2], missing.astype(np.float32))
    # standardized on the data it was learned on
    assert np.nanmean(output[~missing, 0]) == pytest.approx(0, abs=0.1)


def test_model_with_custom_layers_round_trips_in_safe_mode(tmp_path):
    stats = fit_numeric_stats(numeric_sample())
    inputs = keras.Input((2,))
    hidden = NumericPreprocessor(stats.mean, stats.scale, stats.log_columns, stats.missing_columns)(
        inputs
    )
    outputs = Denormalize(100.0, 10.0)(keras.layers.Dense(1)(hidden))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss=StandardizedLoss("huber", center=100.0, scale=10.0))
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    sample = numeric_sample(rows=8, seed=1)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(sample)),
        keras.ops.convert_to_numpy(model(sample)),
        rtol=1e-6,
    )
    assert loaded.loss.base == "huber" and loaded.loss.scale == 10.0


def test_standardized_loss_is_mse_over_scale_squared():
    rng = np.random.default_rng(0)
    truth = rng.normal(200, 50, (64, 1)).astype(np.float32)
    prediction = truth + rng.normal(0, 20, (64, 1)).astype(np.float32)
    loss = StandardizedLoss("mse", center=200.0, scale=50.0)
    value = float(keras.ops.convert_to_numpy(loss(truth, prediction)))
    assert value == pytest.approx(np.mean((truth - prediction) ** 2) / 50.0**2, rel=1e-5)
