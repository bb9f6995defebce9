"""Shared fixtures: a per-test MLflow sqlite store (copied from a migrated template), a per-test
working folder, and small seeded tables written to files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
# Spark driver JVMs (the shared session, CLI subprocesses, the demo) stop at the C1 JIT tier
# with the serial collector: short test jobs never repay C2 compilation; a local[2] session's
# JVM used half the CPU this way (46 -> 24 CPU-s for a few queries and a pandas UDF). Users'
# sessions keep the JVM's defaults; tests/cluster/harness.py does the same for its daemons.
os.environ.setdefault("SPARK_SUBMIT_OPTS", "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC")
os.environ.setdefault("DEEPSPARK_AUTO_BAGGING_ROWS", "0")  # tiny tables: no default bagging

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# Settings that keep a training run to a second or two.
FAST = {"hidden": (16,), "epochs": 8, "batch_size": 32, "patience": 3}


def float64_keras():
    """A context in which Keras computes in float64 as asked (JAX truncates to float32 unless
    x64 is on; torch honours the dtype)."""
    import contextlib

    import keras

    if keras.backend.backend() == "jax":
        import jax

        return jax.enable_x64(True)
    return contextlib.nullcontext()


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory) -> Path:
    """An empty, fully migrated MLflow sqlite store; copying it skips the migrations per test."""
    import mlflow

    folder = tmp_path_factory.mktemp("mlflow-template")
    database = folder / "mlflow.db"
    mlflow.MlflowClient(tracking_uri=f"sqlite:///{database}").search_experiments()
    return database


@pytest.fixture
def workdir(tmp_path, monkeypatch, mlflow_template) -> Path:
    """A fresh working folder with its own MLflow store and checkpoint folder."""
    import mlflow

    database = tmp_path / "mlflow.db"
    shutil.copy(mlflow_template, database)
    uri = f"sqlite:///{database}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("DEEPSPARK_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    mlflow.set_tracking_uri(uri)
    yield tmp_path
    while mlflow.active_run() is not None:
        mlflow.end_run()


def make_table(rows: int = 400, seed: int = 0, task: str = "regression") -> pd.DataFrame:
    """Numeric, skewed, categorical and missing values; a learnable target."""
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=rows)
    x2 = rng.uniform(-2, 2, size=rows)
    count = rng.lognormal(mean=3, sigma=1, size=rows)
    color = rng.choice(["red", "green", "blue"], size=rows)
    signal = 2.0 * x1 - 1.5 * x2 + np.log(count) * 0.5 + np.where(color == "red", 1.5, 0.0)
    frame = pd.DataFrame({"x1": x1, "x2": x2, "count": count, "color": color})
    frame.loc[rng.choice(rows, size=rows // 20, replace=False), "x2"] = np.nan
    frame.loc[rng.choice(rows, size=rows // 25, replace=False), "color"] = None
    if task == "regression":
        frame["y"] = 10.0 * signal + 100 + rng.normal(scale=1.0, size=rows)
    elif task == "binary":
        frame["y"] = np.where(
            signal + rng.normal(scale=0.3, size=rows) > np.median(signal), "yes", "no"
        )
    else:
        frame["y"] = np.digitize(signal, np.quantile(signal, [0.33, 0.66]))
        frame["y"] = frame["y"].map({0: "low", 1: "mid", 2: "high"})
    return frame


@pytest.fixture
def regression_csv(workdir) -> Path:
    path = workdir / "table.csv"
    make_table().to_csv(path, index=False)
    return path


@pytest.fixture
def binary_csv(workdir) -> Path:
    path = workdir / "binary.csv"
    make_table(task="binary").to_csv(path, index=False)
    return path


@pytest.fixture
def multiclass_csv(workdir) -> Path:
    path = workdir / "multiclass.csv"
    make_table(rows=600, task="multiclass").to_csv(path, index=False)
    return path


def run_cli(*args: str, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    """Run the real ``deepspark`` command in a separate process."""
    return subprocess.run(
        [sys.executable, "-m", "deepspark", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=os.environ.copy(),
    )


@pytest.fixture(scope="session")
def spark():
    """One local Spark session (``local[2]``) shared by the whole test session."""
    pytest.importorskip("pyspark", reason="the spark extra is not installed")
    from deepspark.spark.session import get_session

    session = get_session("local[2]", config={"spark.sql.shuffle.partitions": "4"})
    yield session
    session.stop()


# Seconds each of the slowest test files takes on 2 busy cores (summed test durations under
# `make test`). `make test` runs files across its processes (--dist loadfile) in collection order
# (--no-loadscope-reorder), so the longest go first and short files fill in at the end instead of
# one long file running alone while the other process idles. Other files count 1 s per test.
SLOW_FILES = {
    "tests/examples/test_labs.py": 520,
    "tests/distributed/test_train_distributed.py": 460,
    "tests/cluster/test_cluster.py": 400,
    "tests/integration/test_demo.py": 310,
    "tests/integration/test_images.py": 280,
    "tests/integration/test_resume.py": 230,
    "tests/spark/test_featurizer.py": 230,
    "tests/training/test_transfer.py": 220,
    "tests/integration/test_backend_parity.py": 170,
    "tests/distributed/test_spark_launcher.py": 170,
    "tests/tuning/test_tune.py": 170,
    "tests/spark/test_arrow_scoring.py": 150,
    "tests/reliability/test_tracking_faults.py": 150,
    "tests/spark/test_jobs.py": 140,
    "tests/models/test_applications.py": 140,
    "tests/spark/test_ml.py": 140,
    "tests/distributed/test_exactness.py": 130,
    "tests/cli/test_data_at_scale_cli.py": 120,
    "tests/training/test_train.py": 90,
    "tests/distributed/test_zygote.py": 80,
    "tests/explain/test_methods.py": 80,
    "tests/training/test_bagging_parallel.py": 100,
    "tests/tuning/test_interrupt.py": 80,
    "tests/data/test_verbs_sources.py": 80,
    "tests/models/test_tabular_net.py": 60,
    "tests/reliability/test_hostile_serving.py": 60,
    "tests/serving/test_workers.py": 60,
    "tests/training/test_tensorboard.py": 50,
    "tests/data/test_image_uri_sources.py": 50,
    "tests/training/test_bagging.py": 50,
    "tests/workflows/test_classify.py": 50,
    "tests/test_keras_first.py": 50,
    "tests/cli/test_cli.py": 50,
    "tests/distributed/test_horovod_cli.py": 50,
    "tests/explain/test_image_overlays.py": 50,
    "tests/explain/test_image_methods.py": 50,
}


def pytest_collection_modifyitems(config, items):
    """Order test files longest first (see ``SLOW_FILES``); tests keep their order in a file."""
    counts: dict[str, int] = {}
    for item in items:
        counts[item.location[0]] = counts.get(item.location[0], 0) + 1
    first_seen = {}
    for position, item in enumerate(items):
        first_seen.setdefault(item.location[0], position)

    def weight(item) -> tuple[float, int]:
        path = item.location[0]
        return (-SLOW_FILES.get(path, 1.0 * counts[path]), first_seen[path])

    items.sort(key=weight)
