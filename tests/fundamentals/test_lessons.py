"""Each lesson runs offline, writes its plots and returns figures that back its claims."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from deepspark.errors import UserInputError
from deepspark.fundamentals import TOPICS, run_lesson


def run_and_check_plots(topic: str, output_dir: Path) -> dict:
    figures = run_lesson(topic, output_dir)
    assert figures["topic"] == topic
    assert figures["plots"]
    for plot in figures["plots"]:
        assert Path(plot).parent == output_dir
        assert Path(plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    json.dumps(figures, allow_nan=False)  # JSON-ready: no NumPy types, no NaN
    return figures


def test_activations_lesson(tmp_path):
    figures = run_and_check_plots("activations", tmp_path)
    assert figures["sigmoid_max_abs_gradient_beyond_10"] < 1e-4
    assert figures["sigmoid_max_gradient"] == pytest.approx(0.25)
    assert figures["sigmoid_mean_output_symmetric_inputs"] == pytest.approx(0.5)
    assert abs(figures["tanh_mean_output_symmetric_inputs"]) < 1e-12
    assert figures["relu_dead_fraction_good_init"] == 0.0
    assert figures["relu_dead_fraction_bad_init"] > 0.5
    assert figures["leaky_relu_dead_fraction_bad_init"] == 0.0
    assert figures["elu_dead_fraction_bad_init"] == 0.0
    assert figures["leaky_relu_min_gradient_bad_init"] == pytest.approx(0.2)
    assert figures["elu_min_gradient_bad_init"] > 0.0
    assert figures["relu_dead_fraction_by_bias"] == sorted(figures["relu_dead_fraction_by_bias"])


def test_losses_lesson(tmp_path):
    figures = run_and_check_plots("losses", tmp_path)
    # 10 % of the rows carry most of the squared loss but only about half of the absolute loss.
    assert figures["outlier_row_share"] == pytest.approx(0.1)
    assert figures["outlier_share_of_squared_loss"] > 0.85
    assert figures["outlier_share_of_absolute_loss"] < 0.65
    assert figures["rmse_inflation_from_outliers"] > figures["mae_inflation_from_outliers"]
    assert figures["rmse"] == pytest.approx(figures["mse"] ** 0.5)
    assert abs(figures["mse_best_constant_correction"]) > 5 * abs(
        figures["mae_best_constant_correction"]
    )


def test_optimizers_lesson(tmp_path):
    figures = run_and_check_plots("optimizers", tmp_path)
    assert figures["sgd_final_x"] == pytest.approx(figures["local_minimum_x"], abs=1e-3)
    assert figures["momentum_final_x"] == pytest.approx(figures["global_minimum_x"], abs=1e-3)
    assert figures["momentum_final_loss"] < figures["sgd_final_loss"] - 2.0
    # Ill-conditioned valley: SGD zig-zags across the steep direction and is slower than Adam.
    assert figures["valley_sgd_y_sign_changes"] >= 0.9 * figures["valley_steps"]
    assert figures["valley_sgd_final_loss"] > 100 * figures["valley_adam_final_loss"]
    assert figures["valley_adam_steps_to_tolerance"] < figures["valley_sgd_steps_to_tolerance"]
    assert figures["lr_too_high_diverged"] and figures["lr_too_high_final_loss"] > 1e6
    assert figures["lr_too_low_final_loss"] > 0.5 * figures["rate_start_x"] ** 2
    assert figures["lr_good_final_loss"] < 1e-6
    assert not figures["lr_good_diverged"] and not figures["lr_too_low_diverged"]


def test_splits_lesson(tmp_path):
    figures = run_and_check_plots("splits", tmp_path)
    test_bias = figures["test_selected_bias"]
    assert test_bias < -3 * figures["test_selected_bias_standard_error"]  # clearly optimistic
    assert (
        abs(figures["validation_selected_bias"])
        < 2 * figures["validation_selected_bias_standard_error"]
    )
    assert abs(figures["validation_selected_bias"]) < abs(test_bias) / 4


def test_approximation_lesson(tmp_path):
    figures = run_and_check_plots("approximation", tmp_path)
    errors = figures["grid_mse_by_units"]
    assert figures["hidden_units"] == [1, 4, 16, 64]
    assert all(wider < narrower for narrower, wider in zip(errors, errors[1:], strict=False))
    assert figures["error_reduction_1_to_64_units"] > 50


def test_output_dir_is_created(tmp_path):
    figures = run_lesson("losses", tmp_path / "new" / "folder")
    assert all(Path(plot).is_file() for plot in figures["plots"])


def test_unknown_topic_lists_the_valid_ones(tmp_path):
    with pytest.raises(
        UserInputError,
        match=r"use one of activations, losses, optimizers, splits, "
        r"approximation, convolutions, gan\. Received: topic='gradients'",
    ):
        run_lesson("gradients", tmp_path)
    assert set(TOPICS) == {
        "activations",
        "losses",
        "optimizers",
        "splits",
        "approximation",
        "convolutions",
        "gan",
    }


def test_output_dir_that_is_a_file_is_a_user_error(tmp_path):
    path = tmp_path / "plots.png"
    path.write_text("not a folder")
    with pytest.raises(UserInputError, match="output_dir is a file, not a folder"):
        run_lesson("losses", path)


def test_fundamentals_imports_neither_keras_nor_torch():
    code = (
        "import deepspark.fundamentals, sys; "
        "assert 'keras' not in sys.modules and 'torch' not in sys.modules, "
        "sorted(m for m in sys.modules if m.split('.')[0] in ('keras', 'torch'))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
