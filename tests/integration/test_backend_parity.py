"""Artifacts are backend-neutral: a model trained on one Keras backend loads and predicts the same
(1e-5 relative) on the other, and records which backend trained it. Real processes: Keras picks
its backend once per process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import keras
import mlflow
import numpy as np
import pandas as pd
import pytest

import deepspark
from tests.conftest import FAST, make_table

# Both directions run in one test (trained here and scored there, and the reverse), so the torch
# parity set does not repeat it.
pytestmark = [pytest.mark.slow]

OTHER = {"jax": "torch", "torch": "jax"}[keras.backend.backend()]

# Runs in a process on the other backend: train (optionally) and score, print what it did.
_OTHER_SIDE = """
import json, sys
import deepspark, keras
jobs = json.loads(sys.argv[1])
done = {"backend": keras.backend.backend(), "trained": {}}
for name, job in jobs.items():
    uri = job.get("model_uri")
    if uri is None:
        uri = deepspark.train(job["data"], "y", hidden=(16,), epochs=4).model_uri
        done["trained"][name] = uri
    deepspark.predict(uri, job["data"], output=job["output"])
print(json.dumps(done))
"""


def on_the_other_backend(jobs: dict, cwd) -> dict:
    completed = subprocess.run(
        [sys.executable, "-c", _OTHER_SIDE, json.dumps(jobs)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "KERAS_BACKEND": OTHER},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    done = json.loads(completed.stdout.strip().splitlines()[-1])
    assert done["backend"] == OTHER
    return done


def test_models_predict_the_same_on_both_backends(workdir):
    jobs, here = {}, {}
    for task in ("regression", "multiclass", "binary"):
        data = workdir / f"{task}.csv"
        make_table(rows=300, task=task).to_csv(data, index=False)
        jobs[task] = {"data": str(data), "output": str(workdir / f"{task}.other.parquet")}
        if task != "binary":  # trained here, scored there
            result = deepspark.train(str(data), "y", **FAST)
            model = deepspark.load_model(result.model_uri)
            assert model.metadata["versions"]["keras_backend"] == keras.backend.backend()
            jobs[task]["model_uri"] = result.model_uri
            here[task] = deepspark.predict(result.model_uri, str(data))
    done = on_the_other_backend(jobs, workdir)
    # The binary model was trained there, and is scored here.
    trained_there = done["trained"]["binary"]
    model = deepspark.load_model(trained_there)
    assert model.metadata["versions"]["keras_backend"] == OTHER
    run = mlflow.get_run(model.metadata["run_id"])
    assert run.data.tags["deepspark.keras_backend"] == OTHER
    here["binary"] = deepspark.predict(trained_there, jobs["binary"]["data"])
    for task, frame in here.items():
        _assert_same_predictions(frame, pd.read_parquet(jobs[task]["output"]))


def _assert_same_predictions(here: pd.DataFrame, there: pd.DataFrame) -> None:
    columns = [name for name in here.columns if name.startswith(("prediction", "probability"))]
    assert columns and list(there.columns) == list(here.columns)
    for column in columns:
        if here[column].dtype.kind == "f":
            np.testing.assert_allclose(there[column], here[column], rtol=1e-5, atol=1e-7)
        else:
            assert (there[column].to_numpy() == here[column].to_numpy()).all()
