"""Notebook-first use: in deepspark's environment `import keras` may come before `import
deepspark` and runs on JAX (no TensorFlow is installed); a backend the user chose still wins."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from deepspark import _keras_default


def _python(code: str, keras_home: Path, **env: str) -> str:
    environment = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    environment.update(KERAS_HOME=str(keras_home), **env)
    done = subprocess.run(
        [sys.executable, "-c", code], env=environment, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def _write_config(home: Path, backend: str) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    (home / "keras.json").write_text(json.dumps({"backend": backend, "floatx": "float32"}))
    return home


def test_the_environment_has_the_start_up_hook():
    pth = Path(sysconfig.get_paths()["purelib"]) / _keras_default.PTH_NAME
    assert pth.is_file(), f"{pth} is missing: run `make setup` (it installs the hook)"


def test_import_keras_first_runs_on_jax(tmp_path):
    code = "import keras; import deepspark; print(keras.backend.backend(), deepspark.__name__)"
    assert _python(code, tmp_path / "fresh") == "jax deepspark"
    # Keras' own file naming TensorFlow (written by an earlier Keras) does not break it either.
    assert _python(code, _write_config(tmp_path / "tf", "tensorflow")) == "jax deepspark"


@pytest.mark.parametrize("chosen", ["torch", "jax"])
def test_a_backend_in_keras_json_is_the_users_choice(tmp_path, chosen):
    home = _write_config(tmp_path / chosen, chosen)
    code = "import os, deepspark; print(os.environ['KERAS_BACKEND'])"
    assert _python(code, home) == chosen


def test_the_environment_variable_wins_over_everything(tmp_path):
    home = _write_config(tmp_path / "t", "jax")
    code = "import os, deepspark; print(os.environ['KERAS_BACKEND'])"
    assert _python(code, home, KERAS_BACKEND="torch") == "torch"
