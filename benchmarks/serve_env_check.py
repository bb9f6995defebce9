"""MLflow builds a serving environment from a deepspark artifact alone, and it answers the same.

A small model is trained into a temporary sqlite MLflow store and registered with the alias
``champion`` (``--backend jax|torch`` picks the Keras backend that trains it):

- ``--kind tabular``: a regression on a few hundred rows of
  ``../shared/data/california_housing.csv`` (``bagging=1``, 2 epochs), registered as
  ``houses``; 5 raw rows are posted as ``dataframe_split``.
- ``--kind image``: a tiny ``cnn`` (filters 8,16, 32x32 pixels, 1 epoch) on a few ants and bees
  JPEGs of ``../shared/data/images/hymenoptera/train``, registered as ``hymenoptera``; 4 JPEGs
  of ``val`` are posted base64-encoded in the ``image`` column of a ``dataframe_split`` (MLflow's
  scoring protocol decodes base64 for binary columns; ``deepspark serve`` takes the same body).

Then MLflow's own server builds the model's environment and serves it:

    mlflow models serve -m models:/NAME@champion --env-manager uv -p PORT

with a fresh ``MLFLOW_ENV_ROOT`` and uv (or pip) cache under the temporary folder (a cold
build: every package is downloaded from PyPI), ``nice -n 5``, and a ``PATH`` that holds only
``uv``, the Python interpreter that trained the model (uv needs the version ``python_env.yaml``
names) and the system folders: not the venv where deepspark is installed, no ``PYTHONPATH`` and
no ``KERAS_BACKEND`` (the environment picks the backend it has). The working folder is the
temporary one too (MLflow's artifacts go to it). ``--env-manager virtualenv`` (pyenv +
virtualenv, pip with the user's pip configuration) is the alternative.

``/ping`` is polled until it answers (``--timeout``, default 15 minutes), the inputs are posted
to ``/invocations`` and the answer is compared with ``deepspark.load_model(uri).predict`` on the
same inputs in this process (numeric columns: relative tolerance 1e-5; labels: equal); the built
environment's Python is asked whether it can ``import deepspark`` (it must not) and, loading the
model with ``mlflow.pyfunc.load_model``, where deepspark then comes from (the artifact's bundled
``code/deepspark_bundle``) and which Keras backend it runs. The server is stopped by killing its
process group.

Reported: ``build_seconds`` (start to ``/ping`` 200: download, environment build, server
start), ``first_answer_seconds`` (the first ``/invocations`` request), ``max_abs_difference``
(over the numeric output columns: ``prediction`` of a regression, ``probability_<class>`` of a
classifier), ``labels_equal``, ``env_manager``, ``requirements`` (the artifact's
``requirements.txt``, what the environment installed), ``installed_packages`` (the
environment's package count), ``environment_megabytes``, ``python_version`` and
``keras_backend`` of the environment, ``deepspark_import_without_model`` and ``deepspark_from``.

Usage: ``python benchmarks/serve_env_check.py [--kind tabular|image] [--backend jax|torch]
[--env-manager uv|virtualenv] [--rows 400] [--epochs N] [--timeout 900] [--keep-cache]
[--json]`` (prints one JSON object on stdout; needs PyPI; a cold uv build downloads a few
hundred MB, a torch model's a few GB: PyPI's Linux torch is the CUDA build). Not part of the
test suite for that reason.
"""

from __future__ import annotations

import argparse
import base64
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
HYMENOPTERA = REPO.parent / "shared" / "data" / "images" / "hymenoptera"
TARGET = "median_house_value"
MODEL_NAMES = {"tabular": "houses", "image": "hymenoptera"}
IMAGES_PER_CLASS = 16  # training JPEGs per class for --kind image
SMALL_CNN = {"model": "cnn", "filters": (8, 16), "image_size": (32, 32), "batch_size": 8}

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
import deepspark, keras
print(json.dumps({"alone": alone, "with_model": deepspark.__file__,
                  "python": sys.version.split()[0], "backend": keras.backend.backend()}))
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def train_tabular(folder: Path, options, settings: dict):
    """Train on ``options.rows`` California rows; returns 5 raw rows to score."""
    import pandas as pd

    import deepspark

    table = pd.read_csv(CALIFORNIA).sample(options.rows, random_state=7)
    table.to_csv(folder / "houses.csv", index=False)
    deepspark.train(str(folder / "houses.csv"), TARGET, epochs=options.epochs or 2, bagging=1,
                    **settings)  # fmt: skip
    sample = pd.read_csv(CALIFORNIA).drop(columns=[TARGET]).sample(5, random_state=11)
    return sample.reset_index(drop=True)


