"""TensorBoard event files for a fit, written without TensorFlow (``tensorboardX``).

The layout is Keras' own TensorBoard callback's, so ``tensorboard --logdir DIR`` shows train and
validation curves on one chart::

    DIR/train/events.out.tfevents.*        epoch_loss, epoch_rmse..., epoch_learning_rate
    DIR/validation/events.out.tfevents.*   epoch_loss, epoch_rmse...

Scalars are the metrics deepspark logs to MLflow (``train_*``, ``val_*``, ``learning_rate``) at
step = epoch, as MLflow has them. Every event file carries the run id as its suffix, so a run's
own files are found (and logged to its MLflow run under ``tensorboard/``) even in a folder
other runs write to.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from pathlib import Path

from deepspark._backend import import_keras

keras = import_keras()
logger = logging.getLogger("deepspark.training")

TRAIN_FOLDER, VALIDATION_FOLDER = "train", "validation"
ARTIFACT_FOLDER = "tensorboard"


def import_tensorboardx():
    """``tensorboardX``, or ``MissingDependencyError`` with the install hint."""
    from deepspark._optional import require

    return require("tensorboardX", feature="--tensorboard")


def scalar_location(metric: str) -> tuple[str, str]:
    """Where an MLflow metric name goes: ``(folder, tag)``; ``val_rmse`` ->
    ``("validation", "epoch_rmse")``, ``train_loss`` -> ``("train", "epoch_loss")``,
    ``learning_rate`` -> ``("train", "epoch_learning_rate")``."""
    if metric.startswith("val_"):
        return VALIDATION_FOLDER, "epoch_" + metric[len("val_") :]
    if metric.startswith("train_"):
        return TRAIN_FOLDER, "epoch_" + metric[len("train_") :]
    return TRAIN_FOLDER, "epoch_" + metric


class EventWriter:
    """Per-epoch scalars into TensorBoard event files under ``log_dir``.

    Args:
        log_dir: The folder (``train/`` and ``validation/`` are made in it).
        run_id: The MLflow run; it ends every event file's name (``run_files`` finds them).
    """

    def __init__(self, log_dir: str | Path, *, run_id: str):
        self.log_dir = Path(log_dir)
        self.run_id = run_id
        self._writers: dict[str, object] = {}

    def write_epoch(self, epoch: int, metrics: Mapping[str, float]) -> None:
        """One epoch's metrics (MLflow names) at step ``epoch``; non-finite values are left out,
        as MLflow's curve has them."""
        for name, value in metrics.items():
            if name == "epoch" or not math.isfinite(float(value)):
                continue
            folder, tag = scalar_location(name)
            self._writer(folder).add_scalar(tag, float(value), global_step=int(epoch))
        for writer in self._writers.values():
            writer.flush()

    def write_history(self, history: Iterable[Mapping[str, float]]) -> None:
        """Every epoch of a fit's history (``{"epoch": n, metric: value, ...}`` entries)."""
        for entry in history:
            self.write_epoch(int(entry["epoch"]), entry)

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()

    def _writer(self, folder: str):
        if folder not in self._writers:
            tensorboardx = import_tensorboardx()
            self._writers[folder] = tensorboardx.SummaryWriter(
                str(self.log_dir / folder), filename_suffix=f".{self.run_id}"
            )
        return self._writers[folder]


def write_event_files(log_dir: str | Path, run_id: str, history) -> None:
    """A finished fit's whole ``history`` as ``run_id``'s event files under ``log_dir``
    (written afterwards, where no process wrote them while it trained)."""
    events = EventWriter(log_dir, run_id=run_id)
    try:
        events.write_history(history)
    finally:
        events.close()


def run_files(log_dir: str | Path, run_id: str) -> list[Path]:
    """The event files ``run_id`` wrote under ``log_dir`` (an interrupted and resumed run has
    several)."""
    root = Path(log_dir)
    pattern = f"events.out.tfevents.*.{run_id}"
    return sorted(path for path in root.glob(f"*/{pattern}") if path.is_file())


def log_event_files(log_dir: str | Path, run_id: str) -> int:
    """Log ``run_id``'s event files to that MLflow run under ``tensorboard/<folder>/``.

    Returns:
        How many files were logged.
    """
    import mlflow

    client = mlflow.MlflowClient()
    files = run_files(log_dir, run_id)
    for path in files:
        client.log_artifact(run_id, str(path), f"{ARTIFACT_FOLDER}/{path.parent.name}")
    return len(files)


def is_epoch_metric(name: str) -> bool:
    """A per-epoch curve deepspark logs (``train_*``, ``val_*``, ``learning_rate``)."""
    return name.startswith(("train_", "val_")) or name == "learning_rate"


def mlflow_history(run_id: str) -> list[dict[str, float]]:
    """A run's per-epoch curves read back from MLflow as history entries (``{"epoch": n,
    metric: value, ...}``); values logged at step ``epochs_completed`` or later are the final
    whole-split scores, not epochs, and are left out."""
    import mlflow

    client = mlflow.MlflowClient()
    metrics = client.get_run(run_id).data.metrics
    last = metrics.get("epochs_completed")
    entries: dict[int, dict[str, float]] = {}
    for name in filter(is_epoch_metric, metrics):
        for point in client.get_metric_history(run_id, name):
            if last is None or point.step < last:
                entries.setdefault(point.step, {"epoch": point.step})[name] = point.value
    return [entries[epoch] for epoch in sorted(entries)]


class TensorBoardLogger(keras.callbacks.Callback):
    """Writes each completed epoch's ``train_*`` / ``val_*`` metrics and the learning rate to
    TensorBoard event files (the values ``MlflowEpochLogger`` logs, at the same steps).

    Args:
        log_dir: The folder for the event files.
        run_id: The MLflow run (suffix of the event files).
        nan_guard: Epochs after a non-finite loss are not written (nor logged to MLflow).
    """

    def __init__(self, log_dir: str | Path, *, run_id: str, nan_guard=None):
        super().__init__()
        self.events = EventWriter(log_dir, run_id=run_id)
        self.nan_guard = nan_guard

    def on_epoch_end(self, epoch, logs=None):
        if self.nan_guard is not None and self.nan_guard.failed_at is not None:
            return
        from deepspark.training.callbacks import current_learning_rate, mlflow_metric_names

        metrics = mlflow_metric_names(logs or {})
        metrics["learning_rate"] = current_learning_rate(self.model)
        self.events.write_epoch(epoch, metrics)

    def on_train_end(self, logs=None):
        self.events.close()
