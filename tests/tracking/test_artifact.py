"""The logged model serves anywhere: it carries deepspark's code and pinned requirements, so
an environment with no deepspark installed loads and scores it (what `mlflow models serve` with
a virtualenv or uv environment, and `mlflow models build-docker`, build from the artifact)."""

import json
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

import deepspark
from tests.conftest import FAST, make_table

pytestmark = pytest.mark.slow

# Runs with deepspark's source folder taken off sys.path (as in an environment that never
# installed it): the model's own bundled copy must do the work.
_SCORE_WITHOUT_DEEPSPARK = """
import json, sys
hidden = sys.argv[1]
sys.path = [entry for entry in sys.path if entry.rstrip("/") != hidden]
try:
    import deepspark
    sys.exit("deepspark is still importable from " + deepspark.__file__)
except ImportError:
    pass
import io, mlflow, pandas as pd
model = mlflow.pyfunc.load_model(sys.argv[2])
frame = pd.read_json(io.StringIO(sys.argv[3]), orient="split")
scored = model.predict(frame)
import deepspark
print(json.dumps({"prediction": scored["prediction"].tolist(), "from": deepspark.__file__}))
"""


def test_a_logged_model_scores_where_deepspark_is_not_installed(workdir):
    table = make_table(rows=300)
    table.to_csv(workdir / "table.csv", index=False)
    result = deepspark.train(str(workdir / "table.csv"), "y", **FAST)
    rows = make_table(rows=5, seed=9).drop(columns="y")
    expected = deepspark.load_model(result.model_uri).predict(rows)["prediction"].tolist()

    source_folder = str(Path(deepspark.__file__).resolve().parents[1])
    done = subprocess.run(
        [sys.executable, "-c", _SCORE_WITHOUT_DEEPSPARK, source_folder, result.model_uri,
         rows.to_json(orient="split")],
        capture_output=True, text=True, timeout=300, cwd=workdir,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    scored = json.loads(done.stdout.strip().splitlines()[-1])
    assert scored["prediction"] == pytest.approx(expected, rel=1e-6)
    assert "/code/deepspark_bundle/deepspark/" in scored["from"]

    folder = Path(mlflow.artifacts.download_artifacts(result.model_uri))
    requirements = (folder / "requirements.txt").read_text().split()
    pinned = {line.split("==")[0]: line for line in requirements if "==" in line}
    for package in ("keras", "mlflow", "numpy", "pandas", "pyarrow"):
        assert package in pinned, requirements
    assert ("jax" in pinned) or ("torch" in pinned)
    assert not list((folder / "code").rglob("__pycache__"))
