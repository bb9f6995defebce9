"""The background sample: seeded rows of the model's training split, or of the data explained.

A deepspark training run records its data source, target, task, seed and split fractions as
MLflow params, and the training split's size. When the model's run can be found and its data
source is still readable with the same training-split size, the split is re-derived exactly as
training made it (``prepare_data``) and the background is sampled from it. Otherwise the
background is sampled from the data being explained, and a log line says so.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from deepspark.errors import DeepsparkError, UserInputError

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Background:
    """Background rows (the model's raw columns) and where they came from."""

    rows: pd.DataFrame
    source: str
    population: int


class FrameRows:
    """A pandas table as a background pool: its length and rows by position."""

    def __init__(self, frame: pd.DataFrame):
        self.frame = frame

    def __len__(self) -> int:
        return len(self.frame)

    def take(self, positions: np.ndarray) -> pd.DataFrame:
        return self.frame.iloc[positions]


def sample_background(model, data, *, size: int, seed: int) -> Background:
    """Sample ``size`` rows, without replacement, seeded.

    Args:
        model: The loaded ``DeepsparkModel``.
        data: The rows being explained, used when the training split cannot be re-derived: a
            pandas DataFrame, or any object with ``len()`` and ``take(positions)`` (the Spark
            job passes its indexed DataFrame so both paths draw the same rows).
        size: Number of background rows.
        seed: Seed of the sample.

    Returns:
        The ``Background``.

    Raises:
        UserInputError: ``size`` is larger than the training split (or than ``data``).
    """
    training = recorded_training_split(model)
    if training is None:
        pool = FrameRows(data) if isinstance(data, pd.DataFrame) else data
        source = "the explained data (the training split could not be re-derived)"
        logger.info("background: sampling from the explained data, not the training split")
    else:
        pool, source = FrameRows(training), "the model's training split"
    if size > len(pool):
        where = "training split" if training is not None else "data (used as the background pool)"
        raise UserInputError(
            f"Background larger than the {where}: it has {len(pool)} rows; pass --background "
            f"{len(pool)} or fewer. Received: background={size}"
        )
    chosen = np.sort(np.random.default_rng(seed).choice(len(pool), size=size, replace=False))
    rows = pool.take(chosen)[model.feature_names].reset_index(drop=True)
    logger.info("background: %d rows sampled from %s (seed %d)", size, source, seed)
    return Background(rows=rows, source=source, population=len(pool))


def recorded_training_split(model) -> pd.DataFrame | None:
    """The model's training split re-derived from its MLflow run, or ``None`` (logged why)."""
    params = _run_params(model.metadata.get("run_id"))
    if params is None:
        return None
    data = params.get("data", "")
    from deepspark.data.readers import BUILTIN_DATASETS

    if not Path(data).exists() and data not in BUILTIN_DATASETS:
        logger.info("background: the training data %r is not readable from here", data)
        return None
    try:
        split = _rederive_split(params)
    except (DeepsparkError, OSError) as error:
        logger.info("background: could not re-derive the training split (%s)", error)
        return None
    expected = params.get("rows_train")
    if expected is not None and int(expected) != len(split):
        logger.info(
            "background: the training data changed (%d training rows now, %s recorded)",
            len(split),
            expected,
        )
        return None
    return split


def _run_params(run_id: str | None) -> dict[str, str] | None:
    if not run_id:
        logger.info("background: the model records no training run")
        return None
    from deepspark.tracking.run import get_run

    try:
        return dict(get_run(run_id).data.params)
    except UserInputError:
        logger.info("background: the model's training run %s is not in this tracking store", run_id)
        return None


def _rederive_split(params: dict[str, str]) -> pd.DataFrame:
    from deepspark.config import make_config
    from deepspark.training.prepare import prepare_data

    settings = {
        "data": params["data"],
        "target": params.get("target") or None,
        "task": params.get("task_resolved") or params.get("task") or None,
        "exclude": params.get("exclude") or None,
        "seed": int(params["seed"]),
        "val_fraction": float(params["val_fraction"]),
        "test_fraction": float(params["test_fraction"]),
    }
    # Training's own "N train / N val" line would read as if a model were being trained.
    training_logger = logging.getLogger("deepspark.training")
    level = training_logger.level
    training_logger.setLevel(logging.WARNING)
    try:
        return prepare_data(make_config(settings), stream=False).split.train
    finally:
        training_logger.setLevel(level)
