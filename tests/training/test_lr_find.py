"""The learning-rate range test: its schedule, divergence stop, suggestion rule, the untouched
original model, and a suggestion that trains."""

import math

import keras
import numpy as np
import pytest

from deepspark.config import make_config
from deepspark.errors import UserInputError
from deepspark.training.fit import build_compiled_model
from deepspark.training.lr_find import (
    RULE_MIN_OVER_10,
    RULE_STEEPEST,
    LRRangeTest,
    lr_find,
    plot_lr_find,
    suggest_learning_rate,
)
from deepspark.training.prepare import prepare_data
from tests.conftest import make_table


def _ramp_model():
    """``w * x`` with x = 1 and loss ``1000 - w``: each SGD step adds exactly its rate to w."""
    inputs = keras.Input((1,))
    outputs = keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")(inputs)
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer=keras.optimizers.SGD(0.5),
        loss=lambda target, prediction: 1000.0 - keras.ops.mean(prediction),
    )
    return model


def _small_regression(seed: int = 0, *, optimizer: str = "adam"):
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(256, 4)).astype("float32")
    y = (x @ np.array([1.0, -2.0, 0.5, 3.0]) + 0.1 * rng.normal(size=256)).astype("float32")
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)]
    )
    optimizers = {"adam": keras.optimizers.Adam(1e-3), "sgd": keras.optimizers.SGD(1e-2)}
    model.compile(optimizer=optimizers[optimizer], loss="mse")
    return model, x, y.reshape(-1, 1)


@pytest.mark.parity
def test_schedule_is_exponential_hits_both_ends_and_is_what_the_optimizer_applies():
    model = _ramp_model()
    test = LRRangeTest(min_lr=1e-3, max_lr=1e-1, steps=20)
    x, y = np.ones((40, 1), "float32"), np.zeros((40, 1), "float32")
    model.fit(x, y, batch_size=8, epochs=4, shuffle=False, verbose=0, callbacks=[test])

    rates = np.array(test.rates_)
    assert len(rates) == 20 and not test.stopped_early_  # 5 batches an epoch: 4 epochs cycled
    assert rates[0] == pytest.approx(1e-3, rel=1e-12) and rates[-1] == pytest.approx(1e-1)
    np.testing.assert_allclose(rates[1:] / rates[:-1], (1e-1 / 1e-3) ** (1 / 19), rtol=1e-9)
    # The loss is 1000 - w and each step adds its rate to w: the optimizer used every rate.
    kernel = float(keras.ops.convert_to_numpy(model.layers[-1].kernel)[0, 0])
    assert kernel == pytest.approx(rates.sum(), rel=1e-5)
    # each step's own loss (Keras logs a running mean over the epoch; the callback resets it)
    expected = 1000.0 - np.concatenate([[0.0], np.cumsum(rates)[:-1]])
    np.testing.assert_allclose(test.losses_, expected, rtol=1e-6)


def test_smoothed_loss_is_bias_corrected_moving_average():
    model = _ramp_model()
    test = LRRangeTest(min_lr=1e-3, max_lr=1e-2, steps=5)
    model.fit(
        np.ones((5, 1)), np.zeros((5, 1)), batch_size=1, epochs=1, verbose=0, callbacks=[test]
    )
    average, expected = 0.0, []
    for step, loss in enumerate(test.losses_, start=1):
        average = 0.98 * average + 0.02 * loss
        expected.append(average / (1 - 0.98**step))
    np.testing.assert_allclose(test.smoothed_, expected, rtol=1e-12)
    assert test.smoothed_[0] == test.losses_[0]


def test_divergence_stops_early_on_a_real_model():
    model, x, y = _small_regression(optimizer="sgd")
    result = lr_find(model, x, y, batch_size=32, min_lr=1e-4, max_lr=1e3, steps=120)
    assert result.stopped_early
    assert len(result.rates) < 120
    assert result.smoothed[-1] > 4 * min(result.smoothed) or not math.isfinite(result.losses[-1])
    assert 1e-4 < result.suggestion < 1e3


def _curve(log_rates, centre, *, floor=0.2, blow_up_at=None):
    """A loss that falls (logistic in log10 lr) around ``centre`` and, optionally, blows up."""
    loss = 1.0 - (1.0 - floor) / (1.0 + np.exp(-(log_rates - centre) / 0.3))
    if blow_up_at is not None:
        loss = loss + np.where(log_rates > blow_up_at, 10 ** (log_rates - blow_up_at) - 1, 0)
    return loss


@pytest.mark.parametrize("centre", [-4.0, -2.5, -1.0])
def test_suggestion_is_the_steepest_descent_before_the_minimum(centre):
    log_rates = np.linspace(-7, 1, 200)
    smoothed = _curve(log_rates, centre, blow_up_at=centre + 1.5)
    rate, rule = suggest_learning_rate(10**log_rates, smoothed)
    assert rule == RULE_STEEPEST
    assert math.log10(rate) == pytest.approx(centre, abs=0.1)


def test_suggestion_ignores_noise_at_the_start_and_the_blow_up_after_the_minimum():
    rng = np.random.default_rng(0)
    log_rates = np.linspace(-7, 1, 200)
    smoothed = _curve(log_rates, -2.0, blow_up_at=-0.5)
    smoothed[:20] += rng.normal(scale=0.3, size=20)  # the first tenth: an average of few batches
    smoothed[20:] += rng.normal(scale=0.003, size=180)
    rate, rule = suggest_learning_rate(10**log_rates, smoothed)
    assert rule == RULE_STEEPEST and math.log10(rate) == pytest.approx(-2.0, abs=0.2)


