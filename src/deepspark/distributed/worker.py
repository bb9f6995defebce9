"""What every rank of a distributed ``deepspark.train`` runs: its shard, the shared model, the
distributed optimizer and callbacks; rank 0 alone checkpoints, logs to MLflow and returns the model.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from pathlib import Path
from typing import Any

from deepspark._backend import import_keras
from deepspark.config import TrainConfig
from deepspark.distributed.shards import ShardSet, read_shard
from deepspark.training.checkpoint import CheckpointStore

logger = logging.getLogger("deepspark.distributed")


@dataclasses.dataclass(frozen=True)
class WorkerJob:
    """Everything a rank needs, small and picklable (the data travels as shard paths)."""

    config: dict[str, Any]
    shards: ShardSet
    initial_model: bytes  # the compiled, untrained model as a .keras file
    checkpoint_dir: str
    run_id: str
    tracking_uri: str


def model_to_bytes(model) -> bytes:
    """A Keras model (with its optimizer state) as the bytes of a ``.keras`` file."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.keras"
        model.save(path)
        return path.read_bytes()


def model_from_bytes(data: bytes):
    """The inverse of ``model_to_bytes`` (compiled; safe mode)."""
    import deepspark.models.preprocessing  # noqa: F401  registers the custom layers

    keras = import_keras()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.keras"
        path.write_bytes(data)
        return keras.saving.load_model(path, safe_mode=True)


def train_worker(job: WorkerJob) -> dict[str, Any] | None:
    """Train on this rank's shard; rank 0 returns ``{"outcome": {...}, "model": bytes}``."""
    from deepspark.distributed.backends import get_backend
    from deepspark.distributed.optimizer import DistributedOptimizer

    keras = import_keras()
    backend = get_backend()
    config = TrainConfig.from_dict(job.config)
    store = CheckpointStore(job.checkpoint_dir)
    # Rank 0 alone reads the checkpoint; the others get its state (and, at train begin, its
    # weights and optimizer state), so only rank 0 needs to see the checkpoint folder.
    state = backend.broadcast_object(store.read_state() if backend.rank == 0 else None)
    start_epoch = state["epoch"] + 1 if state else 0
    keras.utils.set_random_seed(config.seed + 1000 * backend.rank + start_epoch)
    target_rate = _target_learning_rate(config, backend.size)
    fresh_rate = target_rate / backend.size if config.warmup_epochs else target_rate
    model = _rank_model(job, store, state, rank=backend.rank, fresh_rate=fresh_rate)
    DistributedOptimizer(model.optimizer, backend=backend)
    history = list(state["history"]) if state else []
    callbacks, nan_guard, early_stopping = _rank_callbacks(
        job, config, store, state, history, backend=backend, target_rate=target_rate
    )
    train_inputs, train_target = read_shard(job.shards, "train", backend.rank)
    model.fit(
        train_inputs,
        train_target,
        validation_data=read_shard(job.shards, "val", backend.rank),
        epochs=config.epochs,
        initial_epoch=start_epoch,
        batch_size=config.batch_size,
        shuffle=True,
        verbose=0,
        callbacks=callbacks,
    )
    if backend.rank != 0:
        return None
    outcome = {
        "history": history,
        "epochs_completed": history[-1]["epoch"] + 1 if history else start_epoch,
        "best_epoch": int(early_stopping.best_epoch),
        "stopped_early": early_stopping.stopped_epoch > 0,
        "diverged_at": nan_guard.failed_at,
        "resumed_from_epoch": start_epoch if state is not None else None,
    }
    return {"outcome": outcome, "model": model_to_bytes(model)}


def _rank_model(job: WorkerJob, store: CheckpointStore, state, *, rank: int, fresh_rate: float):
    """Rank 0 resumes from the checkpoint; the others start from the initial model and receive
    rank 0's state at train begin. A fresh start sets the (scaled) learning rate."""
    if state is not None and rank == 0:
        return store.load_model(state)
    model = model_from_bytes(job.initial_model)
    if state is None:
        model.optimizer.learning_rate = fresh_rate
    return model


def _target_learning_rate(config: TrainConfig, world_size: int) -> float:
    from deepspark.training.optimizers import DEFAULT_LEARNING_RATES

    rate = DEFAULT_LEARNING_RATES[config.optimizer] if config.lr is None else config.lr
    return float(rate) * (world_size if config.scale_lr else 1)


def _rank_callbacks(job, config, store, state, history, *, backend, target_rate):
    """Distributed callbacks first (so the rest see global metrics), then deepspark's own;
    checkpoints, MLflow and progress on rank 0 only."""
    from deepspark.distributed import callbacks as dist_callbacks
    from deepspark.training.fit import _callbacks

    writer = backend.rank == 0
    if writer:
        import mlflow

        mlflow.set_tracking_uri(job.tracking_uri)
    own, nan_guard, early_stopping = _callbacks(
        config,
        store,
        state,
        history,
        nan_guard=dist_callbacks.DistributedNanGuard(),
        writer=writer,
        run_id=job.run_id,
    )
    callbacks = [
        dist_callbacks.BroadcastInitialState(backend=backend),
        dist_callbacks.MetricAverage(backend=backend),
    ]
    if config.warmup_epochs:
        callbacks.append(
            dist_callbacks.LearningRateWarmup(
                target_rate, warmup_epochs=config.warmup_epochs, initial_fraction=1 / backend.size
            )
        )
    return callbacks + own, nan_guard, early_stopping
