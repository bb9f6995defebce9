"""Tracking that survives an MLflow server going away: training never waits minutes on it.

MLflow's REST client retries a refused connection with exponential backoff (7 retries, factor
2: minutes). deepspark asks the server's ``/health`` first (two seconds at most) and makes its
own per-epoch calls with short retry settings, so a dead server costs seconds, not minutes:

- ``check_tracking_server``: the start of a run fails fast with one line.
- ``BufferedMetricLogger``: per-epoch metrics the server did not take are kept (in memory; the
  run's checkpoint keeps every epoch's history on disk) and logged in order, once each, at the
  next epoch the server answers. One warning names the tracking URI.
- ``TrackingUnavailableError``: the end of a run could not reach the server; the model and the
  metrics stay in the run's checkpoint folder and the message says how to log them later
  (``deepspark sync RUN_ID``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections.abc import Iterator

from deepspark.errors import TrackingUnavailableError

logger = logging.getLogger(__name__)

HEALTH_TIMEOUT_S = 2.0
# Short backoff and timeout (with one retry): a per-epoch call to a dead server costs seconds.
QUICK_REQUESTS = {
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
}


def _tracking_uri(tracking_uri: str | None = None) -> str:
    import mlflow

    return tracking_uri or mlflow.get_tracking_uri()


def tracking_reachable(tracking_uri: str | None = None) -> bool:
    """Whether the tracking store answers now: an ``http(s)`` server that responds (any status)
    to ``/health`` within ``HEALTH_TIMEOUT_S``; any other store (a file, sqlite) is local."""
    import requests

    uri = _tracking_uri(tracking_uri)
    if not uri.startswith(("http://", "https://")):
        return True
    try:
        requests.get(f"{uri.rstrip('/')}/health", timeout=HEALTH_TIMEOUT_S)
    except requests.RequestException:
        return False
    return True


def check_tracking_server(tracking_uri: str | None = None) -> None:
    """Raise ``TrackingUnavailableError`` at once when the tracking server does not answer.

    Raises:
        TrackingUnavailableError: The server refused or timed out.
    """
    uri = _tracking_uri(tracking_uri)
    if not tracking_reachable(uri):
        raise TrackingUnavailableError(
            f"The MLflow tracking server at {uri} does not answer; start it or point "
            f"--tracking-uri / MLFLOW_TRACKING_URI at a running one. Received: tracking_uri={uri}"
        )


@contextlib.contextmanager
def quick_requests(*, retries: int = 1) -> Iterator[None]:
    """MLflow REST calls in this block retry ``retries`` times, briefly (``QUICK_REQUESTS``),
    unless the user set those variables. The environment is process-wide: another thread's
    MLflow call in the block gets the same short retries."""
    wanted = {**QUICK_REQUESTS, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(retries)}
    changed = {name: value for name, value in wanted.items() if name not in os.environ}
    os.environ.update(changed)
    try:
        yield
    finally:
        for name in changed:
            os.environ.pop(name, None)


def is_unavailable(error: BaseException) -> bool:
    """Whether ``error`` says the tracking store did not answer (a refused or timed-out
    connection, a server error, a locked sqlite store) rather than a bad request."""
    import requests
    from mlflow.exceptions import MlflowException

    if isinstance(error, requests.RequestException | ConnectionError | TimeoutError):
        return True
    if isinstance(error, MlflowException):
        text = str(error).lower()
        signs = ("max retries", "connection", "timed out", "database is locked")
        return any(sign in text for sign in signs) or re.search(r"code 5\d\d", text) is not None
    return False


class BufferedMetricLogger:
    """Logs each epoch's metrics to an MLflow run, buffering what the store did not take.

    Args:
        run_id: The run to log to.
        tracking_uri: Its tracking URI (named in the warning); default MLflow's current one.

    Attributes:
        pending_: ``(step, metrics)`` not logged yet, oldest first.
        warned_: Whether the one warning was given.
    """

    def __init__(self, run_id: str, *, tracking_uri: str | None = None):
        self.run_id = run_id
        self.tracking_uri = tracking_uri
        self.pending_: list[tuple[int, dict[str, float]]] = []
        self.warned_ = False

    def log(self, metrics: dict[str, float], *, step: int) -> bool:
        """Queue ``metrics`` at ``step`` and log every queued step the store takes, in order.

        Returns:
            ``True`` when nothing is left pending.
        """
        self.pending_.append((int(step), dict(metrics)))
        return self.flush()

    def flush(self) -> bool:
        """Log the queued steps in order; stop at the first the store does not take.

        Returns:
            ``True`` when nothing is left pending.
        """
        import mlflow
        from mlflow.entities import Metric

        if not self.pending_:
            return True
        uri = _tracking_uri(self.tracking_uri)
        if not tracking_reachable(uri):
            self._warn(uri, "does not answer")
            return False
        client = mlflow.MlflowClient(tracking_uri=uri)
        buffered = len(self.pending_)
        while self.pending_:
            step, metrics = self.pending_[0]
            now = int(time.time() * 1000)
            batch = [Metric(key, float(value), now, step) for key, value in metrics.items()]
            try:
                with quick_requests():
                    client.log_batch(self.run_id, metrics=batch)
            except Exception as error:  # noqa: BLE001  kept for the next epoch if transient
                if not is_unavailable(error):
                    raise
                self._warn(uri, f"failed ({type(error).__name__})")
                return False
            self.pending_.pop(0)
        if self.warned_ and buffered > 1:
            logger.info("MLflow at %s is back: logged %d buffered epochs", uri, buffered)
        return True

    def _warn(self, uri: str, what: str) -> None:
        if self.warned_:
            return
        self.warned_ = True
        logger.warning(
            "MLflow tracking at %s %s: training goes on; epoch metrics are buffered (and kept "
            "in the run's checkpoint) and logged when it answers again",
            uri,
            what,
        )


PENDING_FOLDER = "pending_finish"
PENDING_FILE = "finish.json"
EXAMPLE_FILE = "example.parquet"


def save_pending(store, *, model, example, document: dict) -> None:
    """Keep what the end of a run could not log in ``store`` (the run's checkpoint folder, a
    ``store.Store``): the model's files, its input example and ``document`` (metrics, tags,
    result), written last so that a folder with ``finish.json`` is whole."""
    import io
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory(prefix="deepspark-pending-") as scratch:
        saved = model.save(Path(scratch) / "model")
        for path in sorted(saved.iterdir()):
            store.upload(path, PENDING_FOLDER, "model", path.name)
    if example is not None:
        buffer = io.BytesIO()
        example.to_parquet(buffer, index=False)
        store.write_bytes(buffer.getvalue(), PENDING_FOLDER, EXAMPLE_FILE)
    store.write_json(document, PENDING_FOLDER, PENDING_FILE)


def has_pending(store) -> bool:
    """Whether ``store`` holds a run end that ``save_pending`` kept."""
    return store.exists(PENDING_FOLDER, PENDING_FILE)


def load_pending(store, scratch) -> tuple:
    """``(DeepsparkModel, example or None, document)`` kept by ``save_pending``; the model's
    files are copied into the local folder ``scratch``."""
    import io
    from pathlib import Path

    import pandas as pd

    from deepspark.tracking.model import KERAS_FILE, METADATA_FILE, DeepsparkModel

    folder = Path(scratch)
    for name in (KERAS_FILE, METADATA_FILE):
        (folder / name).write_bytes(store.read_bytes(PENDING_FOLDER, "model", name))
    example = None
    if store.exists(PENDING_FOLDER, EXAMPLE_FILE):
        example = pd.read_parquet(io.BytesIO(store.read_bytes(PENDING_FOLDER, EXAMPLE_FILE)))
    document = store.read_json(PENDING_FOLDER, PENDING_FILE)
    return DeepsparkModel.from_directory(folder), example, document


def logged_steps(run_id: str, key: str) -> set[int]:
    """The steps at which run ``run_id`` has metric ``key``."""
    import mlflow

    history = mlflow.MlflowClient().get_metric_history(run_id, key)
    return {metric.step for metric in history}


def logged_artifacts(run_id: str) -> set[str]:
    """Top-level artifact paths of run ``run_id``."""
    import mlflow

    return {item.path for item in mlflow.MlflowClient().list_artifacts(run_id)}