@pytest.mark.parametrize(
    "smoothed",
    [np.linspace(1.0, 3.0, 50), np.r_[np.linspace(1.0, 0.9, 4), np.linspace(0.9, 5.0, 46)]],
    ids=["never-falls", "lowest-in-first-tenth"],
)
def test_suggestion_falls_back_to_the_minimum_over_ten(smoothed):
    rates = np.geomspace(1e-5, 1.0, 50)
    rate, rule = suggest_learning_rate(rates, smoothed)
    assert rule == RULE_MIN_OVER_10
    assert rate == pytest.approx(rates[int(np.argmin(smoothed))] / 10)


def test_suggestion_needs_a_finite_point():
    with pytest.raises(UserInputError, match="no finite loss"):
        suggest_learning_rate([1e-3, 1e-2], [math.nan, math.inf])


def test_original_model_weights_and_optimizer_are_untouched():
    model, x, y = _small_regression()
    model.fit(x, y, batch_size=64, epochs=1, verbose=0)  # optimizer built, with state
    weights = [np.array(value) for value in model.get_weights()]
    optimizer_state = [np.array(keras.ops.convert_to_numpy(v)) for v in model.optimizer.variables]
    iterations = int(keras.ops.convert_to_numpy(model.optimizer.iterations))

    result = lr_find(model, x, y, batch_size=32, steps=30, max_lr=0.1)

    assert len(result.rates) == 30 and result.suggestion > 0
    for before, after in zip(weights, model.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)
    after_state = [keras.ops.convert_to_numpy(v) for v in model.optimizer.variables]
    for before, after in zip(optimizer_state, after_state, strict=True):
        np.testing.assert_array_equal(before, after)
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == iterations == 4
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == pytest.approx(1e-3)


def test_frozen_layers_stay_frozen_in_the_copy():
    model, x, y = _small_regression()
    model.layers[0].trainable = False
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    frozen = [np.array(value) for value in model.layers[0].get_weights()]
    seen = {}

    class Spy(keras.callbacks.Callback):
        def on_train_end(self, logs=None):
            seen["first"] = self.model.layers[0].get_weights()

    lr_find(model, x, y, batch_size=32, steps=10, callbacks=[Spy()])
    for before, after in zip(frozen, seen["first"], strict=True):
        np.testing.assert_array_equal(before, after)


class _Batches(keras.utils.PyDataset):
    def __init__(self, x, y, batch_size):
        super().__init__()
        self.x, self.y, self.batch_size = x, y, batch_size

    def __len__(self):
        return math.ceil(len(self.x) / self.batch_size)

    def __getitem__(self, index):
        rows = slice(index * self.batch_size, (index + 1) * self.batch_size)
        return self.x[rows], self.y[rows]


def test_works_with_a_pydataset_and_cycles_through_it():
    model, x, y = _small_regression()
    batches = _Batches(x, y, 64)  # 4 batches an epoch
    result = lr_find(model, batches, steps=10, min_lr=1e-5, max_lr=1e-1)
    assert len(result.rates) == 10 and result.rates[-1] == pytest.approx(1e-1)
    with pytest.raises(UserInputError, match="pass no y"):
        lr_find(model, batches, y, steps=10)


def test_suggested_rate_trains_a_real_table(tmp_path):
    path = tmp_path / "table.csv"
    make_table().to_csv(path, index=False)
    prepared = prepare_data(make_config({"data": str(path), "target": "y", "hidden": (16,)}))
    train = (prepared.inputs["train"], prepared.targets["train"])
    validation = (prepared.inputs["val"], prepared.targets["val"])
    result = lr_find(build_compiled_model(prepared), *train, batch_size=32, steps=100)
    assert result.rule == RULE_STEEPEST and 1e-4 < result.suggestion < 1.0

    val_losses = {}
    for rate in (1e-6, result.suggestion):
        model = build_compiled_model(prepared)
        model.optimizer.learning_rate = rate
        history = model.fit(*train, batch_size=32, epochs=4, validation_data=validation, verbose=0)
        val_losses[rate] = history.history["val_loss"][-1]
    assert val_losses[result.suggestion] < 0.5 * val_losses[1e-6]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"steps": 0}, "Invalid --steps: the range test needs at least 2 steps"),
        ({"min_lr": 1.0, "max_lr": 1.0}, "Invalid --min-lr: the range test goes from --min-lr"),
        ({"min_lr": 0.0}, "Invalid --min-lr: must be a positive number"),
        ({"max_lr": math.inf}, "Invalid --max-lr: must be a positive number"),
        ({"batch_size": 0}, "Invalid --batch-size: must be a positive integer"),
    ],
)
def test_bad_settings_are_user_errors(settings, message):
    model, x, y = _small_regression()
    with pytest.raises(UserInputError, match=message):
        lr_find(model, x, y, **settings)


def test_an_uncompiled_model_is_a_user_error():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    with pytest.raises(UserInputError, match="needs a compiled Keras model"):
        lr_find(model, np.zeros((8, 4)), np.zeros((8, 1)), steps=5)


def test_plot_is_a_png_written_atomically(tmp_path):
    model, x, y = _small_regression()
    result = lr_find(model, x, y, batch_size=32, steps=40, min_lr=1e-5, max_lr=1.0)
    path = plot_lr_find(result, tmp_path / "plots" / "lr_find.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [item.name for item in path.parent.iterdir()] == ["lr_find.png"]
    assert result.to_dict()["rates"] == list(result.rates)
