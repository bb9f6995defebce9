"""Every course lab script in ``examples/`` runs at ``--tiny`` size and prints figures that make
sense: each script runs in this process (``runpy``: one import of Keras and JAX for all), with
the per-test MLflow store of ``workdir``, and the session's Spark for the Spark labs."""

from __future__ import annotations

import json
import math
import runpy
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
LABS = {
    "DL01": "dl01_linear_regression.py",
    "DL02": "dl02_keras.py",
    "DL03": "dl03_advanced_keras.py",
    "DL04": "dl04_mlflow.py",
    "DL05": "dl05_hyperopt_spark.py",
    "DL06": "dl06_horovod.py",
    "DL07": "dl07_horovod_petastorm.py",
    "DL08": "dl08_lime_shap.py",
    "DL09": "dl09_cnn_inference_spark.py",
    "DL09L": "dl09l_shap_cnn.py",
    "DL10": "dl10_rest_serving.py",
    "DL10a": "dl10a_transfer_learning.py",
    "DL10b": "dl10b_augmentation.py",
    "DL10L": "dl10l_xray.py",
    "DL10c": "dl10c_gan.py",
}


def run_lab(script: str, capsys, monkeypatch, *args: str) -> dict:
    """Run ``examples/<script> --tiny ARGS`` as ``python`` would; its last stdout line, parsed."""
    path = EXAMPLES / script
    monkeypatch.setattr(sys, "argv", [str(path), "--tiny", *args])
    capsys.readouterr()
    runpy.run_path(str(path), run_name="__main__")
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    figures = json.loads(lines[-1])
    print(lines[-1], file=sys.stderr)  # the lab's figures in the test report (pytest -rP)
    assert figures["lab"] == next(lab for lab, name in LABS.items() if name == script)
    return figures


