"""Spark ML: KerasEstimator.fit trains and tracks a run, returns a KerasTransformer that works in a
Pipeline and survives Pipeline.save / PipelineModel.load without the MLflow store."""

import shutil

import mlflow
import numpy as np
import pytest
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.feature import SQLTransformer

import deepspark
from deepspark.errors import UserInputError
from deepspark.spark import KerasEstimator, KerasTransformer, predict
from tests.conftest import FAST, make_table

pytestmark = pytest.mark.spark


def test_pipeline_fit_save_load(spark, workdir):
    frame = make_table(rows=500, seed=5).assign(unused=1.0, row=range(500))
    df = spark.createDataFrame(frame)
    double_x1 = SQLTransformer(statement="SELECT *, x1 * 2 AS x1_twice FROM __THIS__")
    estimator = KerasEstimator(
        inputCols=["x1_twice", "x2", "count", "color"],
        labelCol="y",
        predictionCol="y_hat",
        run_name="spark-ml",
        **{**FAST, "epochs": 40, "patience": 6},
    )
    fitted = Pipeline(stages=[double_x1, estimator]).fit(df)

    transformer = fitted.stages[-1]
    assert isinstance(transformer, KerasTransformer)
    run = mlflow.get_run(transformer.trainResult.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "spark-ml"
    assert run.data.params["features"] == "4" and run.data.params["epochs"] == "40"
    model = deepspark.load_model(transformer.getModelUri())
    assert model.feature_names == ["x1_twice", "x2", "count", "color"]  # not 'unused' or 'row'

    scored = fitted.transform(df).select("row", "y", "y_hat").toPandas().sort_values("row")
    expected = model.predict(frame.assign(x1_twice=frame["x1"] * 2))["prediction"]
    np.testing.assert_allclose(scored["y_hat"], expected, rtol=1e-6)
    assert np.corrcoef(scored["y_hat"], scored["y"])[0, 1] > 0.8

    saved = workdir / "pipeline"
    fitted.save(str(saved))
    assert (saved / "stages").exists()
    shutil.rmtree(workdir / "mlruns", ignore_errors=True)
    (workdir / "mlflow.db").unlink()  # the saved pipeline must not need the MLflow store
    loaded = PipelineModel.load(str(saved))
    again = loaded.transform(df).select("row", "y_hat").toPandas().sort_values("row")
    np.testing.assert_allclose(again["y_hat"], scored["y_hat"], rtol=1e-6)


def test_classifier_estimator_and_transformer_alone(spark, workdir):
    frame = make_table(rows=400, seed=6, task="binary")
    df = spark.createDataFrame(frame)
    transformer = KerasEstimator(labelCol="y", **{**FAST, "epochs": 40, "patience": 6}).fit(df)
    assert transformer.trainResult.metrics["test_accuracy"] > 0.75
    scored = transformer.transform(df)
    assert dict(scored.dtypes)["probability"] == "struct<no:double,yes:double>"
    direct = predict(df, transformer.getModelUri()).select("prediction").toPandas()
    assert (scored.select("prediction").toPandas() == direct).all().all()


def test_estimator_rejects_bad_settings_and_columns(spark, workdir):
    with pytest.raises(UserInputError, match=r"activation"):
        KerasEstimator(labelCol="y", activation="nope")
    with pytest.raises(UserInputError, match=r"takes the data in fit\(\)"):
        KerasEstimator(labelCol="y", data="x.csv")
    df = spark.createDataFrame(make_table(rows=20))
    with pytest.raises(UserInputError, match=r"missing column\(s\) price"):
        KerasEstimator(labelCol="price").fit(df)
    with pytest.raises(UserInputError, match=r"empty DataFrame"):
        KerasEstimator(labelCol="y").fit(df.limit(0))


@pytest.mark.distributed
@pytest.mark.slow
def test_estimator_trains_on_the_spark_launcher(spark, workdir):
    frame = make_table(rows=400, seed=7)
    df = spark.createDataFrame(frame)
    # Two ranks as Spark barrier tasks is the claim; two epochs show it.
    estimator = KerasEstimator(labelCol="y", workers=2, launcher="spark", **{**FAST, "epochs": 2})
    transformer = estimator.fit(df)
    result = transformer.trainResult
    assert (result.world_size, result.launcher) == (2, "spark")
    assert mlflow.get_run(result.run_id).info.status == "FINISHED"
    scored = transformer.transform(df).select("prediction").toPandas()
    assert len(scored) == 400 and scored["prediction"].notna().all()
