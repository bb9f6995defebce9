"""``train(..., bagging=K, workers=N)``: the members of a bagged k-fold ensemble trained in
parallel, N worker processes (or Spark barrier tasks) at a time.

Members are independent once the pooled rows and their folds are fixed
(``training.bagging``), so no collective runs between them: rank ``r`` of ``N`` trains members
``r, r + N, r + 2N, ...``, each an ordinary single-process fit on its own folds with its own seed
(``fit_member_quietly``, the same function sequential bagging calls), on its share of the cores
(``distributed.cores``: the launchers pin each worker). Each member's ``.keras`` file and its
epochs go to the run's checkpoint store (``bagging/member-NN.*``); the driver then hands the
members to ``fit_bagged`` through its ``fit_member`` seam, which averages them and scores the
out-of-fold rows exactly as sequential bagging does. Same seeds, same members: the parallel
ensemble predicts what the sequential one does.

The data travels in the job itself (the pooled training and validation rows, never a
driver-local path), so Spark tasks on other hosts need only the store, which a run on a cluster
checks they can see (``distributed.training.check_cluster_store``). A worker that dies restarts
the job (``max_restarts``; the run's ``restarts`` metric counts them, as in distributed
training); members already in the store are not trained again.
"""

from __future__ import annotations

import dataclasses
import logging

from deepspark.distributed.launch import resolve_launch, run
from deepspark.training.checkpoint import CheckpointStore
from deepspark.training.prepare import PreparedData

logger = logging.getLogger("deepspark.distributed")

MEMBERS_FOLDER = "bagging"


@dataclasses.dataclass(frozen=True)
class MembersJob:
    """What every rank gets: the rows to bag (no test split), the member count, the store."""

    prepared: PreparedData
    members: int
    checkpoint_dir: str


def fit_bagged_parallel(prepared: PreparedData, store: CheckpointStore):
    """``training.bagging.fit_bagged`` with the members trained on ``config.workers`` ranks
    (at most one per member) of ``config.launcher`` (default ``local``).

    Args:
        prepared: An in-memory table (``check_bagging``); ``config.bagging`` members.
        store: The run's checkpoint store: the members' files go there (and are removed after).

    Returns:
        A ``training.bagging.BaggedOutcome`` with ``world_size`` and ``launcher`` set.

    Raises:
        UserInputError: Data or a member count that bagging cannot take.
        WorkerFailedError, WorkerLostError, WorkerTimeoutError: As ``distributed.launch.run``.
    """
    import mlflow

    from deepspark.distributed.training import LAUNCHER_TAG, WORLD_SIZE_TAG, feedback_limits
    from deepspark.training.bagging import check_bagging, fit_bagged

    config = prepared.config
    members = config.bagging
    check_bagging(prepared, members)
    workers = min(config.workers, members)
    launcher = config.launcher or "local"
    if mlflow.active_run() is not None:
        mlflow.set_tags({WORLD_SIZE_TAG: workers, LAUNCHER_TAG: launcher})
    logger.info("bagging: %d members on %d workers (%s launcher)", members, workers, launcher)
    job = MembersJob(_without_test(prepared), members, store.directory)
    restarts = []
    run(
        train_members,
        (job,),
        workers=workers,
        launcher=launcher,
        collectives=resolve_launch(launcher, config.collectives),
        max_restarts=config.max_restarts,
        on_restart=restarts.append,
        **feedback_limits(config),
    )
    if mlflow.active_run() is not None:
        mlflow.log_metric("restarts", len(restarts))  # as distributed training records them
    trained = {index: read_member(store, index) for index in range(members)}
    outcome = fit_bagged(prepared, members, fit_member=lambda _member, index: trained[index])
    store.store.delete(MEMBERS_FOLDER)
    return dataclasses.replace(
        outcome, world_size=workers, launcher=launcher, restarts=len(restarts)
    )


def train_members(job: MembersJob) -> None:
    """On every rank: train members ``rank, rank + size, ...`` and write each to the store.

    A member that diverged is written (its epoch and batch, no model) and ends this rank's
    share: sequential bagging stops at the first such member too."""
    from deepspark.distributed import rank, size
    from deepspark.distributed.progress import progress_callback
    from deepspark.training.bagging import (
        fit_member_quietly,
        fold_assignment,
        member_data,
        pool_rows,
    )

    store = CheckpointStore(job.checkpoint_dir)
    pool = pool_rows(job.prepared)
    # The folds train_bagged cuts: the same rows, targets and seed.
    folds = fold_assignment(
        pool.targets, job.members, seed=job.prepared.config.seed, task=pool.task
    )
    for index in range(rank(), job.members, size()):
        if store.store.exists(MEMBERS_FOLDER, _outcome_file(index)):  # a restarted job
            logger.info("bagging: member %d/%d already in the store", index + 1, job.members)
            continue
        member = member_data(job.prepared, pool, folds, index)
        progress = progress_callback(epochs=member.config.epochs)
        outcome = fit_member_quietly(member, index, extra_callbacks=[progress])
        write_member(store, index, outcome)
        if outcome.diverged_at is not None:
            return
        logger.info("bagging: member %d/%d trained", index + 1, job.members)


def write_member(store: CheckpointStore, index: int, outcome) -> None:
    """The member's ``.keras`` file, then its outcome (written last: it marks the member done)."""
    from deepspark.distributed.worker import model_to_bytes

    if outcome.diverged_at is None:
        store.store.write_bytes(model_to_bytes(outcome.model), MEMBERS_FOLDER, _model_file(index))
    fields = {
        "epochs_completed": outcome.epochs_completed,
        "best_epoch": outcome.best_epoch,
        "stopped_early": outcome.stopped_early,
        "diverged_at": list(outcome.diverged_at) if outcome.diverged_at else None,
    }
    store.store.write_json(fields, MEMBERS_FOLDER, _outcome_file(index))


def read_member(store: CheckpointStore, index: int):
    """The ``FitOutcome`` of member ``index`` as a rank wrote it (model loaded in safe mode);
    a member that no rank reached (an earlier one diverged) reads as diverged at its start."""
    from deepspark.distributed.worker import model_from_bytes
    from deepspark.training.fit import FitOutcome

    if not store.store.exists(MEMBERS_FOLDER, _outcome_file(index)):
        fields = {"epochs_completed": 0, "best_epoch": 0, "stopped_early": False}
        return FitOutcome(None, [], **fields, diverged_at=(0, 0), resumed_from_epoch=None)
    fields = store.store.read_json(MEMBERS_FOLDER, _outcome_file(index))
    diverged = tuple(fields.pop("diverged_at") or ()) or None
    model = None
    if diverged is None:
        model = model_from_bytes(store.store.read_bytes(MEMBERS_FOLDER, _model_file(index)))
    return FitOutcome(model, [], **fields, diverged_at=diverged, resumed_from_epoch=None)


def _without_test(prepared: PreparedData) -> PreparedData:
    """``prepared`` less its test rows, which no member uses (a smaller job to send)."""
    from deepspark.data.splits import DataSplit

    split = prepared.split
    return dataclasses.replace(
        prepared,
        split=DataSplit(split.train, split.val, split.test.iloc[:0]),
        inputs={**prepared.inputs, "test": {}},
        targets={**prepared.targets, "test": prepared.targets["test"][:0]},
    )


def _model_file(index: int) -> str:
    return f"member-{index:02d}.keras"


def _outcome_file(index: int) -> str:
    return f"member-{index:02d}.json"
