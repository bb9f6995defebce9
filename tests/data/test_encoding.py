import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from deepspark.data.encoding import (
    FIRST_LEVEL_CODE,
    MISSING_CODE,
    UNSEEN_CODE,
    encode_arrow_features,
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


@pytest.mark.parametrize(
    "values",
    [
        ["red", None, "purple", np.nan, "blue"],  # text, missing, unseen
        pd.Series(["red", None, "purple", "green"], dtype="string"),
        pd.Series(["red", "purple", "green"], dtype="category"),
        [1, 2.5, None, True, "red"],  # mixed: matched as text, like the learned levels
    ],
)
def test_category_codes_match_text_and_arrow_gives_the_same(schema, values):
    color = next(spec for spec in schema.features if spec.name == "color")
    column = pd.Series(values) if not isinstance(values, pd.Series) else values
    as_text = [None if pd.isna(value) else str(value) for value in column.astype(object)]
    expected = [
        MISSING_CODE
        if value is None
        else color.vocabulary.index(value) + FIRST_LEVEL_CODE
        if value in color.vocabulary
        else UNSEEN_CODE
        for value in as_text
    ]
    frame = pd.DataFrame({"x1": 1.0, "x2": 0.0, "count": 1, "color": column})
    encoded = encode_features(frame, schema)
    assert encoded["categorical"][:, 0].tolist() == expected
    arrow = pa.table({name: frame[name].astype("float64") for name in ("x1", "x2", "count")})
    arrow = arrow.append_column("color", pa.array(as_text, type=pa.string()))
    from_arrow = encode_arrow_features(arrow, schema)
    for name, values_ in encoded.items():
        assert from_arrow[name].dtype == values_.dtype
        np.testing.assert_array_equal(from_arrow[name], values_)


def test_text_in_numeric_is_one_check_shared_with_training(schema):
    for bad in ("oops", [1, 2], {"a": 1}):
        frame = make_table(rows=3).astype({"x2": object})
        frame.at[1, "x2"] = bad
        with pytest.raises(UserInputError, match=r"Column 'x2' is numeric in .* \(row 1: "):
            encode_features(frame, schema)
    frame = make_table(rows=3).astype({"x2": object})
    frame["x2"] = ["1.5", None, True]  # parsable text, missing and booleans are numbers
    assert encode_features(frame, schema)["numeric"][:, 1].tolist()[::2] == [1.5, 1.0]
