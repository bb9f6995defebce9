"""Tracking faults (issue 21, item 2), on a real MLflow tracking server and a real sqlite store.

- The server stops during training and starts again: training goes on, one warning, the epochs
  it missed are logged in order, once each, and the run ends FINISHED with its model.
- The server stops for good: training ends with one line naming ``deepspark sync RUN_ID``; the
  model and metrics wait in the run's checkpoint folder, and ``deepspark sync`` logs them once
  the server is back.
- No server at the start: one line at once, no run.
- Eight ``deepspark train`` processes on one sqlite store: all FINISHED with all their metrics.

The server is MLflow's own tracking server app (``mlflow.server.fastapi_app``, what ``mlflow
server`` runs under uvicorn) over a sqlite store and a local artifact folder. A standby process
imports it ahead, so that a restart on the same port takes a second rather than the ten or more
an import of MLflow's server costs on two busy cores; it is started when the server stops (it
imports while the test trains without a server), not after each start: a standby nobody restarts
would be a whole server import wasted.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest

from tests.conftest import make_table

pytestmark = pytest.mark.slow

SETTINGS = {"hidden": (8,), "batch_size": 64, "patience": 20, "experiment": "faults"}
STANDBY = """
import sys
import uvicorn
from mlflow.server import fastapi_app  # the app `mlflow server` serves, imported ahead
sys.stdin.readline()  # serve when told
uvicorn.run(fastapi_app.app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class TrackingServer:
    """A real MLflow tracking server on a fixed port that tests stop and start again."""

    def __init__(self, folder: Path, database: Path):
        self.port = _free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        store = f"sqlite:///{database}"
        self.env = {
            **os.environ,
            "_MLFLOW_SERVER_FILE_STORE": store,
            "_MLFLOW_SERVER_REGISTRY_STORE": store,
            "_MLFLOW_SERVER_ARTIFACT_ROOT": "mlflow-artifacts:/",
            "_MLFLOW_SERVER_SERVE_ARTIFACTS": "true",
            "_MLFLOW_SERVER_ARTIFACT_DESTINATION": str(folder / "artifacts"),
            "MLFLOW_TRACKING_URI": store,
        }
        self.folder = folder
        self.serving = None
        self.standby = self._spawn()

    def _spawn(self) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-c", STANDBY, str(self.port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=open(self.folder / "server.log", "ab"),  # noqa: SIM115  the child owns it
            env=self.env,
            text=True,
        )

    def start(self, timeout: float = 120) -> None:
        self.serving, self.standby = self.standby, None
        self.serving.stdin.write("\n")
        self.serving.stdin.flush()
        deadline = time.monotonic() + timeout
        while not _answers(self.uri):
            assert self.serving.poll() is None, (self.folder / "server.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "the tracking server did not start"
            time.sleep(0.2)

    def stop(self) -> None:
        self.serving.kill()
        self.serving.wait(timeout=30)
        self.serving = None
        self.standby = self._spawn()  # the restart's process, imported while the test trains

    def close(self) -> None:
        for process in (self.serving, self.standby):
            if process is not None:
                process.kill()
                process.wait(timeout=30)


def _answers(uri: str) -> bool:
    import requests

    try:
        return requests.get(f"{uri}/health", timeout=1).ok
    except requests.RequestException:
        return False


@pytest.fixture(scope="module")
def server(tmp_path_factory, mlflow_template):
    folder = tmp_path_factory.mktemp("tracking-server")
    shutil.copy(mlflow_template, folder / "mlflow.db")
    running = TrackingServer(folder, folder / "mlflow.db")
    running.start()
    yield running
    running.close()


@pytest.fixture
def live_server(server, workdir):
    """The module's server, running, as this test's tracking URI."""
    if server.serving is None:
        server.start()
    mlflow.set_tracking_uri(server.uri)
    return server


@pytest.fixture
def warnings_seen():
    """The warnings deepspark's tracking logs (its own handler: the CLI may stop propagation)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(level=logging.WARNING)
    handler.emit = records.append
    tracking_logger = logging.getLogger("deepspark.tracking.resilient")
    tracking_logger.addHandler(handler)
    yield records
    tracking_logger.removeHandler(handler)


def _epoch_callback(actions: dict):
    """A Keras callback that runs ``actions[epoch]()`` after deepspark's own epoch callbacks."""
    import keras

    class AtEpochEnd(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch in actions:
                actions[epoch]()

    return AtEpochEnd()


def _steps(client, run_id: str, key: str) -> list[int]:
    return sorted(metric.step for metric in client.get_metric_history(run_id, key))


def test_no_server_at_start_fails_at_once_with_one_line(workdir, capsys):
    from deepspark.cli.main import main

    (workdir / "table.csv").write_text(make_table(rows=60).to_csv(index=False))
    uri = f"http://127.0.0.1:{_free_port()}"
    started = time.monotonic()
    with pytest.raises(SystemExit) as exited:
        main(["train", "--data", "table.csv", "--target", "y", "--tracking-uri", uri])
    assert time.monotonic() - started < 30  # MLflow's own retries would take minutes
    assert exited.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error[-1].startswith("deepspark: error: The MLflow tracking server at")
    assert uri in error[-1] and "Traceback" not in "\n".join(error)


def test_server_restarted_during_training_loses_no_epoch(live_server, workdir, warnings_seen):
    from deepspark import train

    epochs = 5
    stopped_for = {}

    def stop():
        stopped_for["since"] = time.monotonic()
        live_server.stop()

    def restart():
        live_server.start()
        stopped_for["seconds"] = time.monotonic() - stopped_for["since"]

    result = train(
        make_table(rows=120),
        "y",
        epochs=epochs,
        tracking_uri=live_server.uri,
        callbacks=[_epoch_callback({0: stop, 2: restart})],
        **SETTINGS,
    )
    client = mlflow.MlflowClient(live_server.uri)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    for key in ("train_loss", "val_loss", "learning_rate"):
        assert _steps(client, result.run_id, key) == list(range(epochs)), key
    assert run.data.metrics["epochs_completed"] == epochs
    assert run.data.tags["deepspark.model_uri"] == result.model_uri
    assert [record.getMessage() for record in warnings_seen] == [
        f"MLflow tracking at {live_server.uri} does not answer: training goes on; epoch "
        "metrics are buffered (and kept in the run's checkpoint) and logged when it answers again"
    ]


def test_server_gone_for_good_keeps_the_model_and_sync_logs_it(
    live_server, workdir, warnings_seen, capsys
):
    from deepspark import load_model, train
    from deepspark.cli.main import main
    from deepspark.tracking.resilient import TrackingUnavailableError

    epochs = 3
    table = make_table(rows=120)
    started = time.monotonic()
    with pytest.raises(TrackingUnavailableError, match="deepspark sync ") as failed:
        train(
            table,
            "y",
            epochs=epochs,
            tracking_uri=live_server.uri,
            callbacks=[_epoch_callback({0: live_server.stop})],
            **SETTINGS,
        )
    assert time.monotonic() - started < 60  # seconds, not MLflow's minutes of retries
    line = " ".join(str(failed.value).split())
    run_id = line.split()[1]
    assert line.endswith(f"log them with: deepspark sync {run_id} --tracking-uri {live_server.uri}")
    assert len(warnings_seen) == 1
    kept = Path(line.split("kept in ")[1].split(". Once")[0])
    assert (kept / "pending_finish" / "finish.json").exists()

    live_server.start()
    client = mlflow.MlflowClient(live_server.uri)
    assert client.get_run(run_id).info.status == "RUNNING"
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(["sync", run_id, "--tracking-uri", live_server.uri, "--json"])
    assert exited.value.code == 0
    synced = json.loads(capsys.readouterr().out)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    for key in ("train_loss", "val_loss"):
        assert _steps(client, run_id, key) == list(range(epochs)), key
    assert _steps(client, run_id, "val_rmse") == list(range(epochs + 1))  # + the final score
    assert synced["model_uri"] == run.data.tags["deepspark.model_uri"]
    assert not kept.exists()
    predictions = load_model(synced["model_uri"]).predict(table.head(5))
    assert len(predictions) == 5

    with pytest.raises(SystemExit) as again:  # nothing is logged twice
        main(["sync", run_id, "--tracking-uri", live_server.uri])
    assert again.value.code == 2


# Eight `deepspark train` processes forked from one that imported deepspark, Keras, MLflow and
# the modules a train run imports on its way (MLflow's sqlite store, its pyfunc logging,
# deepspark's train workflow: no computation yet, so nothing to inherit but code): the test pays
# those imports once, not eight times over (each child's CPU 5 s -> 2.7 s), and each child runs
# the CLI's own main() on its own sqlite connections.
CROWD = """
import json, os, sys
import keras, mlflow  # noqa: F401
import mlflow.pyfunc, mlflow.store.tracking.sqlalchemy_store  # noqa: F401
import mlflow.store.model_registry.sqlalchemy_store  # noqa: F401
import deepspark.workflows.train, deepspark.workflows._finish, deepspark.tracking.pyfunc  # noqa
import sklearn.metrics, pyarrow.dataset, pyarrow.parquet, git, rich.progress  # noqa: F401
from deepspark.cli.main import main
argv = json.loads(sys.argv[1])
children = []
for index in range(8):
    pid = os.fork()
    if pid == 0:
        with open(f"out-{index}.json", "w") as out, open(f"err-{index}.txt", "w") as err:
            os.dup2(out.fileno(), 1)
            os.dup2(err.fileno(), 2)
            try:
                main(argv)
            except SystemExit as done:
                os._exit(done.code or 0)
            os._exit(0)
    children.append(pid)
codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
print(json.dumps(codes))
"""


def test_eight_train_processes_share_one_sqlite_store(workdir):
    make_table(rows=60).to_csv(workdir / "table.csv", index=False)
    uri = os.environ["MLFLOW_TRACKING_URI"]
    # The smallest run that still logs per-epoch metrics, a final score and a model: one epoch
    # of a 4-unit MLP (the default tabular_net compiles several times the graph).
    argv = ["-q", "train", "--data", "table.csv", "--target", "y", "--epochs", "1"]
    argv += ["--model", "mlp", "--hidden", "4", "--experiment", "crowd", "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", CROWD, json.dumps(argv)],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    codes = json.loads(done.stdout.strip().splitlines()[-1])
    errors = [(workdir / f"err-{index}.txt").read_text()[-2000:] for index in range(8)]
    assert codes == [0] * 8, errors
    outputs = [((workdir / f"out-{index}.json").read_text(), "") for index in range(8)]
    run_ids = {json.loads(out)["run_id"] for out, _ in outputs}
    assert len(run_ids) == 8
    client = mlflow.MlflowClient(uri)
    for run_id in run_ids:
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"
        assert _steps(client, run_id, "train_loss") == [0]
        assert "val_rmse" in run.data.metrics and "deepspark.model_uri" in run.data.tags
