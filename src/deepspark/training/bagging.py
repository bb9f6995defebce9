"""Bagged k-fold ensembles for tables: K members, out-of-fold validation, one combined model.

The training and validation rows of a prepared table are pooled and cut into K folds (stratified
by class for classifiers, seeded by ``config.seed``). Member ``i`` trains on the other K-1 folds
with early stopping on fold ``i``, with the seed ``config.seed + i``; its predictions on fold
``i`` are out-of-fold (OOF): every pooled row is predicted once, by the one member that never saw
it, so the OOF metrics are an honest validation score. The test split is not touched: the
combined model scores it once, like any other model. This is AutoGluon's default bagging and
what the RealMLP and TabM authors ensemble over.

``train`` bags small tables by default: ``bagging=None`` resolves to ``AUTO_BAGGING_MEMBERS``
(3) members for an in-memory table of at most ``AUTO_BAGGING_ROWS`` training + validation rows
trained with the default model in one process without callbacks (``config.default_bagging``;
``$DEEPSPARK_AUTO_BAGGING_ROWS`` moves the threshold, 0 turns it off); ``bagging=1`` trains one
network.

The members are combined into ONE Keras model (``models.bagged.average_members``: mean of the
members' outputs, probabilities for classifiers), so the artifact contract holds unchanged.

Members train one after the other in this process. They are independent once the pool and the
folds are fixed, so they can go parallel without changing the result: ``fit_member`` is the seam.
``distributed.bagging`` uses it: worker processes (``distributed.launch``'s local
processes, ``cores.py`` dividing the cores, or Spark barrier tasks) train the members and write
each one's ``.keras`` file to the run's checkpoint store; the driver loads them and hands them to
``fit_bagged`` through ``fit_member``, which combines them and scores the OOF rows as here.

Example:
    >>> prepared = prepare_data(make_config({"data": "small.csv", "target": "y"}))
    >>> bagged = train_bagged(prepared, 5)
    >>> bagged.oof_metrics["rmse"], bagged.member_epochs
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from deepspark.data.splits import MIN_EVAL_ROWS, MIN_TRAIN_ROWS, DataSplit
from deepspark.errors import UserInputError
from deepspark.models.bagged import average_members
from deepspark.models.inference import predict_arrays
from deepspark.models.kinds import kind_of
from deepspark.training.evaluation import evaluate_predictions
from deepspark.training.fit import FitOutcome, build_compiled_model, default_callbacks, run_fit
from deepspark.training.prepare import PreparedData

logger = logging.getLogger("deepspark.training")

#: Fewest and most members ``train_bagged`` accepts.
MIN_MEMBERS, MAX_MEMBERS = 2, 20

FitMember = Callable[[PreparedData, int], object]  # (member data, index) -> fit.FitOutcome


@dataclasses.dataclass
class BaggedFit:
    """What ``train_bagged`` produced.

    Attributes:
        model: The combined Keras model (mean of the members' outputs).
        members: Each member's ``FitOutcome`` (its ``model`` trained on K-1 folds).
        folds: The fold of each pooled row (training rows first, then validation rows).
        oof_output: Each pooled row's output from the member that held it out.
        oof_metrics: The task's metrics (``evaluate_predictions``) on ``oof_output``.
        diverged_at: ``(member, epoch, batch)`` of the first member whose loss became NaN;
            the members after it did not train and ``model`` is ``None``.
    """

    model: object
    members: list
    folds: np.ndarray
    oof_output: np.ndarray
    oof_metrics: dict[str, float]
    diverged_at: tuple[int, int, int] | None = None

    @property
    def member_epochs(self) -> list[int]:
        """Epochs each member trained."""
        return [outcome.epochs_completed for outcome in self.members]

    @property
    def member_best_epochs(self) -> list[int]:
        """1-based epoch whose weights each member keeps."""
        return [outcome.best_epoch + 1 for outcome in self.members]


@dataclasses.dataclass
class BaggedOutcome(FitOutcome):
    """A ``FitOutcome`` for a bagged ensemble (see ``fit_bagged``): ``oof_metrics`` stand for
    the validation split's metrics; per member, the epochs trained and the best (1-based)."""

    oof_metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    member_epochs: list[int] = dataclasses.field(default_factory=list)
    member_best_epochs: list[int] = dataclasses.field(default_factory=list)


def fit_bagged(prepared: PreparedData, k: int, *, fit_member: FitMember | None = None):
    """``train_bagged`` as the train workflow's fit step: a ``fit.FitOutcome`` (the
    ``BaggedOutcome`` subclass) whose model is the combined one, with the OOF metrics that
    replace the validation split's (its rows trained K-1 of the members).

    ``epochs_completed`` is the most epochs a member trained, ``best_epoch`` the median of the
    members' best epochs (0-based, as in ``FitOutcome``), ``stopped_early`` whether every member
    stopped early; a member that diverged gives ``diverged_at`` (its epoch and batch).
    """
    bagged = train_bagged(prepared, k, fit_member=fit_member)
    members = bagged.members
    return BaggedOutcome(
        model=bagged.model,
        history=[],
        epochs_completed=max(bagged.member_epochs, default=0),
        best_epoch=int(np.median([outcome.best_epoch for outcome in members])) if members else 0,
        stopped_early=bool(members) and all(outcome.stopped_early for outcome in members),
        diverged_at=bagged.diverged_at[1:] if bagged.diverged_at else None,
        resumed_from_epoch=None,
        oof_metrics=bagged.oof_metrics,
        member_epochs=bagged.member_epochs,
        member_best_epochs=bagged.member_best_epochs,
    )


def train_bagged(
    prepared: PreparedData, k: int, *, fit_member: FitMember | None = None
) -> BaggedFit:
    """Train K members on K-1 folds each of the training + validation rows and combine them.

    Args:
        prepared: An in-memory table (``prepare_data``); its test split is left alone.
        k: Members (and folds), 2 to 20.
        fit_member: ``fit_member(member_prepared, index) -> FitOutcome`` trains one member on
            ``member_prepared`` (its ``train`` split: K-1 folds; ``val``: the held-out fold;
            ``config.seed``: the run's seed + index). Default ``fit_member_quietly``: early
            stopping, no checkpoints, no MLflow. A caller may pass its own (one that
            checkpoints each member, or trains it in another process).

    Returns:
        A ``BaggedFit``: the combined model, the member outcomes, folds, OOF output and metrics.

    Raises:
        UserInputError: A streamed table, images, or a ``k`` the rows cannot carry.
    """
    check_bagging(prepared, k)
    fit_member = fit_member or fit_member_quietly
    pool = pool_rows(prepared)
    folds = fold_assignment(pool.targets, k, seed=prepared.config.seed, task=pool.task)
    oof_output = None
    members = []
    for index in range(k):
        member = member_data(prepared, pool, folds, index)
        outcome = fit_member(member, index)
        if outcome.diverged_at is not None:
            epoch, batch = outcome.diverged_at
            return BaggedFit(None, members, folds, np.empty(0), {}, (index, epoch, batch))
        members.append(outcome)
        held_out = predict_arrays(outcome.model, member.inputs["val"])
        if oof_output is None:
            oof_output = np.zeros((len(folds), *held_out.shape[1:]), dtype=np.float64)
        oof_output[folds == index] = held_out
        logger.info(
            "bagging: member %d/%d trained %d epochs (best %d)",
            index + 1,
            k,
            outcome.epochs_completed,
            outcome.best_epoch + 1,
        )
    oof_metrics = evaluate_predictions(pool.task, pool.targets, oof_output)
    model = average_members([outcome.model for outcome in members])
    return BaggedFit(model, members, folds, oof_output, oof_metrics)


def check_bagging(prepared: PreparedData, k: int) -> None:
    """``UserInputError`` unless ``prepared`` is an in-memory table that ``k`` folds can cut."""
    if isinstance(k, bool) or not isinstance(k, int) or not MIN_MEMBERS <= k <= MAX_MEMBERS:
        raise UserInputError(
            f"--bagging takes a whole number of members from {MIN_MEMBERS} to {MAX_MEMBERS} "
            f"(1: no bagging). Received: bagging={k!r}"
        )
    if prepared.streamed is not None or not kind_of(prepared.schema).supports_bagging:
        raise UserInputError(
            "--bagging trains on tables held in memory; leave out --bagging for streamed "
            "tables and images (or raise --max-memory-mb). "
            f"Received: bagging={k}, kind={prepared.schema.kind!r}"
        )
    pooled = prepared.rows["train"] + prepared.rows["val"]
    if pooled // k < MIN_EVAL_ROWS or pooled - pooled // k < MIN_TRAIN_ROWS:
        raise UserInputError(
            f"{pooled} training + validation rows are too few for {k} folds: each member "
            f"needs {MIN_TRAIN_ROWS} rows to train on and {MIN_EVAL_ROWS} held out; use fewer "
            f"members. Received: bagging={k}"
        )


def fold_assignment(targets: np.ndarray, k: int, *, seed: int, task: str) -> np.ndarray:
    """The fold (0 .. k-1) of each row: a seeded permutation dealt round-robin, per class for
    classifiers (every fold gets each class in proportion), so fold sizes differ by at most one
    per class.

    Args:
        targets: The encoded target (class indices for classifiers).
        k: Folds.
        seed: The same seed gives the same folds.
        task: ``regression``, ``binary`` or ``multiclass``.

    Returns:
        An int array, one fold per row.
    """
    rng = np.random.default_rng(seed)
    labels = np.asarray(targets).reshape(len(targets), -1)[:, 0]
    if task == "regression":
        groups = [np.arange(len(labels))]
    else:
        groups = [np.flatnonzero(labels == label) for label in np.unique(labels)]
    folds = np.empty(len(labels), dtype=np.int64)
    offset = 0
    for group in groups:
        shuffled = rng.permutation(group)
        # Continue the round-robin where the last class stopped: the folds stay even in size.
        folds[shuffled] = (np.arange(len(shuffled)) + offset) % k
        offset += len(shuffled)
    return folds


@dataclasses.dataclass(frozen=True)
class PooledRows:
    """The training and validation rows, concatenated in that order."""

    frame: pd.DataFrame
    inputs: dict[str, np.ndarray]
    targets: np.ndarray
    task: str


def pool_rows(prepared: PreparedData) -> PooledRows:
    """The training and validation rows of ``prepared``, in that order (what the folds cut)."""
    train, val = prepared.inputs["train"], prepared.inputs["val"]
    return PooledRows(
        frame=pd.concat([prepared.split.train, prepared.split.val], ignore_index=True),
        inputs={name: np.concatenate([train[name], val[name]]) for name in train},
        targets=np.concatenate([prepared.targets["train"], prepared.targets["val"]]),
        task=prepared.schema.task,
    )


def member_data(prepared: PreparedData, pool: PooledRows, folds: np.ndarray, index: int):
    """``prepared`` for member ``index``: trains on the folds other than ``index``, validates
    (early stopping) on fold ``index``; the test split and schema as they were; numeric
    statistics and the regression target's center and scale from the member's own rows."""
    held_out = folds == index
    parts = {"train": ~held_out, "val": held_out}
    inputs = {
        name: {key: values[rows] for key, values in pool.inputs.items()}
        for name, rows in parts.items()
    }
    targets = {name: pool.targets[rows] for name, rows in parts.items()}
    center, scale = prepared.target_center, prepared.target_scale
    if pool.task == "regression":
        center = float(targets["train"].mean())
        scale = float(targets["train"].std()) or 1.0
    frames = {name: pool.frame[rows].reset_index(drop=True) for name, rows in parts.items()}
    return dataclasses.replace(
        prepared,
        config=dataclasses.replace(prepared.config, seed=prepared.config.seed + index),
        split=DataSplit(train=frames["train"], val=frames["val"], test=prepared.split.test),
        # The test split (when there is one: tune's trials have none) as it was.
        inputs={**prepared.inputs, **inputs},
        targets={**prepared.targets, **targets},
        target_center=center,
        target_scale=scale,
    )


def fit_member_quietly(member: PreparedData, index: int, *, extra_callbacks: Sequence = ()):
    """Train one member with deepspark's fit (early stopping on its held-out fold, best weights
    restored, LR reduction) and nothing written: no checkpoints, MLflow metrics or progress.

    Args:
        member: The member's data (``member_data``).
        index: The member's index.
        extra_callbacks: Keras callbacks that only observe (a parallel member's progress
            reports): they run after deepspark's own and change nothing trained.

    Returns:
        A ``fit.FitOutcome`` whose ``epochs_completed`` counts the epochs the member trained.
    """
    model = build_compiled_model(member)
    callbacks = default_callbacks(member.config, None, writer=False)
    outcome = run_fit(
        model,
        member.config,
        train=(member.inputs["train"], member.targets["train"]),
        validation=(member.inputs["val"], member.targets["val"]),
        callbacks=callbacks,
        user_callbacks=extra_callbacks,
    )
    # Without a writer the history stays empty; Keras' own History has the epochs.
    trained = len(getattr(model.history, "epoch", None) or [])
    return dataclasses.replace(outcome, epochs_completed=trained)
