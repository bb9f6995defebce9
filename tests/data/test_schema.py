import logging

import numpy as np
import pandas as pd
import pytest

from deepspark.data.schema import (
    CATEGORICAL,
    NUMERIC,
    FeatureSchema,
    infer_schema,
    infer_task,
    learn_vocabularies,
)
from deepspark.errors import DataError
from tests.conftest import make_table


def test_kinds_and_task():
    schema, frame = infer_schema(make_table(), "y")
    kinds = {spec.name: spec.kind for spec in schema.features}
    assert kinds == {"x1": NUMERIC, "x2": NUMERIC, "count": NUMERIC, "color": CATEGORICAL}
    assert schema.task == "regression"
    assert list(frame.columns) == ["x1", "x2", "count", "color", "y"]


@pytest.mark.parametrize(
    ("values", "task"),
    [
        ([0.5, 1.7, 2.2, 3.9] * 10, "regression"),
        ([0, 1] * 20, "binary"),
        (["a", "b"] * 20, "binary"),
        (["a", "b", "c"] * 20, "multiclass"),
        ([0, 1, 2, 3] * 30, "multiclass"),
        (list(range(200)), "regression"),
    ],
)
def test_infer_task(values, task):
    assert infer_task(pd.Series(values)) == task


def test_task_override_and_class_labels():
    frame = pd.DataFrame({"x": np.arange(200.0), "y": [0, 1, 2, 3] * 50})
    schema, _ = infer_schema(frame, "y", task="regression")
    assert schema.task == "regression" and schema.class_labels == ()
    schema, _ = infer_schema(frame, "y")
    assert schema.task == "multiclass" and schema.class_labels == (0, 1, 2, 3)


def test_target_not_found_lists_columns():
    with pytest.raises(
        DataError,
        match=r"Target column not found; choose one of: x1, x2, "
        r"count, color, y. Received: target='price'",
    ):
        infer_schema(make_table(rows=20), "price")


def test_target_all_missing():
    frame = make_table(rows=20)
    frame["y"] = np.nan
    with pytest.raises(DataError, match=r"Target column 'y' has no values \(all 20 rows missing"):
        infer_schema(frame, "y")


def test_rows_with_missing_target_dropped_with_count(caplog):
    frame = make_table(rows=50)
    frame.loc[[3, 7, 9], "y"] = np.nan
    with caplog.at_level(logging.WARNING):
        _, cleaned = infer_schema(frame, "y")
    assert len(cleaned) == 47
    assert "Dropped 3 of 50 rows whose target 'y' is missing" in caplog.text


def test_feature_entirely_missing_names_column_and_fix():
    frame = make_table(rows=20)
    frame["blank"] = np.nan
    with pytest.raises(
        DataError,
        match=r"Feature column 'blank' is entirely missing .* "
        r"--exclude blank",
    ):
        infer_schema(frame, "y")
    schema, _ = infer_schema(frame, "y", exclude=("blank",))
    assert "blank" not in schema.feature_names


def test_text_in_mostly_numeric_column_names_rows():
    frame = make_table(rows=100)
    rooms = frame["x1"].astype(object)
    rooms[5] = "n/a"
    rooms[42] = "twelve"
    frame["rooms"] = rooms
    with pytest.raises(DataError) as caught:
        infer_schema(frame, "y")
    message = str(caught.value)
    assert "Column 'rooms' is numeric in 98% of rows but has text in 2" in message
    assert "row 5: 'n/a'" in message and "row 42: 'twelve'" in message
    assert "--exclude rooms" in message


def test_numeric_strings_become_numbers():
    frame = pd.DataFrame({"x": ["1.5", "2", None, "4"] * 5, "y": np.arange(20.0)})
    schema, cleaned = infer_schema(frame, "y")
    assert schema.features[0].kind == NUMERIC
    assert cleaned["x"].dtype == np.float64 and cleaned["x"].isna().sum() == 5


@pytest.mark.parametrize("task", [None, "binary"])
def test_single_class_is_an_error(task):
    frame = pd.DataFrame({"x": np.arange(30.0), "y": ["only"] * 30})
    with pytest.raises(DataError, match="has a single class .*needs at least two"):
        infer_schema(frame, "y", task=task)


def test_text_target_cannot_be_regression():
    frame = pd.DataFrame({"x": np.arange(30.0), "y": ["a", "b", "c"] * 10})
    with pytest.raises(DataError, match="is not numeric.*--task binary or --task multiclass"):
        infer_schema(frame, "y", task="regression")


def test_vocabulary_learned_by_frequency_and_round_trip():
    schema, frame = infer_schema(make_table(rows=200), "y")
    schema = learn_vocabularies(schema, frame.iloc[:100])
    color = next(spec for spec in schema.features if spec.name == "color")
    counts = frame.iloc[:100]["color"].value_counts()
    assert color.vocabulary[0] == counts.index[0]
    assert set(color.vocabulary) == {"red", "green", "blue"}
    assert FeatureSchema.from_dict(schema.to_dict()) == schema
