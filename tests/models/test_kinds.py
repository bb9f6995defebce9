"""Model kinds own a model's column contract: the columns ``predict`` returns are the kind's
output columns, its example row scores, and text in a numeric column is counted, not fatal."""

import numpy as np
import pandas as pd
import pytest

import deepspark
from deepspark.data.schema import FeatureSchema, FeatureSpec
from deepspark.errors import UserInputError
from deepspark.models.kinds import ImageKind, TabularKind, kind_of, register_kind
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


class _WindowKind(TabularKind):
    """A kind only these tests register: tables of time windows, with settings of its own."""

    name = "windows"
    unit = "windows"
    data_description = "a table of time windows"
    default_builder = "mlp"
    default_patience = 7
    large_table_batches = False
    supports_tuning = False
    supports_bagging = False


class _WindowSchema(FeatureSchema):
    @property
    def kind(self):
        return "windows"


class _Explained:
    """The fields of an ``Explanation`` that the summary reads."""

    kind, explained_class, max_additivity_error, details = "windows", None, 0.0, {}

    def __len__(self):
        return 2


@pytest.fixture
def window_kind():
    from deepspark.models import kinds

    kind = register_kind(_WindowKind())
    yield kind
    del kinds._KINDS[kind.name]


def test_a_registered_kind_reaches_training_tuning_and_explaining(window_kind, monkeypatch):
    from types import SimpleNamespace

    from deepspark.config import TrainConfig, with_data_defaults
    from deepspark.explain import api
    from deepspark.models.builders import check_model, default_model
    from deepspark.training.bagging import check_bagging
    from deepspark.workflows.tune import _check_tabular

    config = TrainConfig(data="w.csv", target="y")
    defaults = with_data_defaults(config, "windows", rows=10**6)
    assert (defaults.patience, defaults.batch_size) == (7, 64)
    table = with_data_defaults(config, "tabular", rows=10**6)
    assert (table.patience, table.batch_size) == (30, 2048)
    assert default_model("windows", config) == "mlp"
    with pytest.raises(UserInputError, match="but the data is a table of time windows"):
        check_model("cnn", "windows")

    schema = _WindowSchema((FeatureSpec("x", "numeric", "float64"),), "y", "regression")
    assert kind_of(schema) is window_kind
    prepared = SimpleNamespace(schema=schema, streamed=None, config=config)
    with pytest.raises(UserInputError, match="windows data is not supported yet"):
        _check_tabular(prepared)
    with pytest.raises(UserInputError, match="held in memory.*kind='windows'"):
        check_bagging(prepared, 2)

    monkeypatch.setitem(api._FLOWS, "windows", api._FLOWS["tabular"])
    facts = {"data_rows": 2, "background": 2, "background_source": "data", "seconds": 1.0}
    summary = api._summary("m", "gradient", _Explained(), facts, seed=0, spark=False)
    assert summary["additivity_error_definition"].endswith("over the background windows")
    assert summary["explained_output"] == "prediction (target units)"


def test_tables_and_images_keep_their_capabilities():
    tabular, image = TabularKind(), ImageKind()
    assert (tabular.unit, image.unit) == ("rows", "images")
    assert (tabular.default_builder, image.default_builder) == ("tabular_net", "cnn")
    assert tabular.encoded_features and not image.encoded_features
    assert tabular.supports_tuning and tabular.supports_bagging
    assert not (image.supports_tuning or image.supports_bagging or image.large_table_batches)
    assert image.logged_example(prepared=None) is None
