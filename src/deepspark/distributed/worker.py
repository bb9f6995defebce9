"""What every rank of a distributed ``deepspark.train`` runs: its shard, the shared model, the
distributed optimizer and callbacks; rank 0 alone checkpoints (with each epoch's metrics, which
the driver relays to MLflow) and leaves the trained model in the store.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import tempfile
from pathlib import Path
from typing import Any

from deepspark._backend import import_keras
from deepspark.config import TrainConfig
from deepspark.distributed.shards import IMAGE_SOURCES, ShardSet, read_shard
from deepspark.training.checkpoint import CheckpointStore

logger = logging.getLogger("deepspark.distributed")
FINAL_MODEL_FILE = "final.keras"  # rank 0's trained model, in the run's checkpoint folder


@dataclasses.dataclass(frozen=True)
class WorkerJob:
    """Everything a rank needs, small and picklable (the data travels as shard paths)."""

    config: dict[str, Any]
    shards: ShardSet
    initial_model: bytes  # the compiled, untrained model as a .keras file
    checkpoint_dir: str  # the run's checkpoint folder in the store (a URI every host reaches)
    run_id: str
    image_spec: dict[str, int] | None = None  # image models: how each rank decodes its images
    model_file: str | None = None  # the checkpoint's .keras file (a fine-tuning phase has its own)
    # A phase that starts after another (transfer learning's fine-tuning): the state it continues
    # from, used unless rank 0 finds a checkpoint of this phase (then the job resumes that).
    start_state: dict[str, Any] | None = None
    checkpoint_extras: dict[str, Any] | None = None  # facts every checkpoint records (the phase)
    stream: bool = False  # stream the shards a batch at a time (a table larger than memory)
    class_weight: dict[int, float] | None = None  # streamed: balanced class weights by index
    user_callbacks: bytes | None = None  # the user's Keras callbacks, cloudpickled


def model_to_bytes(model) -> bytes:
    """A Keras model (with its optimizer state) as the bytes of a ``.keras`` file."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.keras"
        model.save(path)
        return path.read_bytes()


def model_from_bytes(data: bytes):
    """The inverse of ``model_to_bytes`` (compiled; safe mode)."""
    from deepspark.models.loader import load_keras_model

    return load_keras_model(data)


def train_worker(job: WorkerJob) -> dict[str, Any] | None:
    """Train on this rank's shard with deepspark's fit loop; rank 0 writes the model to
    ``FINAL_MODEL_FILE`` in the checkpoint folder and returns ``{"outcome": {...}}``."""
    from deepspark.distributed.backends import get_backend
    from deepspark.distributed.optimizer import DistributedOptimizer
    from deepspark.training.fit import run_fit, shard_streams

    keras = import_keras()
    backend = get_backend()
    config = TrainConfig.from_dict(job.config)
    store = CheckpointStore(job.checkpoint_dir, **_model_file(job))
    # Rank 0 alone reads the checkpoint; the others get its state (and, at train begin, its
    # weights and optimizer state), so only rank 0 needs to see the checkpoint folder.
    state, resumed = backend.broadcast_object(
        _starting_state(job, store) if backend.rank == 0 else None
    )
    start_epoch = state["epoch"] + 1 if state else 0
    keras.utils.set_random_seed(config.seed + 1000 * backend.rank + start_epoch)
    target_rate = _target_learning_rate(config, backend.size)
    fresh_rate = target_rate / backend.size if config.warmup_epochs else target_rate
    model = _rank_model(job, store, state if resumed else None, rank=backend.rank)
    if not resumed:
        model.optimizer.learning_rate = fresh_rate
    if job.stream:
        train, validation = shard_streams(
            job.shards,
            config,
            rank=backend.rank,
            start_epoch=start_epoch,
            class_weight=job.class_weight,
        )
    else:
        train = _rank_data(job, "train", backend.rank)
        validation = _rank_data(job, "val", backend.rank)
    # Before DistributedOptimizer: in JAX's SPMD mode the distribution it sets would make the
    # base's forward pass over this rank's own rows a program of all ranks.
    fitted, train, validation = _frozen_base_features(job, model, train, validation)
    DistributedOptimizer(model.optimizer, collectives=backend)
    callbacks = _rank_callbacks(job, config, store, state, backend=backend)
    user_callbacks = _user_callbacks(job, backend)
    if fitted is not model:  # the head trains; every callback sees the whole network
        from deepspark.training.cached_features import whole_model_callbacks

        callbacks = dataclasses.replace(
            callbacks, callbacks=whole_model_callbacks(callbacks.callbacks, model)
        )
        user_callbacks = whole_model_callbacks(user_callbacks, model)
    outcome = run_fit(
        fitted,
        config,
        train=train,
        validation=validation,
        callbacks=callbacks,
        state=state,
        first_callbacks=_distributed_callbacks(config, backend, target_rate),
        user_callbacks=user_callbacks,
    )
    if backend.rank != 0:
        return None
    fields = ("history", "epochs_completed", "best_epoch", "stopped_early", "diverged_at")
    summary = {name: getattr(outcome, name) for name in fields}
    summary["resumed_from_epoch"] = outcome.resumed_from_epoch
    with _rank_local_work(backend):
        store.store.write_bytes(model_to_bytes(model), FINAL_MODEL_FILE)
    return {"outcome": summary}


