"""Scoring on Arrow batches for real (local[2]), through the Arrow UDF (Spark 4.1+) and through
mapInArrow (the Spark 4.0 route): the same outputs as the pandas UDF and as
DeepsparkModel.predict, with nulls, unseen levels, casts, passthrough columns of many types and
any column order; the encoding equals the pandas one column for column."""

import dataclasses
import datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import deepspark
from deepspark.data.encoding import encode_arrow_features, encode_features
from deepspark.models.inference import format_predictions
from deepspark.spark import predict, spark_model
from deepspark.spark.arrow_scoring import arrow_outputs, arrow_udf_available

pytestmark = pytest.mark.spark

ROUTES = ["arrow_udf", "map_in_arrow"]
# What each scoring route leaves in the executed plan.
ROUTE_MARKS = {
    "arrow_udf": "score_arrow_columns",
    "map_in_arrow": "MapInArrow",
    "pandas_udf": "score_columns_",
}


def resolved_model(spark, trained, route: str):
    """The model shipped for ``route``: without its Arrow UDF, ``predict`` takes mapInArrow."""
    resolved = spark_model(spark, str(trained.model_dir))
    if route == "map_in_arrow":
        return dataclasses.replace(resolved, arrow_udf=None)
    if resolved.arrow_udf is None:
        pytest.fail("this PySpark has no arrow_udf (Spark 4.1+); the spark extra needs it")
    return resolved


def hostile_rows(trained, rows: int = 120) -> pd.DataFrame:
    """Rows with nulls in numeric and string columns, an unseen level, passthrough columns of
    several types, and the columns in another order than the model's."""
    frame = trained.data.head(rows).drop(columns=["y"]).reset_index(drop=True)
    frame.loc[[1, 4, 9], "x1"] = np.nan
    frame.loc[[2, 4], "count"] = np.nan
    frame.loc[[3, 9, 11], "color"] = None
    frame.loc[[5, 6], "color"] = "purple"  # a level the model never saw
    frame["row"] = np.arange(rows, dtype=np.int64)
    frame["note"] = [f"r{i}" if i % 7 else None for i in range(rows)]
    frame["seen"] = pd.Timestamp("2024-01-02 03:04:05", tz="UTC") + pd.to_timedelta(
        np.arange(rows), unit="h"
    )
    frame["day"] = [datetime.date(2024, 1, 1 + i % 28) for i in range(rows)]
    frame["values"] = [[float(i), float(i) / 2] for i in range(rows)]
    frame["blob"] = [bytes([i % 256, 7]) for i in range(rows)]
    return frame[["blob", "color", "row", "seen", "x2", "values", "note", "count", "day", "x1"]]


def executed_plan(scored) -> str:
    return scored._jdf.queryExecution().executedPlan().toString()


def assert_route(scored, route: str) -> None:
    plan = executed_plan(scored)
    assert ROUTE_MARKS[route] in plan, plan
    others = [mark for name, mark in ROUTE_MARKS.items() if name != route and mark in plan]
    assert not others, plan


def both_paths(spark, trained, frame: pd.DataFrame, route: str):
    df = spark.createDataFrame(frame).repartition(3)
    resolved = resolved_model(spark, trained, route)
    arrow = predict(df, resolved)
    pandas_udf = predict(df, resolved, arrow=False)
    assert_route(arrow, route)
    assert_route(pandas_udf, "pandas_udf")
    assert arrow.dtypes == pandas_udf.dtypes
    assert arrow.columns[: len(frame.columns)] == list(frame.columns)
    return arrow, pandas_udf


def test_predict_takes_the_arrow_udf_by_default(spark, trained_models):
    assert arrow_udf_available()
    trained = trained_models["regression"]
    scored = predict(spark.createDataFrame(trained.data.head(20)), str(trained.model_dir))
    assert_route(scored, "arrow_udf")
    assert scored.count() == 20


