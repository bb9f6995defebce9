"""Scoring Spark DataFrames for real (local[2]): typed outputs equal to pandas scoring, columns
bound by name, safe casts, clear errors on the driver, one model load per Python worker."""

import json
import os

import numpy as np
import pandas as pd
import pytest
from pyspark.sql.functions import pandas_udf
from pyspark.sql.types import StringType

import deepspark
from deepspark.errors import DataError, ModelNotFoundError, UserInputError
from deepspark.spark import predict, register_model

pytestmark = pytest.mark.spark


def pandas_reference(trained, frame: pd.DataFrame) -> pd.DataFrame:
    return deepspark.load_model(str(trained.model_dir)).predict(frame)


def test_regression_is_a_double_column_equal_to_pandas(spark, trained_models):
    trained = trained_models["regression"]
    frame = trained.data.assign(extra=np.arange(len(trained.data)))
    shuffled = frame[["extra", "color", "count", "y", "x2", "x1"]]  # order must not matter
    scored = predict(spark.createDataFrame(shuffled), str(trained.model_dir))
    assert dict(scored.dtypes)["prediction"] == "double"
    assert scored.columns == [*shuffled.columns, "prediction"]
    result = scored.toPandas().sort_values("extra")
    expected = pandas_reference(trained, frame)["prediction"].to_numpy()
    np.testing.assert_allclose(result["prediction"].to_numpy(), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("task", ["binary", "multiclass"])
def test_classification_is_label_plus_probability_struct(spark, trained_models, task):
    trained = trained_models[task]
    frame = trained.data.assign(row=np.arange(len(trained.data)))
    scored = predict(spark.createDataFrame(frame), str(trained.model_dir))
    labels = sorted(frame["y"].unique())
    types = dict(scored.dtypes)
    assert types["prediction"] == "string"
    assert types["probability"] == "struct<" + ",".join(f"{x}:double" for x in labels) + ">"
    result = scored.select("row", "prediction", "probability.*").toPandas().sort_values("row")
    expected = pandas_reference(trained, frame)
    assert (result["prediction"].to_numpy() == expected["prediction"].to_numpy()).all()
    for label in labels:
        np.testing.assert_allclose(result[label], expected[f"probability_{label}"], atol=1e-6)
    np.testing.assert_allclose(result[labels].sum(axis=1), 1.0, atol=1e-5)


def test_model_is_loaded_once_per_python_worker(spark, trained_models):
    trained = trained_models["regression"]
    frame = spark.createDataFrame(trained.data).repartition(6)
    scored = predict(frame, str(trained.model_dir), batch_rows=40)  # 600 rows -> >= 15 batches
    assert scored.count() == 600 and scored.where("prediction IS NULL").count() == 0
    assert spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch") == "40"

    reports = spark.range(0, 60, numPartitions=6).select(worker_report("id")).toPandas()
    reports = [json.loads(text) for text in reports.iloc[:, 0].unique()]
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "10000")
    counts = [count for report in reports for count in report["loads"].values()]
    assert counts and max(counts) == 1, reports  # reused across batches and tasks
    assert all(report["pid"] != os.getpid() for report in reports)


@pandas_udf(StringType())
def worker_report(ids: pd.Series) -> pd.Series:
    """Which Python worker ran this batch, and how often it loaded each model."""
    from deepspark.spark.udf import worker_loads

    report = json.dumps({"pid": os.getpid(), "loads": worker_loads()})
    return pd.Series([report] * len(ids))


def test_safe_casts_and_nulls(spark, trained_models):
    trained = trained_models["regression"]
    frame = trained.data.head(50).copy()
    frame.loc[[1, 2], "x2"] = np.nan
    frame.loc[[3], "color"] = None
    df = spark.createDataFrame(frame)
    cast = df.withColumn("count", df["count"].cast("decimal(18,6)")).withColumn(
        "x1", (df["x1"] * 1000).cast("int")
    )
    result = predict(cast, str(trained.model_dir)).toPandas()
    as_given = frame.assign(
        count=frame["count"].round(6), x1=(frame["x1"] * 1000).astype(int).astype(float)
    )
    expected = pandas_reference(trained, as_given)["prediction"]
    np.testing.assert_allclose(result["prediction"], expected, rtol=1e-5)
    assert result["prediction"].notna().all()  # nulls were imputed by the model


def test_uncastable_and_missing_columns_fail_on_the_driver(spark, trained_models):
    trained = trained_models["regression"]
    df = spark.createDataFrame(trained.data.head(5))
    as_text = df.withColumn("x1", df["x1"].cast("string"))
    with pytest.raises(DataError, match=r"Column 'x1' has Spark type string.*CAST\(`x1` AS DOUBLE"):
        predict(as_text, str(trained.model_dir))
    as_date = df.withColumn("color", df["x1"].cast("timestamp").cast("date"))
    with pytest.raises(DataError, match=r"Column 'color' has Spark type date"):
        predict(as_date, str(trained.model_dir))
    with pytest.raises(UserInputError, match=r"missing 2 column\(s\) the model needs: x2, color"):
        predict(df.drop("x2", "color"), str(trained.model_dir))


def test_empty_dataframe_scores_to_empty_result(spark, trained_models):
    trained = trained_models["binary"]
    empty = spark.createDataFrame(trained.data).limit(0)
    scored = predict(empty, str(trained.model_dir))
    assert scored.count() == 0
    assert scored.columns[-2:] == ["prediction", "probability"]


def test_unknown_model_fails_fast_on_the_driver(spark, trained_models, tmp_path):
    df = spark.createDataFrame(trained_models["regression"].data.head(5))
    with pytest.raises(ModelNotFoundError, match="Model not found"):
        predict(df, "models:/m-0123456789abcdef")  # raised at plan time, before any job
    with pytest.raises(ModelNotFoundError, match="Not a deepspark model"):
        predict(df, str(tmp_path))


def test_sql_function(spark, trained_models):
    trained = trained_models["multiclass"]
    register_model(spark, "level_model", str(trained.model_dir))
    spark.createDataFrame(
        trained.data.assign(row=range(len(trained.data)))
    ).createOrReplaceTempView("levels")
    result = spark.sql(
        "SELECT row, level_model(struct(*)).prediction AS label, "
        "level_model(struct(*)).probability.high AS p_high FROM levels ORDER BY row"
    ).toPandas()
    expected = pandas_reference(trained, trained.data)
    assert (result["label"].to_numpy() == expected["prediction"].to_numpy()).all()
    np.testing.assert_allclose(result["p_high"], expected["probability_high"], atol=1e-6)
    with pytest.raises(UserInputError, match="SQL function name"):
        register_model(spark, "1bad name", str(trained.model_dir))


def test_mlflow_spark_udf_still_works_on_the_logged_model(spark, trained_models):
    import mlflow
    from pyspark.sql import functions as F

    trained = trained_models["regression"]
    mlflow.set_tracking_uri(trained.tracking_uri)
    udf = mlflow.pyfunc.spark_udf(
        spark, trained.model_uri, env_manager="local", result_type="double"
    )
    df = spark.createDataFrame(trained.data.head(100).assign(row=range(100)))
    features = ["x1", "x2", "count", "color"]
    result = df.select("row", udf(F.struct(*features)).alias("p")).toPandas().sort_values("row")
    expected = pandas_reference(trained, trained.data.head(100))["prediction"]
    np.testing.assert_allclose(result["p"], expected, rtol=1e-5)
