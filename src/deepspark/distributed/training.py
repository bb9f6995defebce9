"""``deepspark.train(..., workers=N)``: the driver side of a distributed run.

The driver keeps what ``train`` always does (read and split the data, the MLflow run, the final
evaluation on whole splits, the logged model); only ``fit`` moves to the workers:

1. the encoded train / validation rows are written once as per-rank Parquet shards (cached by a
   key of the data and its encoding);
2. every rank runs ``train_worker`` from the same compiled model; rank 0 writes checkpoints and
   epoch metrics into the driver's MLflow run;
3. a dead worker restarts the job from rank 0's last checkpoint (``max_restarts`` times), so no
   completed epoch is lost and the MLflow run stays the same.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

from deepspark.distributed.launch import resolve_launch, run
from deepspark.distributed.shards import IMAGE_SOURCES, data_key, write_shards
from deepspark.distributed.worker import WorkerJob, model_from_bytes, model_to_bytes, train_worker
from deepspark.training.checkpoint import CheckpointStore
from deepspark.training.prepare import PreparedData

logger = logging.getLogger("deepspark.distributed")
WORLD_SIZE_TAG = "deepspark.world_size"
LAUNCHER_TAG = "deepspark.launcher"


def fit_distributed(prepared: PreparedData, store: CheckpointStore, *, run_id: str):
    """Train ``prepared`` on ``config.workers`` ranks; returns the ``FitOutcome`` of rank 0.
    Transfer learning runs each phase as its own distributed job (the fine-tuning phase from
    the head phase's best model, unfrozen and recompiled on the driver)."""
    import mlflow

    config = prepared.config
    launcher = config.launcher or "local"
    mlflow.set_tags({WORLD_SIZE_TAG: config.workers, LAUNCHER_TAG: launcher})
    fit = _DistributedFit(prepared, run_id=run_id, launcher=launcher)
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

    def __init__(self, prepared: PreparedData, *, run_id: str, launcher: str):
        config = prepared.config
        self.run_id = run_id
        self.launcher = launcher
        self.collectives = resolve_launch(launcher, config.collectives)
        self.restarts = 0
        self.shards = write_shards(
            {split: _shard_rows(prepared, split) for split in ("train", "val")},
            world_size=config.workers,
            key=data_key(prepared.fingerprint, prepared.schema.to_dict()),
        )

    def phase(self, prepared: PreparedData, store: CheckpointStore, *, state, model, phase):
        """A ``training.transfer.PhaseRunner`` (``phase`` None: a run without phases)."""
        from deepspark.training.fit import FitOutcome, relog_missing_epochs
        from deepspark.training.transfer import FINE_TUNE_PHASE, phase_settings

        config, extras = prepared.config, None
        if phase is not None:
            config, extras = phase_settings(config, phase, state)
        start_state = state if model is not None else None  # a phase starting after another
        if model is None and phase == FINE_TUNE_PHASE:  # resumed: the phase's own model
            model = store.load_model(state)
        job = self._job(prepared, store, config, model, start_state=start_state, extras=extras)

        def relog_checkpointed_epochs(restart: int = 0) -> None:
            self.restarts += bool(restart)
            stored = store.read_state()
            if stored is not None:
                relog_missing_epochs(list(stored["history"]))

        relog_checkpointed_epochs()
        logger.info(
            "training%s on %d workers (%s launcher, %s collectives)",
            f" ({phase} phase)" if phase else "",
            config.workers,
            self.launcher,
            self.collectives,
        )
        result = run(
            train_worker,
            (job,),
            workers=config.workers,
            launcher=self.launcher,
            collectives=self.collectives,
            max_restarts=config.max_restarts,
            on_restart=relog_checkpointed_epochs,
        )
        return FitOutcome(
            model=model_from_bytes(result["model"]),
            **result["outcome"],
            world_size=config.workers,
            launcher=self.launcher,
        )

    def _job(self, prepared, store, config, model, *, start_state, extras) -> WorkerJob:
        """The compiled initial model (built here unless given), where to checkpoint and log."""
        import mlflow

        from deepspark.training.fit import build_compiled_model

        initial_model = model if model is not None else build_compiled_model(prepared)
        # A built optimizer saves all its slots, so every rank loads the same complete state.
        initial_model.optimizer.build(initial_model.trainable_variables)
        return WorkerJob(
            config=config.to_dict(),
            shards=self.shards,
            initial_model=model_to_bytes(initial_model),
            checkpoint_dir=str(Path(store.directory).resolve()),
            run_id=self.run_id,
            tracking_uri=absolute_tracking_uri(mlflow.get_tracking_uri()),
            image_spec=dataclasses.asdict(spec) if (spec := prepared.schema.image) else None,
            model_file=store.model_file,
            start_state=start_state,
            checkpoint_extras=extras,
        )


def _shard_rows(prepared: PreparedData, split: str):
    """A split's encoded rows; for images, the image references (paths or bytes: each rank
    decodes its own), never the decoded pixels."""
    import numpy as np

    if prepared.schema.image is None:
        return prepared.inputs[split], prepared.targets[split]
    column = prepared.schema.feature_names[0]
    sources = np.array(getattr(prepared.split, split)[column].tolist(), dtype=object)
    return {IMAGE_SOURCES: sources}, prepared.targets[split]


def absolute_tracking_uri(uri: str) -> str:
    """Workers may run in another folder (Spark executors): make local store paths absolute."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + os.path.abspath(uri[len("sqlite:///") :])
    if "://" not in uri and not uri.startswith("databricks"):
        return Path(uri).resolve().as_uri()
    return uri