def _rank_data(job: WorkerJob, split: str, rank: int):
    """This rank's rows: encoded arrays, or for images its image references decoded like on
    one machine (pixels in memory, or ``ImageFiles`` streamed a batch at a time)."""
    inputs, targets = read_shard(job.shards, split, rank)
    if job.image_spec is None:
        return inputs, targets
    from deepspark.data.image_inputs import ImageFiles, decode_rows
    from deepspark.data.schema import ImageSpec
    from deepspark.training.prepare_images import image_memory_bytes

    spec = ImageSpec(**job.image_spec)
    sources = tuple(inputs[IMAGE_SOURCES].tolist())
    if len(sources) * spec.pixel_bytes > image_memory_bytes():
        return ImageFiles(sources, spec), targets
    return decode_rows(sources, spec, on_bad="fail").images, targets


def _frozen_base_features(job: WorkerJob, model, train: tuple, validation: tuple):
    """``(model to fit, train, validation)``: for a transfer model whose base is frozen and sees
    no augmentation, its head and the base's features of this rank's rows, computed once
    (``training.cached_features``); else ``model`` and the rows unchanged."""
    if job.image_spec is None or job.stream:
        return model, train, validation
    from deepspark.training.cached_features import head_on_features

    found = head_on_features(model, {"train": train[0], "val": validation[0]})
    if found is None:
        return model, train, validation
    head, features = found
    return head, (features["train"], train[1]), (features["val"], validation[1])


def _rank_local_work(backend):
    """Work one rank does alone; in JAX's SPMD mode it must not start collectives (``_jax``)."""
    if backend.spmd:
        from deepspark.distributed._jax import outside_distribution

        return outside_distribution()
    return contextlib.nullcontext()


def _model_file(job: WorkerJob) -> dict[str, str]:
    return {"model_file": job.model_file} if job.model_file else {}


def _starting_state(job: WorkerJob, store: CheckpointStore) -> tuple[dict | None, bool]:
    """``(state, resumed)``: the checkpoint of this job's phase, else the job's start state."""
    stored = store.read_state()
    phase = (job.checkpoint_extras or {}).get("phase")
    if stored is not None and stored.get("phase") == phase:
        return stored, True
    return job.start_state, False


def _rank_model(job: WorkerJob, store: CheckpointStore, resumed_state, *, rank: int):
    """Rank 0 resumes from the checkpoint; the others start from the initial model and receive
    rank 0's state at train begin."""
    if resumed_state is not None and rank == 0:
        return store.load_model(resumed_state)
    return model_from_bytes(job.initial_model)


def _target_learning_rate(config: TrainConfig, world_size: int) -> float:
    from deepspark.training.optimizers import DEFAULT_LEARNING_RATES

    rate = DEFAULT_LEARNING_RATES[config.optimizer] if config.lr is None else config.lr
    return float(rate) * (world_size if config.scale_lr else 1)


def _rank_callbacks(job, config, store, state, *, backend):
    """deepspark's own callbacks; checkpoints, MLflow and progress on rank 0 only. After a
    resume every rank gets rank 0's best weights, so that all restore the same ones."""
    from deepspark.distributed.callbacks import DistributedNanGuard
    from deepspark.training.fit import default_callbacks

    writer = backend.rank == 0
    callbacks = default_callbacks(
        config,
        store,
        state=state,
        nan_guard=DistributedNanGuard(),
        writer=writer,
        log_metrics=False,  # the driver relays the checkpointed epochs to MLflow
        run_id=job.run_id,
        extras=job.checkpoint_extras,
    )
    if state is not None:
        early_stopping = callbacks.early_stopping
        early_stopping.restored_weights = backend.broadcast_object(
            early_stopping.restored_weights if writer else None
        )
    if backend.spmd and callbacks.writers:
        from deepspark.distributed._jax import rank_local

        wrapped = {id(callback): rank_local(callback) for callback in callbacks.writers}
        callbacks.callbacks = [wrapped.get(id(c), c) for c in callbacks.callbacks]
    return callbacks


def _user_callbacks(job: WorkerJob, backend) -> list:
    """The user's callbacks that run on this rank; in JAX's SPMD mode the rank-0-only ones must
    not start collectives (like deepspark's writers)."""
    from deepspark.training.callbacks import rank_callbacks

    if not job.user_callbacks:
        return []
    import cloudpickle

    chosen = rank_callbacks(cloudpickle.loads(job.user_callbacks), rank=backend.rank)
    if backend.spmd:
        from deepspark.distributed._jax import rank_local

        chosen = [rank_local(c) if getattr(c, "rank_zero_only", False) else c for c in chosen]
    return chosen


def _distributed_callbacks(config: TrainConfig, backend, target_rate: float) -> list:
    """Before deepspark's own callbacks, so that those see the global state and metrics; the
    progress reports to the driver (first batch, heartbeats, epochs) last of them."""
    from deepspark.distributed import callbacks as dist_callbacks
    from deepspark.distributed.progress import progress_callback

    callbacks = [
        dist_callbacks.BroadcastInitialState(collectives=backend),
        dist_callbacks.MetricAverage(collectives=backend),
    ]
    if config.warmup_epochs:
        callbacks.append(
            dist_callbacks.LearningRateWarmup(
                target_rate, warmup_epochs=config.warmup_epochs, initial_fraction=1 / backend.size
            )
        )
    callbacks.append(progress_callback(epochs=config.epochs))
    return callbacks
