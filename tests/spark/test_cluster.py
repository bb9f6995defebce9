"""The model really ships to executors: scoring on local-cluster[2,1,1024] (separate executor JVMs
and Python workers) gives the same numbers as pandas, with one load per Python worker. The same
cluster then runs the spark launcher (one SparkContext per process: it lives in a child process),
which trains exactly as one process would."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import deepspark

pytestmark = [pytest.mark.spark, pytest.mark.slow]


@pytest.mark.distributed
def test_scoring_and_the_spark_launcher_on_a_local_cluster(trained_models, tmp_path):
    trained = trained_models["regression"]
    data = tmp_path / "rows.parquet"
    trained.data.assign(row=range(len(trained.data))).to_parquet(data, index=False)
    output = tmp_path / "scored"
    done = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("cluster_job.py")),
         str(trained.model_dir), str(data), str(output)],
        capture_output=True, text=True, timeout=400, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )  # fmt: skip
    python_lines = [line for line in done.stderr.splitlines() if not line.startswith(("\t", "26/"))]
    assert done.returncode == 0, "\n".join(python_lines[-40:])
    report = json.loads(done.stdout.strip().splitlines()[-1])
    _remove_worker_dirs(report["application_id"])

    assert report["executors"] == 2
    worker_pids = {worker["pid"] for worker in report["workers"]}
    assert report["driver_pid"] not in worker_pids and len(worker_pids) >= 2
    loads = [count for worker in report["workers"] for count in worker["loads"].values()]
    assert loads and max(loads) == 1
    assert report["launcher"] == "matches one process"
    scored = pd.read_parquet(output).sort_values("row")
    expected = deepspark.load_model(str(trained.model_dir)).predict(trained.data)["prediction"]
    np.testing.assert_allclose(scored["prediction"], expected, rtol=1e-6)


def _remove_worker_dirs(application_id: str) -> None:
    """local-cluster workers keep executor logs under $SPARK_HOME/work; do not leave them."""
    import pyspark

    shutil.rmtree(Path(pyspark.__file__).parent / "work" / application_id, ignore_errors=True)
