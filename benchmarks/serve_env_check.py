"""MLflow builds a serving environment from a deepspark artifact alone, and it answers the same.

A tabular regression model is trained on a few hundred rows of
``../shared/data/california_housing.csv`` (JAX backend, ``bagging=1``, 2 epochs) into a
temporary sqlite MLflow store and registered as ``houses`` with the alias ``champion``. Then
MLflow's own server builds the model's environment and serves it:

    mlflow models serve -m models:/houses@champion --env-manager uv -p PORT

with a fresh ``MLFLOW_ENV_ROOT`` and uv (or pip) cache under the temporary folder (a cold
build: every package is downloaded from PyPI), ``nice -n 5``, and a ``PATH`` that holds only
``uv``, the Python interpreter that trained the model (uv needs the version ``python_env.yaml``
names) and the system folders: not the venv where deepspark is installed, and no
``PYTHONPATH``. The working folder is the temporary one too (MLflow's artifacts go to it).
``--env-manager virtualenv`` (pyenv + virtualenv) is the alternative.

``/ping`` is polled until it answers (``--timeout``, default 15 minutes), 5 raw rows are posted
as ``dataframe_split`` to ``/invocations`` and compared with ``deepspark.load_model(uri).predict``
in this process (relative tolerance 1e-5); the built environment's Python is asked whether it can
``import deepspark`` (it must not) and, loading the model with ``mlflow.pyfunc.load_model``,
where deepspark then comes from (the artifact's bundled ``code/deepspark_bundle``). The server
is stopped by killing its process group.

Reported: ``build_seconds`` (start to ``/ping`` 200: download, environment build, server
start), ``first_answer_seconds`` (the first ``/invocations`` request), ``max_abs_difference``,
``env_manager``, ``requirements`` (the artifact's ``requirements.txt``, what the environment
installed), ``installed_packages`` (the environment's package count), ``python_version`` of the
environment, ``deepspark_import_without_model`` and ``deepspark_from``.

Usage: ``python benchmarks/serve_env_check.py [--env-manager uv|virtualenv] [--rows 400]
[--epochs 2] [--timeout 900] [--keep-cache] [--json]`` (prints one JSON object on stdout; needs
PyPI; a cold uv build downloads a few hundred MB). Not part of the test suite for that reason.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CALIFORNIA = REPO.parent / "shared" / "data" / "california_housing.csv"
TARGET = "median_house_value"
MODEL_URI = "models:/houses@champion"

# Run in the built environment: deepspark must not import on its own; loading the model (as the
# scoring server does) puts the artifact's bundled copy on sys.path.
_PROBE = """
import json, sys
try:
    import deepspark
    alone = deepspark.__file__
except ImportError:
    alone = None
import mlflow.pyfunc
mlflow.pyfunc.load_model(sys.argv[1])
import deepspark
print(json.dumps({"alone": alone, "with_model": deepspark.__file__,
                  "python": sys.version.split()[0]}))
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def train_and_register(folder: Path, rows: int, epochs: int) -> tuple[str, object]:
    """Train on ``rows`` California rows and register ``houses@champion``; returns
    ``(tracking_uri, sample of 5 raw rows)``."""
    import pandas as pd

    import deepspark

    table = pd.read_csv(CALIFORNIA).sample(rows, random_state=7)
    table.to_csv(folder / "houses.csv", index=False)
    tracking_uri = f"sqlite:///{folder / 'mlflow.db'}"
    deepspark.train(
        str(folder / "houses.csv"), TARGET, epochs=epochs, bagging=1, keras_backend="jax",
        tracking_uri=tracking_uri, register="houses", aliases=["champion"],
    )  # fmt: skip
    sample = pd.read_csv(CALIFORNIA).drop(columns=[TARGET]).sample(5, random_state=11)
    return tracking_uri, sample.reset_index(drop=True)


def serving_environment(folder: Path, tracking_uri: str, keep_cache: bool) -> dict[str, str]:
    """Environment variables of the server: a fresh env root, and a PATH without the venv."""
    tools = folder / "tools"
    tools.mkdir()
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if uv:
        (tools / "uv").symlink_to(uv)
    interpreter = Path(sys._base_executable).resolve().parent  # the version python_env names
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "bin"  # virtualenv
    path = os.pathsep.join(map(str, (tools, interpreter, pyenv, "/usr/local/bin", "/usr/bin",
                                     "/bin")))  # fmt: skip
    drop = ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "CONDA_PREFIX")
    env = {key: value for key, value in os.environ.items() if key not in drop}
    env.update(PATH=path, MLFLOW_TRACKING_URI=tracking_uri,
               MLFLOW_ENV_ROOT=str(folder / "env_root"))  # fmt: skip
    if not keep_cache:
        env["UV_CACHE_DIR"] = str(folder / "uv_cache")
        env["PIP_CACHE_DIR"] = str(folder / "pip_cache")  # --env-manager virtualenv
    return env


def start_server(folder: Path, env: dict[str, str], env_manager: str) -> tuple:
    port = _free_port()
    mlflow = Path(sys.executable).parent / "mlflow"
    command = ["nice", "-n", "5", str(mlflow), "models", "serve", "-m", MODEL_URI,
               "--env-manager", env_manager, "-p", str(port), "-h", "127.0.0.1"]  # fmt: skip
    log = open(folder / "server.log", "w")  # noqa: SIM115  closed with the process
    process = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=folder,
        start_new_session=True,
    )  # fmt: skip
    return process, f"http://127.0.0.1:{port}"


