"""The logged model serves anywhere: it carries deepspark's code and pinned requirements, so
an environment with no deepspark installed loads and scores it (what `mlflow models serve` with
a virtualenv or uv environment, and `mlflow models build-docker`, build from the artifact)."""

import json
import os
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
for framework in sys.argv[4:]:  # as in an environment built without it
    sys.modules[framework] = None
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
import keras
print(json.dumps({"prediction": scored["prediction"].tolist(), "from": deepspark.__file__,
                  "backend": keras.backend.backend()}))
"""


def test_a_logged_model_scores_where_deepspark_is_not_installed(workdir):
    table = make_table(rows=300)
    table.to_csv(workdir / "table.csv", index=False)
    result = deepspark.train(str(workdir / "table.csv"), "y", **FAST)
    rows = make_table(rows=5, seed=9).drop(columns="y")
    expected = deepspark.load_model(result.model_uri).predict(rows)["prediction"].tolist()

    source_folder = str(Path(deepspark.__file__).resolve().parents[1])

    def score_without_deepspark(*hidden_frameworks: str, **environment: str) -> dict:
        done = subprocess.run(
            [sys.executable, "-c", _SCORE_WITHOUT_DEEPSPARK, source_folder, result.model_uri,
             rows.to_json(orient="split"), *hidden_frameworks],
            capture_output=True, text=True, timeout=300, cwd=workdir,
            env={**os.environ, **environment},
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    scored = score_without_deepspark()
    assert scored["prediction"] == pytest.approx(expected, rel=1e-6)
    assert "/code/deepspark_bundle/deepspark/" in scored["from"]
    # A KERAS_BACKEND inherited from the shell that started the server names a framework the
    # environment built from the artifact lacks: the model loads on the one it has.
    scored = score_without_deepspark("jax", KERAS_BACKEND="jax")
    assert scored["backend"] == "torch"
    assert scored["prediction"] == pytest.approx(expected, rel=1e-5)

    folder = Path(mlflow.artifacts.download_artifacts(result.model_uri))
    requirements = (folder / "requirements.txt").read_text().split()
    pinned = {line.split("==")[0]: line for line in requirements if "==" in line}
    for package in ("keras", "mlflow", "numpy", "pandas", "pyarrow"):
        assert package in pinned, requirements
    assert ("jax" in pinned) or ("torch" in pinned)
    assert not list((folder / "code").rglob("__pycache__"))


def test_a_torch_model_names_the_index_of_the_build_that_trained_it():
    """A CPU (or other labelled) torch build is pinned with PyTorch's index for that label, so
    the serving environment MLflow builds gets that build, not PyPI's CUDA one."""
    from deepspark.tracking.pyfunc import _framework_requirements

    assert _framework_requirements({"keras_backend": "torch", "torch": "2.13.0+cpu"}) == [
        "--extra-index-url https://download.pytorch.org/whl/cpu",
        "torch==2.13.0",
    ]
    assert _framework_requirements({"keras_backend": "torch", "torch": "2.13.0"}) == [
        "torch==2.13.0"
    ]
    jax = {"keras_backend": "jax", "jax": "0.10.2", "jaxlib": "0.10.2"}
    assert _framework_requirements(jax) == ["jax==0.10.2", "jaxlib==0.10.2"]
