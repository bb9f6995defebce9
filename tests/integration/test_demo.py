"""``make demo`` runs offline: trains, scores a file, and prints where everything is."""

import os
import re
import subprocess
import sys

import mlflow
import pandas as pd
import pytest


@pytest.mark.slow
def test_demo_end_to_end(workdir):
    done = subprocess.run(
        [sys.executable, "-m", "deepspark.demo"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=900,
        env=os.environ.copy(),
    )
    assert done.returncode == 0, done.stderr
    run_id = re.search(r"run id\s+([0-9a-f]{32})  \(\d+ epochs, best \d+\)", done.stdout).group(1)
    model_uri = re.search(r"model uri\s+(\S+)", done.stdout).group(1)
    assert re.search(r"test metrics\s+RMSE \d+\.\d+", done.stdout)
    assert "mlflow ui --backend-store-uri" in done.stdout
    assert mlflow.get_run(run_id).info.status == "FINISHED"
    scored = pd.read_csv(workdir / "demo-output" / "diabetes_scored.csv")
    assert len(scored) == 442 and scored["prediction"].notna().all()
    assert model_uri.startswith("models:/")
    spark_scored = pd.read_parquet(workdir / "demo-output" / "diabetes_scored_spark")
    assert len(spark_scored) == 442
    assert abs(spark_scored["prediction"].sum() - scored["prediction"].sum()) < 1e-3 * 442
    mean = float(re.search(r"SQL: mean predicted progression (\S+),", done.stdout).group(1))
    assert abs(mean - scored["prediction"].mean()) < 0.1
    index = re.search(r"explanation\s+(\S+index\.html)", done.stdout).group(1)
    assert 'src="beeswarm.png"' in open(index).read()
    assert len(pd.read_csv(workdir / "demo-output" / "explanation" / "attributions.csv")) == 50
    accuracy = float(re.search(r"CNN run [0-9a-f]{32}, test accuracy (\S+);", done.stdout).group(1))
    assert accuracy >= 0.8  # three generated kinds of image, two epochs
    overlay = re.search(r"grad-cam\s+(\S+row0\.png)", done.stdout).group(1)
    assert os.path.getsize(overlay) > 0
    images = pd.read_parquet(workdir / "demo-output" / "images_scored_spark")
    assert len(images) == 301 and images["error"].notna().sum() == 1


def test_the_demo_summary_says_how_the_first_step_trained():
    """One network: its epochs and best epoch; a bagged ensemble (``make demo``'s default on
    the diabetes table): the members, the most epochs one trained and the median best epoch."""
    from types import SimpleNamespace

    from deepspark.demo import _epochs_line

    one = SimpleNamespace(bagging=1, epochs_completed=40, best_epoch=28)
    assert _epochs_line(one) == "40 epochs, best 28"
    bagged = SimpleNamespace(bagging=5, epochs_completed=50, best_epoch=13)
    assert _epochs_line(bagged) == "5 bagged members: up to 50 epochs each, median best epoch 13"