def wait_ready(process, url: str, log: Path, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"server exited ({process.returncode}): {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=2) as answer:
                if answer.status == 200:
                    return time.monotonic() - started
        except OSError:
            pass
        time.sleep(1.0)
    raise RuntimeError(f"server not ready in {timeout} s: {log.read_text()[-3000:]}")


def stop_server(process) -> None:
    for signal_number, wait_s in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, signal_number)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def score(url: str, sample) -> tuple[list[float], float]:
    split = json.loads(sample.to_json(orient="split", index=False))
    body = json.dumps({"dataframe_split": split}).encode()
    request = urllib.request.Request(
        f"{url}/invocations", data=body, headers={"Content-Type": "application/json"}
    )
    started = time.monotonic()
    with urllib.request.urlopen(request, timeout=300) as answer:
        document = json.loads(answer.read())
    seconds = time.monotonic() - started
    predictions = document["predictions"]
    if isinstance(predictions, dict):  # {"prediction": [...]} (column orientation)
        return [float(v) for v in predictions["prediction"]], seconds
    return [float(row["prediction"]) for row in predictions], seconds


def probe_environment(folder: Path, env: dict[str, str]) -> dict:
    """The built environment's own answers (its python, deepspark with and without the model)."""
    root = folder / "env_root"  # MLflow builds one environment per model under it
    found = sorted(root.glob("*/bin/python")) + sorted(root.glob("*/*/bin/python"))
    if not found:
        raise RuntimeError(f"no environment under {folder / 'env_root'}")
    python = found[0]
    done = subprocess.run(
        [str(python), "-c", _PROBE, MODEL_URI], capture_output=True, text=True, env=env,
        cwd=folder, timeout=600,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"probe failed: {done.stderr[-3000:]}")
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    listed = subprocess.run(
        ["uv", "pip", "list", "--python", str(python), "--format", "json"],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    packages = json.loads(listed.stdout) if listed.returncode == 0 else []
    answer["installed_packages"] = len(packages) or None
    answer["environment"] = str(python.parents[1].relative_to(folder))
    return answer


def model_requirements(tracking_uri: str) -> list[str]:
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    folder = Path(mlflow.artifacts.download_artifacts(f"{MODEL_URI}"))
    return (folder / "requirements.txt").read_text().split()


def check(options) -> dict:
    import numpy as np

    import deepspark

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="serve-env-") as scratch, contextlib.chdir(scratch):
        folder = Path(scratch)  # the working folder too: MLflow's artifacts go to ./mlruns
        tracking_uri, sample = train_and_register(folder, options.rows, options.epochs)
        train_seconds = time.perf_counter() - started
        expected = deepspark.load_model(MODEL_URI).predict(sample)["prediction"].to_numpy()
        env = serving_environment(folder, tracking_uri, options.keep_cache)
        process, url = start_server(folder, env, options.env_manager)
        try:
            build_seconds = wait_ready(process, url, folder / "server.log", options.timeout)
            served, first_answer_seconds = score(url, sample)
            environment = probe_environment(folder, env)
        finally:
            stop_server(process)
            log = (folder / "server.log").read_text()
            print(log[-4000:], file=sys.stderr)  # what MLflow did, for the record
        difference = np.abs(np.asarray(served) - expected)
        same = bool(np.allclose(served, expected, rtol=1e-5, atol=0.0))
        return {
            "check": "serve_env",
            "env_manager": options.env_manager,
            "model_uri": MODEL_URI,
            "rows_trained": options.rows,
            "train_seconds": round(train_seconds, 1),
            "build_seconds": round(build_seconds, 1),
            "first_answer_seconds": round(first_answer_seconds, 3),
            "max_abs_difference": float(difference.max()),
            "max_rel_difference": float((difference / np.abs(expected)).max()),
            "same_predictions_rel_1e-5": same,
            "predictions_served": served,
            "requirements": model_requirements(tracking_uri),
            "installed_packages": environment["installed_packages"],
            "python_version": environment["python"],
            "deepspark_import_without_model": environment["alone"],
            "deepspark_from": environment["with_model"],
            "deepspark_from_bundle": "/code/deepspark_bundle/deepspark/"
            in environment["with_model"],
            "cold_cache": not options.keep_cache,
            "total_seconds": round(time.perf_counter() - started, 1),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-manager", choices=("uv", "virtualenv"), default="uv")
    parser.add_argument("--rows", type=int, default=400, help="California rows to train on.")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=900.0, help="Seconds to wait for /ping.")
    parser.add_argument(
        "--keep-cache", action="store_true", help="Use the user's uv cache (not a cold build)."
    )
    parser.add_argument("--json", action="store_true", help="Accepted; the output is JSON.")
    options = parser.parse_args()
    if options.env_manager == "uv" and not shutil.which(
        "uv", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    ):
        sys.exit("uv is not installed: pip install 'uv>=0.13,<0.14'")
    print(json.dumps(check(options), indent=1))


if __name__ == "__main__":
    main()
