"""Transfer learning: a pretrained base with a new head, two phases in one run, BatchNorm in
inference mode by construction, the optimizer rebuilt for fine-tuning, class weights, resume in
the right phase, and clear errors."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest

import deepspark
from deepspark.config import make_config
from deepspark.errors import UserInputError
from deepspark.models.transfer import base_network
from deepspark.training.fit import balanced_class_weights
from deepspark.training.transfer import DEFAULT_MIN_DELTA, fine_tune_rate
from tests.image_data import pattern_folder

# MobileNetV2 at width 0.35 without weights: the structure of the real thing, small and offline.
BASE = {"base": "mobilenet_v2", "weights": "none", "base_options": {"alpha": 0.35}}
SMALL = {**BASE, "image_size": 32, "batch_size": 16, "patience": 50, "lr": 0.003}


def batch_norm_statistics(model) -> list[np.ndarray]:
    network = base_network(model)
    return [
        np.array(variable.value)
        for layer in network.layers
        if "BatchNormalization" in type(layer).__name__
        for variable in (layer.moving_mean, layer.moving_variance)
    ]


def test_two_phases_in_one_run_keep_batch_norm_statistics_and_the_best_weights(workdir):
    folder = pattern_folder(workdir / "patterns", per_class=20, size=32, mess=False)
    # A fine-tuning rate far too high: the second phase only makes things worse.
    result = deepspark.train(
        str(folder), epochs=2, fine_tune_layers="all", fine_tune_lr=5.0, fine_tune_epochs=2,
        **SMALL,
    )  # fmt: skip
    assert result.epochs_completed == 4  # epochs numbered across both phases
    run = mlflow.get_run(result.run_id)
    assert run.data.params["model"] == "transfer" and run.data.params["fine_tune_layers"] == "all"
    client = mlflow.MlflowClient()
    rates = [m.value for m in client.get_metric_history(result.run_id, "learning_rate")]
    assert rates == pytest.approx([0.003, 0.003, 5.0, 5.0])  # a new optimizer for phase 2
    losses = {int(m.step): m.value for m in client.get_metric_history(result.run_id, "val_loss")}
    # The head phase's weights: the best epoch by at least min_delta.
    assert result.best_epoch - 1 < 2
    assert losses[result.best_epoch - 1] <= min(losses.values()) + DEFAULT_MIN_DELTA
    fresh = deepspark.load_model(result.model_uri).keras_model
    # The base's BatchNorm statistics are the ones it was built with (here: initial 0 / 1),
    # although every layer of the base trained in the second phase.
    for statistics in batch_norm_statistics(fresh):
        assert np.all((statistics == 0) | (statistics == 1))


def test_balanced_class_weights_and_the_fine_tune_rate():
    weights = balanced_class_weights(np.array([0, 0, 0, 1]))
    assert weights == pytest.approx({0: 4 / 6, 1: 2.0})
    config = make_config({"data": "x", "base": "resnet50", "fine_tune_layers": "10"})
    assert config.fine_tune_layers == 10 and fine_tune_rate(config) == pytest.approx(2e-4)
    config = make_config({"data": "x", "base": "resnet50", "optimizer": "sgd", "lr": 0.05})
    assert fine_tune_rate(config) == pytest.approx(0.005)


@pytest.mark.parametrize(
    ("settings", "model", "message"),
    [
        ({"fine_tune_layers": 3}, None, r"Invalid --fine-tune-layers: fine-tuning needs"),
        ({**BASE, "fine_tune_layers": "some"}, None, r"Invalid --fine-tune-layers"),
        ({**BASE}, "cnn", r"--base mobilenet_v2 builds a transfer-learning model"),
        ({}, "transfer", r"--model transfer needs a pretrained network"),
        ({**BASE, "base": "alexnet"}, None, r"Unknown pretrained network"),
        ({**BASE, "weights": "missing.h5"}, None, r"Weights file not found"),
        ({**BASE, "class_weight": "inverse"}, None, r"Invalid --class-weight"),
        ({**BASE, "base_options": ["alpha"]}, None, r"Invalid --base-option: give KEY=VALUE"),
    ],
)
def test_bad_transfer_settings_are_one_clear_error(workdir, settings, model, message):
    folder = pattern_folder(workdir / "patterns", per_class=6, size=32, mess=False)
    with pytest.raises(UserInputError, match=message):
        deepspark.train(str(folder), model=model, epochs=1, **settings)


@pytest.mark.slow
def test_a_run_killed_while_fine_tuning_resumes_in_that_phase(workdir):
    import json
    import signal
    import subprocess
    import sys

    from tests.conftest import run_cli
    from tests.integration.test_resume import wait_for_epoch

    # 2 head epochs + 6 fine-tuning epochs: killed after epoch index 3, at least 3 remain.
    total = 8
    folder = pattern_folder(workdir / "patterns", per_class=40, size=32, mess=False)
    args = ["train", "--data", str(folder), "--base", "mobilenet_v2", "--weights", "none",
            "--base-option", "alpha=0.35", "--image-size", "32", "--batch-size", "4",
            "--epochs", "2", "--patience", "50", "--no-reduce-lr", "--fine-tune-layers", "all",
            "--fine-tune-epochs", str(total - 2), "--fine-tune-lr", "1e-4", "--json"]  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "deepspark", *args], cwd=workdir, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    run_id, state = wait_for_epoch(workdir, process, 3, timeout=300)
    process.send_signal(signal.SIGKILL)
    process.wait()
    state = json.loads((workdir / "checkpoints" / run_id / "state.json").read_text())
    assert state["phase"] == "fine_tune" and state["fine_tune_from_epoch"] == 2
    assert state["epoch"] + 1 < total, "the run ended before it could be killed"
    done = run_cli("train", "--resume", run_id, "--json", cwd=workdir, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["resumed_from_epoch"] == state["epoch"] + 1
    assert result["epochs_completed"] == total
    history = mlflow.MlflowClient().get_metric_history(run_id, "learning_rate")
    rates = {int(metric.step): metric.value for metric in history}
    assert sorted(rates) == list(range(total))
    assert rates[0] == pytest.approx(2e-3, rel=1e-6)  # adam default
    assert rates[2] == rates[total - 1] == pytest.approx(1e-4, rel=1e-6)


def test_fine_tune_in_one_call_finds_a_rate_then_trains_both_phases(workdir):
    folder = pattern_folder(workdir / "patterns", per_class=20, size=32, mess=False)
    result = deepspark.fine_tune(
        str(folder), base="mobilenet_v2", weights=None, epochs=2, freeze_epochs=1,
        lr_find_steps=20, image_size=32, batch_size=16, base_options={"alpha": 0.35},
    )  # fmt: skip
    assert result.epochs_completed == 3
    params = mlflow.get_run(result.run_id).data.params
    rate = float(params["lr"])
    assert 1e-7 < rate < 10 and params["fine_tune_layers"] == "all"
    rates = [
        m.value for m in mlflow.MlflowClient().get_metric_history(result.run_id, "learning_rate")
    ]
    assert rates == pytest.approx([rate, rate / 10, rate / 10])


@pytest.mark.parity
def test_a_training_step_after_unfreezing_leaves_batch_norm_statistics_alone():
    from deepspark.data.image_inputs import image_schema
    from deepspark.data.schema import ImageSpec
    from deepspark.models.transfer import build_transfer, unfreeze_top

    config = make_config({"data": "x", **BASE})
    schema = image_schema(ImageSpec(32, 32, 3), target="y", task="binary", class_labels=("a", "b"))
    model = build_transfer(schema, config)
    trainable = unfreeze_top(model, "all")
    assert trainable > 0
    before = batch_norm_statistics(model)
    model.compile(optimizer="sgd", loss="binary_crossentropy")
    pixels = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3)).astype("uint8")
    model.train_on_batch(pixels, np.array([0, 1] * 4, dtype="float32").reshape(-1, 1))
    for old, new in zip(before, batch_norm_statistics(model), strict=True):
        np.testing.assert_array_equal(old, new)  # a BatchNorm in training mode would move them
