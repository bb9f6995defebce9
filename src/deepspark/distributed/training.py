"""``deepspark.train(..., workers=N)``: the driver side of a distributed run.

The driver keeps what ``train`` always does (read and split the data, the MLflow run, the final
evaluation on whole splits, the logged model); only ``fit`` moves to the workers:

1. the encoded train / validation rows are written once as per-rank Parquet shards into the
   store (cached by a key of the data and its encoding);
2. every rank runs ``train_worker`` from the same compiled model; rank 0 writes checkpoints, its
   epoch history and the final model into the store, and the driver relays the epochs' metrics
   to its MLflow run as they appear (workers need not reach the tracking server);
3. a dead worker restarts the job from rank 0's last checkpoint (``max_restarts`` times), so no
   completed epoch is lost and the MLflow run stays the same.

Nothing reaches a worker as a driver-local path: on a cluster (a Spark master that is not
``local``) the store is checked to be visible from the executors before any work starts.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Sequence

from deepspark.config import TrainConfig
from deepspark.distributed.launch import resolve_launch, run
from deepspark.distributed.shards import IMAGE_SOURCES, data_key, shard_cache_root, write_shards
from deepspark.distributed.worker import (
    FINAL_MODEL_FILE,
    WorkerJob,
    model_from_bytes,
    model_to_bytes,
    train_worker,
)
from deepspark.models.kinds import kind_of
from deepspark.store.store import Store
from deepspark.training.checkpoint import CheckpointStore, checkpoint_root
from deepspark.training.prepare import PreparedData

logger = logging.getLogger("deepspark.distributed")
WORLD_SIZE_TAG = "deepspark.world_size"
LAUNCHER_TAG = "deepspark.launcher"
RELAY_INTERVAL_S = 2.0


def check_cluster_store(config: TrainConfig) -> None:
    """Before any work of a run on a Spark cluster: the store and the checkpoint folder must be
    writable here and visible from every executor (``UserInputError`` naming ``--store``)."""
    if config.launcher != "spark":
        return
    from deepspark.spark.session import get_session
    from deepspark.store.probe import check_store_visible

    session = get_session()
    store = Store.resolve(config.store)
    check_store_visible(store, session)
    for other in (shard_cache_root(config.store), checkpoint_root(config.checkpoint_dir, store)):
        if not other.uri.startswith(store.uri + "/"):  # set elsewhere (environment, option)
            check_store_visible(other, session)


def fit_distributed(
    prepared: PreparedData, store: CheckpointStore, *, run_id: str, callbacks: Sequence = ()
):
    """Train ``prepared`` on ``config.workers`` ranks; returns the ``FitOutcome`` of rank 0.
    Transfer learning runs each phase as its own distributed job (the fine-tuning phase from
    the head phase's best model, unfrozen and recompiled on the driver). ``callbacks``: the
    user's Keras callbacks, sent to every rank (``rank_zero_only`` ones run on rank 0)."""
    import mlflow

    config = prepared.config
    launcher = config.launcher or "local"
    mlflow.set_tags({WORLD_SIZE_TAG: config.workers, LAUNCHER_TAG: launcher})
    fit = _DistributedFit(prepared, run_id=run_id, launcher=launcher, callbacks=callbacks)
    if config.base and config.fine_tune_layers:
        from deepspark.training.transfer import fit_transfer

        outcome = fit_transfer(prepared, store, runner=fit.phase)
    else:
        outcome = fit.phase(prepared, store, state=None, model=None, phase=None)
    mlflow.log_metric("restarts", fit.restarts)
    return dataclasses.replace(outcome, restarts=fit.restarts)


class _DistributedFit:
    """Runs fits (a whole run, or one transfer-learning phase) on every rank, from one set of
    shards; counts the restarts of all of them."""

    def __init__(
        self, prepared: PreparedData, *, run_id: str, launcher: str, callbacks: Sequence = ()
    ):
        config = prepared.config
        self.run_id = run_id
        self.user_callbacks = _pickled(callbacks)
        self.launcher = launcher
        self.collectives = resolve_launch(launcher, config.collectives)
        self.restarts = 0
        if prepared.streamed is not None:  # already in the store, cut for these ranks
            self.shards = prepared.streamed.shards
        else:
            root = shard_cache_root(config.store)
            embed = not root.is_local  # a remote store: ranks may live on other hosts
            self.shards = write_shards(
                {split: _shard_rows(prepared, split, embed=embed) for split in ("train", "val")},
                world_size=config.workers,
                key=data_key(prepared.fingerprint, prepared.schema.to_dict(), embed),
                root=root,
            )

    def phase(self, prepared: PreparedData, store: CheckpointStore, *, state, model, phase):
        """A ``training.transfer.PhaseRunner`` (``phase`` None: a run without phases)."""
        from deepspark.training.fit import FitOutcome
        from deepspark.training.transfer import FINE_TUNE_PHASE, phase_settings

        config, extras = prepared.config, None
        if phase is not None:
            config, extras = phase_settings(config, phase, state)
        start_state = state if model is not None else None  # a phase starting after another
        if model is None and phase == FINE_TUNE_PHASE:  # resumed: the phase's own model
            model = store.load_model(state)
        job = self._job(prepared, store, config, model, start_state=start_state, extras=extras)

        relay = _MetricRelay(store, self.run_id)

        def relog_checkpointed_epochs(restart: int = 0) -> None:
            self.restarts += bool(restart)
            relay.flush()

        relog_checkpointed_epochs()
        logger.info(
            "training%s on %d workers (%s launcher, %s collectives)",
            f" ({phase} phase)" if phase else "",
            config.workers,
            self.launcher,
            self.collectives,
        )
        with relay:
            result = run(
                train_worker,
                (job,),
                workers=config.workers,
                launcher=self.launcher,
                collectives=self.collectives,
                max_restarts=config.max_restarts,
                on_restart=relog_checkpointed_epochs,
                **feedback_limits(config),
            )
        relog_checkpointed_epochs()
        return FitOutcome(
            model=_final_model(store),
            **result["outcome"],
            world_size=config.workers,
            launcher=self.launcher,
        )

    def _job(self, prepared, store, config, model, *, start_state, extras) -> WorkerJob:
        """The compiled initial model (built here unless given), where to checkpoint and log."""

        from deepspark.training.fit import build_compiled_model, streamed_class_weights

        initial_model = model if model is not None else build_compiled_model(prepared)
        # A built optimizer saves all its slots, so every rank loads the same complete state.
        initial_model.optimizer.build(initial_model.trainable_variables)
        return WorkerJob(
            config=config.to_dict(),
            shards=self.shards,
            initial_model=model_to_bytes(initial_model),
            checkpoint_dir=store.directory,
            run_id=self.run_id,
            image_spec=dataclasses.asdict(spec) if (spec := prepared.schema.image) else None,
            model_file=store.model_file,
            start_state=start_state,
            checkpoint_extras=extras,
            stream=prepared.streamed is not None,
            class_weight=streamed_class_weights(prepared) if prepared.streamed else None,
            user_callbacks=self.user_callbacks,
        )


def _pickled(callbacks: Sequence) -> bytes | None:
    """The user's callbacks for the ranks (cloudpickle: they may be defined in a notebook)."""
    if not callbacks:
        return None
    import cloudpickle

    return cloudpickle.dumps(list(callbacks))


def feedback_limits(config: TrainConfig) -> dict[str, float]:
    """The run's startup timeout and watchdog: its settings (``--startup-timeout``,
    ``--watchdog``), else ``$DEEPSPARK_STARTUP_TIMEOUT`` / ``$DEEPSPARK_WATCHDOG``, else 300 s
    and ``DEFAULT_TRAIN_WATCHDOG_S`` (deepspark's fit loop reports every batch, so a rank that
    reports nothing for that long is stuck)."""
    from deepspark.distributed import progress

    return {
        "startup_timeout": progress.startup_timeout(getattr(config, "startup_timeout", None)),
        "watchdog": progress.watchdog_seconds(
            getattr(config, "watchdog", None), default=progress.DEFAULT_TRAIN_WATCHDOG_S
        ),
    }


def _final_model(store: CheckpointStore):
    """The model rank 0 left in the store, then removed from it (the run logs it)."""
    model = model_from_bytes(store.store.read_bytes(FINAL_MODEL_FILE))
    store.store.delete(FINAL_MODEL_FILE)
    return model


class _MetricRelay:
    """Logs each epoch rank 0 checkpointed to the driver's MLflow run, exactly once: every
    ``RELAY_INTERVAL_S`` while the workers train (a thread), and whenever ``flush`` is called
    (before a restart, after the job)."""

    def __init__(self, store: CheckpointStore, run_id: str):
        self.store = store
        self.run_id = run_id
        self.logged: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="deepspark-relay", daemon=True)

    def flush(self) -> None:
        from deepspark.training.fit import relog_missing_epochs

        with self._lock:
            state = self.store.read_state()
            if state is not None:
                relog_missing_epochs(state["history"], run_id=self.run_id, logged=self.logged)

    def _loop(self) -> None:
        while not self._stop.wait(RELAY_INTERVAL_S):
            try:
                self.flush()
            except Exception as error:  # noqa: BLE001  a relay hiccup must not stop training
                logger.debug("metric relay: %s", error)

    def __enter__(self) -> _MetricRelay:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()


def _shard_rows(prepared: PreparedData, split: str, *, embed: bool = False):
    """A split's encoded rows; for images, the image references (paths, URIs or bytes: each
    rank decodes its own), never the decoded pixels.

    With ``embed`` (shards in a remote store, read by ranks that may run on other hosts), a
    local file path is replaced by the file's bytes: no other host can open it. URIs
    (``s3://...``) stay references, which every host reads itself.
    """
    import numpy as np

    if not kind_of(prepared.schema).reads_images:
        return prepared.inputs[split], prepared.targets[split]
    column = prepared.schema.feature_names[0]
    values = getattr(prepared.split, split)[column].tolist()
    if embed:
        values = [_embedded(value) for value in values]
    return {IMAGE_SOURCES: np.array(values, dtype=object)}, prepared.targets[split]


def _embedded(value):
    """A local image path's bytes (an unreadable file: no bytes, which the rank's decoding
    counts as a bad image; one column holds one type)."""
    if not isinstance(value, str) or "://" in value:
        return value
    try:
        with open(value, "rb") as file:
            return file.read()
    except OSError:
        return b""
