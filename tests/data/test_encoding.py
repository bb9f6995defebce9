import numpy as np
import pandas as pd
import pytest

from deepspark.data.encoding import (
    FIRST_LEVEL_CODE,
    MISSING_CODE,
    UNSEEN_CODE,
    encode_features,
    encode_target,
)
from deepspark.data.schema import infer_schema, learn_vocabularies
from deepspark.errors import UserInputError
from tests.conftest import make_table


@pytest.fixture
def schema():
    learned, frame = infer_schema(make_table(rows=100), "y")
    return learn_vocabularies(learned, frame)


def test_codes_for_levels_missing_and_unseen(schema):
    color = next(spec for spec in schema.features if spec.name == "color")
    frame = pd.DataFrame(
        {
            "x1": [1.0, 2.0, 3.0],
            "x2": [np.nan, 0.0, 1.0],
            "count": [1, 2, 3],
            "color": [color.vocabulary[1], None, "purple"],
        }
    )
    encoded = encode_features(frame, schema)
    assert encoded["categorical"][:, 0].tolist() == [
        FIRST_LEVEL_CODE + 1,
        MISSING_CODE,
        UNSEEN_CODE,
    ]
    assert encoded["numeric"].dtype == np.float32
    assert np.isnan(encoded["numeric"][0, 1])


def test_columns_bound_by_name_extra_columns_ignored(schema):
    frame = make_table(rows=10)
    shuffled = frame[["color", "y", "count", "x2", "x1"]].assign(extra="zzz")
    first, second = encode_features(frame, schema), encode_features(shuffled, schema)
    np.testing.assert_array_equal(first["numeric"], second["numeric"])
    np.testing.assert_array_equal(first["categorical"], second["categorical"])


def test_missing_columns_are_all_named(schema):
    frame = make_table(rows=5).drop(columns=["x1", "color"])
    with pytest.raises(UserInputError, match=r"missing 2 column\(s\) the model needs: x1, color"):
        encode_features(frame, schema)


def test_text_in_numeric_column_at_scoring(schema):
    frame = make_table(rows=5)
    frame["x1"] = frame["x1"].astype(object)
    frame.loc[2, "x1"] = "oops"
    with pytest.raises(UserInputError, match=r"Column 'x1' .*\(row 2: 'oops'\); fix those cells"):
        encode_features(frame, schema)


def test_encode_target_classes():
    frame = make_table(rows=60, task="binary")
    schema, frame = infer_schema(frame, "y")
    assert schema.class_labels == ("no", "yes")
    codes = encode_target(frame["y"], schema)
    assert codes.tolist() == (frame["y"] == "yes").astype(int).tolist()