@pytest.mark.parametrize("route", ROUTES)
def test_regression_equals_pandas_udf_and_model_predict(spark, trained_models, route):
    trained = trained_models["regression"]
    frame = hostile_rows(trained)
    arrow, pandas_udf = both_paths(spark, trained, frame, route)
    assert dict(arrow.dtypes)["prediction"] == "double"
    by_arrow = arrow.toPandas().sort_values("row").reset_index(drop=True)
    by_pandas = pandas_udf.toPandas().sort_values("row").reset_index(drop=True)
    expected = deepspark.load_model(str(trained.model_dir)).predict(frame)["prediction"]
    np.testing.assert_allclose(by_arrow["prediction"], expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(by_arrow["prediction"], by_pandas["prediction"], rtol=1e-6)
    assert by_arrow["prediction"].notna().all()  # nulls and the unseen level were imputed
    passthrough = [name for name in frame.columns if name != "values"]
    pd.testing.assert_frame_equal(by_arrow[passthrough], by_pandas[passthrough])
    assert by_arrow["values"].map(list).tolist() == frame["values"].tolist()


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("task", ["binary", "multiclass"])
def test_classification_equals_pandas_udf_and_model_predict(spark, trained_models, task, route):
    trained = trained_models[task]
    frame = hostile_rows(trained)
    arrow, pandas_udf = both_paths(spark, trained, frame, route)
    model = deepspark.load_model(str(trained.model_dir))
    labels = [str(label) for label in model.schema.class_labels]
    struct = "struct<" + ",".join(f"{label}:double" for label in labels) + ">"
    assert dict(arrow.dtypes)["probability"] == struct
    columns = ["row", "prediction", "probability.*"]
    by_arrow = arrow.select(*columns).toPandas().sort_values("row").reset_index(drop=True)
    by_pandas = pandas_udf.select(*columns).toPandas().sort_values("row").reset_index(drop=True)
    expected = model.predict(frame)
    assert by_arrow["prediction"].tolist() == expected["prediction"].tolist()
    assert by_arrow["prediction"].tolist() == by_pandas["prediction"].tolist()
    for label in labels:
        np.testing.assert_allclose(by_arrow[label], expected[f"probability_{label}"], atol=1e-6)
        np.testing.assert_allclose(by_arrow[label], by_pandas[label], atol=1e-6)


@pytest.mark.parametrize("route", ROUTES)
def test_cast_features_keep_their_type_and_outputs_replace_same_names(spark, trained_models, route):
    trained = trained_models["multiclass"]
    frame = trained.data.head(60).assign(row=np.arange(60))
    df = spark.createDataFrame(frame)
    df = (
        df.withColumn("x1", (df["x1"] * 1000).cast("int"))
        .withColumn("count", df["count"].cast("decimal(18,6)"))
        .withColumn("prediction", df["row"] * 0)  # replaced by the model's output
    )
    resolved = resolved_model(spark, trained, route)
    scored = predict(df, resolved, prediction_col="prediction", batch_rows=16)
    assert_route(scored, route)
    types = dict(scored.dtypes)
    assert types["x1"] == "int" and types["count"] == "decimal(18,6)"
    assert types["prediction"] == "string"
    assert scored.columns == [*df.columns[:-1], "prediction", "probability"]
    result = scored.select("row", "x1", "prediction").toPandas().sort_values("row")
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "10000")
    as_given = frame.assign(
        x1=(frame["x1"] * 1000).astype(int).astype(float), count=frame["count"].round(6)
    )
    expected = deepspark.load_model(str(trained.model_dir)).predict(as_given)
    assert result["prediction"].tolist() == expected["prediction"].tolist()
    assert result["x1"].tolist() == as_given["x1"].astype(int).tolist()


@pytest.mark.parametrize("route", ROUTES)
def test_numeric_category_column_is_cast_to_text(spark, trained_models, route):
    trained = trained_models["regression"]
    frame = trained.data.head(40).assign(row=np.arange(40))
    frame["color"] = np.where(np.arange(40) % 2, 7, 8)  # numbers where the model has text
    resolved = resolved_model(spark, trained, route)
    scored = predict(spark.createDataFrame(frame), resolved)
    assert_route(scored, route)
    assert dict(scored.dtypes)["color"] == "bigint"
    result = scored.toPandas().sort_values("row")
    expected = deepspark.load_model(str(trained.model_dir)).predict(
        frame.assign(color=frame["color"].astype(str))
    )["prediction"]
    np.testing.assert_allclose(result["prediction"], expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("route", ROUTES)
def test_vector_column_passes_through(spark, trained_models, route):
    from pyspark.ml.feature import VectorAssembler

    trained = trained_models["binary"]
    df = spark.createDataFrame(trained.data.head(30).fillna({"x2": 0.0}))
    with_vector = VectorAssembler(inputCols=["x1", "x2"], outputCol="vector").transform(df)
    scored = predict(with_vector, resolved_model(spark, trained, route))
    rows = scored.select("vector", "x1", "prediction").collect()
    assert len(rows) == 30 and all(row.vector[0] == row.x1 for row in rows)
    assert {row.prediction for row in rows} <= {"yes", "no"}


@pytest.mark.parametrize("route", ROUTES)
def test_empty_frame(spark, trained_models, route):
    trained = trained_models["multiclass"]
    empty = spark.createDataFrame(trained.data).limit(0)
    scored = predict(empty, resolved_model(spark, trained, route))
    assert scored.count() == 0 and scored.columns[-2:] == ["prediction", "probability"]


@pytest.mark.parametrize("task", ["regression", "multiclass"])
def test_arrow_encoding_and_outputs_equal_the_pandas_ones(trained_models, task):
    trained = trained_models[task]
    model = deepspark.load_model(str(trained.model_dir))
    frame = hostile_rows(trained, rows=50)
    features = [
        pa.array(frame[name].astype(object).where(frame[name].notna(), None).tolist())
        if spec.kind != "numeric"
        else pa.array(frame[name], from_pandas=True, type=pa.float64())
        for spec, name in zip(model.schema.features, model.schema.feature_names, strict=True)
    ]
    from_arrow = encode_arrow_features(features, model.schema)
    from_pandas = encode_features(frame, model.schema)
    assert from_arrow.keys() == from_pandas.keys()
    for name, expected in from_pandas.items():
        assert from_arrow[name].dtype == expected.dtype
        np.testing.assert_array_equal(from_arrow[name], expected)
    output = model.predict_output(frame)
    formatted = format_predictions(output, model.schema)
    columns = arrow_outputs(output, model.schema)
    assert columns[0].to_pylist() == formatted["prediction"].tolist()
    if task != "regression":
        for label, values in zip(model.schema.class_labels, columns[1].flatten(), strict=True):
            np.testing.assert_array_equal(values.to_numpy(), formatted[f"probability_{label}"])
    empty = encode_arrow_features([feature.slice(0, 0) for feature in features], model.schema)
    assert all(len(values) == 0 for values in empty.values())