def finite(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def test_one_script_per_lab():
    scripts = sorted(path.name for path in EXAMPLES.glob("dl*.py"))
    assert scripts == sorted(LABS.values())
    readme = (EXAMPLES / "README.md").read_text()
    for lab, script in LABS.items():
        assert f"`{script}`" in readme, lab


def test_dl01_linear_regression(workdir, capsys, monkeypatch):
    figures = run_lab(LABS["DL01"], capsys, monkeypatch)
    assert 0 < figures["test_rmse"] < 500_000
    # Coefficients in dollars per raw unit: a richer block group is a dearer one.
    assert figures["coefficients"]["median_income"] > 0
    assert finite(figures["intercept"])
    assert figures["sklearn_median_income_coefficient"] > 0


def test_dl02_keras(workdir, capsys, monkeypatch):
    figures = run_lab(LABS["DL02"], capsys, monkeypatch)
    assert sum(figures["rows"].values()) == 400 and figures["rows"]["test"] > 0
    assert figures["epochs"] == 2
    assert 0 < figures["test_rmse"] < 500_000
    assert figures["all_finite"] and len(figures["first_predictions"]) == 5


def test_dl03_advanced_keras(workdir, capsys, monkeypatch):
    figures = run_lab(LABS["DL03"], capsys, monkeypatch)
    assert len(figures["callback_val_losses"]) == figures["epochs"] == 2
    assert all(finite(value) for value in figures["callback_val_losses"])
    assert Path(figures["history_csv"]).read_text().count("\n") == 3  # header + 2 epochs
    assert figures["best_checkpoint_parameters"] == figures["last_checkpoint_parameters"] > 0
    assert figures["tensorboard_event_files"]


@pytest.mark.spark
@pytest.mark.slow
def test_dl04_mlflow(workdir, spark, capsys, monkeypatch):
    figures = run_lab(LABS["DL04"], capsys, monkeypatch)
    assert figures["params"] >= 5 and figures["param_hidden"]
    assert len(figures["val_loss_history"]) == 2
    assert figures["runs_in_experiment"] == 1
    assert figures["spark_rows"] == 50
    # The same model through pyfunc, MLflow's Spark UDF and deepspark's: the same dollars.
    assert figures["max_diff_mlflow_udf"] < 1.0
    assert figures["max_diff_deepspark_udf"] < 1.0


@pytest.mark.spark
@pytest.mark.slow
def test_dl05_hyperopt_spark(workdir, spark, capsys, monkeypatch):
    figures = run_lab(LABS["DL05"], capsys, monkeypatch)
    assert figures["spark"] is True
    assert figures["trials"]["complete"] + figures["trials"].get("pruned", 0) == 2
    assert {"layers", "width", "lr"} <= set(figures["best_params"])
    assert 0 < figures["test_rmse"] < 500_000


@pytest.mark.distributed
@pytest.mark.slow
def test_dl06_horovod(workdir, capsys, monkeypatch):
    figures = run_lab(LABS["DL06"], capsys, monkeypatch)
    assert figures["world_size"] == 2 and figures["launcher"] == "local"
    assert 0 < figures["test_rmse"] < 500_000


@pytest.mark.spark
@pytest.mark.distributed
@pytest.mark.slow
def test_dl07_horovod_petastorm(workdir, spark, capsys, monkeypatch):
    figures = run_lab(LABS["DL07"], capsys, monkeypatch)
    assert figures["world_size"] == 2
    assert figures["store_shards"] >= 2  # at least one training shard per rank
    assert sum(figures["rows"].values()) == 400
    assert 0 < figures["test_rmse"] < 500_000


def test_dl08_lime_shap(workdir, capsys, monkeypatch):
    figures = run_lab(LABS["DL08"], capsys, monkeypatch)
    for method in ("kernel", "lime"):
        assert figures[method]["rows"] == 3
        assert figures[method]["top_feature"] in figures[method]["importance"]
        assert "index.html" in figures[method]["files"]
    assert figures["kernel"]["max_additivity_error"] < 0.05  # SHAP values add up


@pytest.mark.spark
@pytest.mark.slow
def test_dl09_cnn_inference_spark(workdir, spark, capsys, monkeypatch):
    figures = run_lab(LABS["DL09"], capsys, monkeypatch)
    assert figures["images"] == 10 and figures["errors"] == 0
    assert figures["top1"]["parrot.jpg"] == "macaw"
    assert 0 < figures["mean_top1_probability"] <= 1


def test_dl09l_shap_cnn(workdir, capsys, monkeypatch):
    figures = run_lab(LABS["DL09L"], capsys, monkeypatch)
    assert figures["explained_images"] == 2
    assert len(figures["overlays"]) == 2 and all(
        Path(p).stat().st_size for p in figures["overlays"]
    )
    assert 0 <= figures["test_accuracy"] <= 1


@pytest.mark.slow
def test_dl10_rest_serving(workdir, capsys, monkeypatch):
    figures = run_lab(LABS["DL10"], capsys, monkeypatch)
    assert figures["registered"]["aliases"] == ["champion"]
    served = [row["prediction"] if isinstance(row, dict) else row for row in figures["predictions"]]
    assert served == pytest.approx(figures["local_predictions"], rel=1e-4)
    assert "signature" in figures["metadata_keys"]


@pytest.mark.slow
def test_dl10a_transfer_learning(workdir, capsys, monkeypatch):
    figures = run_lab(LABS["DL10a"], capsys, monkeypatch)
    assert figures["rows"]["test"] > 0  # carved from val/: the folder has no test/
    assert figures["epochs"] == 2  # one head epoch, one fine-tuning epoch
    assert 0 <= figures["test_accuracy"] <= 1


def test_dl10b_augmentation(workdir, capsys, monkeypatch):
    figures = run_lab(LABS["DL10b"], capsys, monkeypatch)
    assert Path(figures["augmented_grid"]).stat().st_size > 0
    assert 0 <= figures["augmented"]["test_accuracy"] <= 1
    assert "plain" not in figures  # the comparison runs at full size only


def test_dl10l_xray(workdir, capsys, monkeypatch):
    figures = run_lab(LABS["DL10L"], capsys, monkeypatch)
    assert figures["task"] == "binary"
    assert figures["train_counts"]["PNEUMONIA"] == 3 * figures["train_counts"]["NORMAL"]
    assert 0 <= figures["test_accuracy"] <= 1 and 0 <= figures["test_auc"] <= 1


def test_dl10c_gan(workdir, capsys, monkeypatch):
    figures = run_lab(LABS["DL10c"], capsys, monkeypatch)
    assert figures["rows"] == 256
    assert all(finite(value) for value in figures["losses"]["d_loss"] + figures["losses"]["g_loss"])
    assert len(figures["sample_grids"]) == 1 and Path(figures["sample_grids"][0]).exists()