def train_image(folder: Path, options, settings: dict):
    """Train a tiny CNN on a few ants and bees; returns 4 ``val`` JPEGs as an ``image`` column."""
    import pandas as pd

    import deepspark

    for label in ("ants", "bees"):
        target = folder / "images" / label
        target.mkdir(parents=True)
        for source in sorted((HYMENOPTERA / "train" / label).glob("*.jpg"))[:IMAGES_PER_CLASS]:
            shutil.copy(source, target)
    deepspark.train(str(folder / "images"), epochs=options.epochs or 1, seed=3, **SMALL_CNN,
                    **settings)  # fmt: skip
    files = [f for label in ("ants", "bees")
             for f in sorted((HYMENOPTERA / "val" / label).glob("*.jpg"))[:2]]  # fmt: skip
    return pd.DataFrame({"image": [path.read_bytes() for path in files]})


def train_and_register(folder: Path, options) -> tuple[str, object]:
    """Train the ``--kind`` model and register it ``NAME@champion``; returns
    ``(tracking_uri, the raw inputs to score)``."""
    tracking_uri = f"sqlite:///{folder / 'mlflow.db'}"
    settings = {"keras_backend": options.backend, "tracking_uri": tracking_uri,
                "register": MODEL_NAMES[options.kind], "aliases": ["champion"]}  # fmt: skip
    trainer = train_image if options.kind == "image" else train_tabular
    return tracking_uri, trainer(folder, options, settings)


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
    # KERAS_BACKEND too: import deepspark set it here; the environment must find its own.
    drop = ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "CONDA_PREFIX", "KERAS_BACKEND")
    env = {key: value for key, value in os.environ.items() if key not in drop}
    env.update(PATH=path, MLFLOW_TRACKING_URI=tracking_uri,
               MLFLOW_ENV_ROOT=str(folder / "env_root"))  # fmt: skip
    if not keep_cache:
        env["UV_CACHE_DIR"] = str(folder / "uv_cache")
        env["PIP_CACHE_DIR"] = str(folder / "pip_cache")  # --env-manager virtualenv
    return env


