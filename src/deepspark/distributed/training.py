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
    """Train ``prepared`` on ``config.workers`` ranks; returns the ``FitOutcome`` of rank 0."""
    import mlflow

    from deepspark.training.fit import FitOutcome, relog_missing_epochs

    config = prepared.config
    launcher = config.launcher or "local"
    collectives = resolve_launch(launcher, config.collectives)
    job = _worker_job(prepared, store, run_id=run_id)
    mlflow.set_tags({WORLD_SIZE_TAG: config.workers, LAUNCHER_TAG: launcher})
    restarts: list[int] = []

    def relog_checkpointed_epochs(restart: int = 0) -> None:
        if restart:
            restarts.append(restart)
        state = store.read_state()
        if state is not None:
            relog_missing_epochs(list(state["history"]))

    relog_checkpointed_epochs()
    logger.info(
        "training on %d workers (%s launcher, %s collectives)",
        config.workers,
        launcher,
        collectives,
    )
    result = run(
        train_worker,
        (job,),
        workers=config.workers,
        launcher=launcher,
        collectives=collectives,
        max_restarts=config.max_restarts,
        on_restart=relog_checkpointed_epochs,
    )
    mlflow.log_metric("restarts", len(restarts))
    return FitOutcome(
        model=model_from_bytes(result["model"]),
        **result["outcome"],
        world_size=config.workers,
        launcher=launcher,
        restarts=len(restarts),
    )


def _worker_job(prepared: PreparedData, store: CheckpointStore, *, run_id: str) -> WorkerJob:
    """Shards (written once, cached), the compiled initial model, where to checkpoint and log."""
    import mlflow

    from deepspark.training.fit import build_compiled_model

    shards = write_shards(
        {split: _shard_rows(prepared, split) for split in ("train", "val")},
        world_size=prepared.config.workers,
        key=data_key(prepared.fingerprint, prepared.schema.to_dict()),
    )
    initial_model = build_compiled_model(prepared)
    # A built optimizer saves all its slots, so every rank loads the same complete state.
    initial_model.optimizer.build(initial_model.trainable_variables)
    return WorkerJob(
        config=prepared.config.to_dict(),
        shards=shards,
        initial_model=model_to_bytes(initial_model),
        checkpoint_dir=str(Path(store.directory).resolve()),
        run_id=run_id,
        tracking_uri=absolute_tracking_uri(mlflow.get_tracking_uri()),
        image_spec=dataclasses.asdict(spec) if (spec := prepared.schema.image) else None,
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
