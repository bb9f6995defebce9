"""Model kinds own a model's column contract: the columns ``predict`` returns are the kind's
output columns, its example row scores, and text in a numeric column is counted, not fatal."""

import numpy as np
import pandas as pd
import pytest

import deepspark
from deepspark.data.schema import FeatureSchema, FeatureSpec
from deepspark.errors import UserInputError
from deepspark.models.kinds import ImageKind, TabularKind, kind_of
from tests.conftest import FAST, make_table

_PANDAS_TYPES = {"double": "float64", "string": "object", "long": "int64", "boolean": "bool"}


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    root = tmp_path_factory.mktemp("kinds")
    path = root / "multiclass.csv"
    make_table(rows=300, task="multiclass").to_csv(path, index=False)
    result = deepspark.train(str(path), "y", tracking_uri=f"sqlite:///{root / 'm.db'}", **FAST)
    return deepspark.load_model(result.model_uri)


def test_predict_returns_the_kinds_output_columns_with_their_types(classifier):
    kind = classifier.model_kind
    assert isinstance(kind, TabularKind)
    scored = classifier.predict(kind.example_input(classifier.schema))
    columns = kind.output_columns(classifier.schema)
    assert list(scored.columns) == [column.name for column in columns]
    for column in columns:
        assert str(scored[column.name].dtype) == _PANDAS_TYPES[column.type], column.name
    assert scored.filter(like="probability_").sum(axis=1).round(5).tolist() == [1.0]


def test_inputs_are_the_raw_columns_with_their_types(classifier):
    columns = classifier.model_kind.input_columns(classifier.schema)
    assert {c.name: c.type for c in columns} == {
        "x1": "double",
        "x2": "double",
        "count": "double",
        "color": "string",
    }
    with pytest.raises(UserInputError, match="missing 1 column.*color"):
        classifier.model_kind.check_columns(classifier.schema, ["x1", "x2", "count"])


def test_text_in_a_numeric_column_is_counted_with_examples(classifier):
    frame = make_table(rows=6, task="multiclass")
    frame["x1"] = frame["x1"].astype(object)
    frame.loc[[1, 4], "x1"] = "oops"
    bad = classifier.model_kind.bad_rows(classifier.schema, frame, start=100, most=1)
    assert bad.count == 2
    assert bad.mask.tolist() == [False, True, False, False, True, False]
    assert bad.examples == ["row 101: x1='oops'"]
    clean = make_table(rows=6, task="multiclass")
    assert classifier.model_kind.bad_rows(classifier.schema, clean) is None


def test_an_unknown_kind_is_named():
    schema = FeatureSchema((FeatureSpec("x", "numeric", "float64"),), "y", "regression")
    assert isinstance(kind_of(schema), TabularKind)

    class Odd(FeatureSchema):
        @property
        def kind(self):
            return "audio"

    with pytest.raises(UserInputError, match="kind='audio'"):
        kind_of(Odd(schema.features, "y", "regression"))


def test_image_kind_takes_bytes_or_paths_and_reports_errors():
    from deepspark.data.schema import ImageSpec

    schema = FeatureSchema(
        (FeatureSpec("image", "image", "binary"),), "label", "multiclass", ("a", "b"),
        image=ImageSpec(8, 8, 3),
    )  # fmt: skip
    kind = kind_of(schema)
    assert isinstance(kind, ImageKind) and kind.reads_images
    assert [(c.name, c.type) for c in kind.input_columns(schema)] == [
        ("image", "binary"),
        ("path", "string"),
    ]
    assert [c.name for c in kind.output_columns(schema)] == [
        "prediction", "probability_a", "probability_b", "error",
    ]  # fmt: skip
    example = kind.example_input(schema)
    from deepspark.data.image_inputs import decode_rows

    decoded = decode_rows(list(example["image"]), schema.image)
    assert decoded.images.shape == (1, 8, 8, 3)
    assert np.all(decoded.images == 0)
    assert isinstance(example, pd.DataFrame)
