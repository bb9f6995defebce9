"""Seeded train / validation / test splits, stratified for classification."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from deepspark.errors import DataError

MIN_TRAIN_ROWS = 10
MIN_EVAL_ROWS = 2


@dataclasses.dataclass(frozen=True)
class DataSplit:
    """The three splits of one table. The test split is scored once, at the end."""

    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def split_frame(
    frame: pd.DataFrame,
    *,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    stratify: pd.Series | None = None,
) -> DataSplit:
    """Split rows at random (per class when ``stratify`` is given), reproducibly for a seed.

    Raises:
        DataError: When a split would be too small to train or evaluate on.
    """
    rng = np.random.default_rng(seed)
    if stratify is None:
        groups = [np.arange(len(frame))]
    else:
        codes = pd.factorize(stratify.to_numpy(), sort=True)[0]
        groups = [np.flatnonzero(codes == code) for code in range(codes.max() + 1)]
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for group in groups:
        shuffled = rng.permutation(group)
        n_val = int(round(len(shuffled) * val_fraction))
        n_test = int(round(len(shuffled) * test_fraction))
        parts["val"].append(shuffled[:n_val])
        parts["test"].append(shuffled[n_val : n_val + n_test])
        parts["train"].append(shuffled[n_val + n_test :])
    indices = {name: np.sort(np.concatenate(chunks)) for name, chunks in parts.items()}
    _check_sizes(len(frame), {name: len(rows) for name, rows in indices.items()}, test_fraction)
    return DataSplit(
        **{name: frame.iloc[rows].reset_index(drop=True) for name, rows in indices.items()}
    )


def _check_sizes(total: int, sizes: dict[str, int], test_fraction: float) -> None:
    too_small = (
        sizes["train"] < MIN_TRAIN_ROWS
        or sizes["val"] < MIN_EVAL_ROWS
        or (test_fraction > 0 and sizes["test"] < MIN_EVAL_ROWS)
    )
    if too_small:
        raise DataError(
            f"Too few rows for the split: {total} rows give {sizes['train']} train / "
            f"{sizes['val']} validation / {sizes['test']} test; need at least {MIN_TRAIN_ROWS} "
            f"train and {MIN_EVAL_ROWS} validation and test rows. Use more data or change "
            f"--val-fraction / --test-fraction. Received: rows={total}"
        )
