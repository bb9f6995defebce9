import numpy as np
import pandas as pd
import pytest

from deepspark.data.splits import split_frame
from deepspark.errors import DataError


def frame_of(rows: int) -> pd.DataFrame:
    return pd.DataFrame(
        {"id": np.arange(rows), "label": np.where(np.arange(rows) % 10 == 0, "a", "b")}
    )


def test_default_split_sizes_are_disjoint_and_complete():
    split = split_frame(frame_of(1000), val_fraction=0.15, test_fraction=0.15, seed=1)
    assert split.sizes() == {"train": 700, "val": 150, "test": 150}
    ids = [set(part["id"]) for part in (split.train, split.val, split.test)]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert len(ids[0] | ids[1] | ids[2]) == 1000


def test_same_seed_same_split_other_seed_differs():
    first = split_frame(frame_of(200), val_fraction=0.2, test_fraction=0.2, seed=7)
    again = split_frame(frame_of(200), val_fraction=0.2, test_fraction=0.2, seed=7)
    other = split_frame(frame_of(200), val_fraction=0.2, test_fraction=0.2, seed=8)
    assert first.test["id"].tolist() == again.test["id"].tolist()
    assert first.test["id"].tolist() != other.test["id"].tolist()


def test_stratified_split_keeps_class_shares():
    frame = frame_of(1000)
    split = split_frame(
        frame, val_fraction=0.15, test_fraction=0.15, seed=3, stratify=frame["label"]
    )
    for part in (split.train, split.val, split.test):
        assert (part["label"] == "a").mean() == pytest.approx(0.1, abs=0.005)


def test_too_few_rows():
    with pytest.raises(
        DataError,
        match=r"Too few rows for the split: 9 rows give .* need at "
        r"least 10 train",
    ):
        split_frame(frame_of(9), val_fraction=0.15, test_fraction=0.15, seed=0)