def start_server(folder: Path, env: dict[str, str], model_uri: str, env_manager: str) -> tuple:
    port = _free_port()
    mlflow = Path(sys.executable).parent / "mlflow"
    command = ["nice", "-n", "5", str(mlflow), "models", "serve", "-m", model_uri,
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


def request_body(sample) -> bytes:
    """``dataframe_split`` JSON of the raw inputs; bytes (images) as base64 text."""
    text = sample.map(lambda v: base64.b64encode(v).decode() if isinstance(v, bytes) else v)
    split = json.loads(text.to_json(orient="split", index=False))
    return json.dumps({"dataframe_split": split}).encode()


def score(url: str, sample):
    """The server's answer for ``sample`` as a DataFrame, and the seconds it took."""
    import pandas as pd

    request = urllib.request.Request(
        f"{url}/invocations", data=request_body(sample),
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    started = time.monotonic()
    with urllib.request.urlopen(request, timeout=300) as answer:
        document = json.loads(answer.read())
    # Records or columns, MLflow's pandas output comes as either.
    return pd.DataFrame(document["predictions"]), time.monotonic() - started


def compare(served, expected) -> dict:
    """Numeric output columns within rtol 1e-5; label columns equal."""
    import numpy as np

    numeric = [c for c in expected.columns if np.issubdtype(expected[c].dtype, np.floating)]
    labels = [c for c in expected.columns if c not in numeric and c != "error"]
    got = served[numeric].to_numpy(dtype=np.float64)
    want = expected[numeric].to_numpy(dtype=np.float64)
    difference = np.abs(got - want)
    return {
        "compared_columns": numeric + labels,
        "max_abs_difference": float(difference.max()),
        "max_rel_difference": float((difference / np.maximum(np.abs(want), 1e-12)).max()),
        "same_predictions_rel_1e-5": bool(np.allclose(got, want, rtol=1e-5, atol=0.0)),
        "labels_equal": all(served[c].tolist() == expected[c].tolist() for c in labels),
    }


def probe_environment(folder: Path, env: dict[str, str], model_uri: str) -> dict:
    """The built environment's own answers (its python, deepspark with and without the model)."""
    root = folder / "env_root"  # MLflow builds one environment per model under it
    found = sorted(root.glob("*/bin/python")) + sorted(root.glob("*/*/bin/python"))
    if not found:
        raise RuntimeError(f"no environment under {folder / 'env_root'}")
    python = found[0]
    done = subprocess.run(
        [str(python), "-c", _PROBE, model_uri], capture_output=True, text=True, env=env,
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
    size = sum(f.lstat().st_size for f in python.parents[1].rglob("*") if f.is_file())
    answer["megabytes"] = round(size / 1e6)
    return answer


def model_requirements(tracking_uri: str, model_uri: str) -> list[str]:
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    folder = Path(mlflow.artifacts.download_artifacts(model_uri))
    return (folder / "requirements.txt").read_text().split()


def check(options) -> dict:
    import deepspark

    model_uri = f"models:/{MODEL_NAMES[options.kind]}@champion"
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="serve-env-") as scratch, contextlib.chdir(scratch):
        folder = Path(scratch)  # the working folder too: MLflow's artifacts go to ./mlruns
        tracking_uri, sample = train_and_register(folder, options)
        train_seconds = time.perf_counter() - started
        expected = deepspark.load_model(model_uri).predict(sample)
        env = serving_environment(folder, tracking_uri, options.keep_cache)
        process, url = start_server(folder, env, model_uri, options.env_manager)
        try:
            build_seconds = wait_ready(process, url, folder / "server.log", options.timeout)
            served, first_answer_seconds = score(url, sample)
            environment = probe_environment(folder, env, model_uri)
        finally:
            stop_server(process)
            log = (folder / "server.log").read_text()
            print(log[-4000:], file=sys.stderr)  # what MLflow did, for the record
        return {
            "check": "serve_env",
            "kind": options.kind,
            "backend": options.backend,
            "env_manager": options.env_manager,
            "model_uri": model_uri,
            "inputs_scored": len(sample),
            "train_seconds": round(train_seconds, 1),
            "build_seconds": round(build_seconds, 1),
            "first_answer_seconds": round(first_answer_seconds, 3),
            **compare(served, expected),
            "predictions_served": served.drop(columns="error", errors="ignore").to_dict("list"),
            "requirements": model_requirements(tracking_uri, model_uri),
            "installed_packages": environment["installed_packages"],
            "environment_megabytes": environment["megabytes"],
            "python_version": environment["python"],
            "keras_backend": environment["backend"],
            "deepspark_import_without_model": environment["alone"],
            "deepspark_from": environment["with_model"],
            "deepspark_from_bundle": "/code/deepspark_bundle/deepspark/"
            in environment["with_model"],
            "cold_cache": not options.keep_cache,
            "total_seconds": round(time.perf_counter() - started, 1),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=tuple(MODEL_NAMES), default="tabular")
    parser.add_argument("--backend", choices=("jax", "torch"), default="jax")
    parser.add_argument("--env-manager", choices=("uv", "virtualenv"), default="uv")
    parser.add_argument("--rows", type=int, default=400, help="California rows to train on.")
    parser.add_argument("--epochs", type=int, help="Default: 2 (tabular), 1 (image).")
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
    os.environ["KERAS_BACKEND"] = options.backend  # before deepspark imports Keras
    print(json.dumps(check(options), indent=1))


if __name__ == "__main__":
    main()
