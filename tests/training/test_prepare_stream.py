"""Tables larger than the memory budget stream into shards in the store: the same split, schema
and statistics as an in-memory read; a Spark DataFrame is streamed by its executors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

import deepspark
from deepspark.config import TrainConfig
from deepspark.training.prepare import prepare_data
from tests.conftest import FAST, make_table


def assert_same_preparation(in_memory, streamed) -> None:
    assert streamed.streamed is not None and in_memory.streamed is None
    assert streamed.rows == in_memory.rows
    assert streamed.schema == in_memory.schema
    expected, got = in_memory.numeric_stats(), streamed.numeric_stats()
    assert got.log_columns == expected.log_columns
    assert got.missing_columns == expected.missing_columns
    np.testing.assert_allclose(got.mean, expected.mean, rtol=1e-9)
    np.testing.assert_allclose(got.scale, expected.scale, rtol=1e-9)
    assert streamed.target_center == pytest.approx(in_memory.target_center, rel=1e-6)
    assert streamed.target_scale == pytest.approx(in_memory.target_scale, rel=1e-6)
    np.testing.assert_array_equal(streamed.numeric_train, in_memory.numeric_train)


@pytest.mark.parametrize("task", ["regression", "multiclass"])
def test_streamed_preparation_equals_the_in_memory_one(workdir, task):
    path = workdir / "table.csv"
    make_table(rows=500, task=task).to_csv(path, index=False)
    in_memory = prepare_data(TrainConfig(data=str(path), target="y"))
    streamed = prepare_data(TrainConfig(data=str(path), target="y", max_memory_mb=0.01))
    assert_same_preparation(in_memory, streamed)
    shards = streamed.streamed.shards
    assert shards.store.uri.startswith(str(workdir / ".deepspark" / "store" / "shards"))
    assert sum(shards.rows("train")) == streamed.rows["train"]


def test_streamed_training_learns_and_counts_bad_values(workdir):
    frame = make_table(rows=600)
    frame["x1"] = frame["x1"].astype(object)
    frame.loc[[3, 77], "x1"] = "oops"  # text in a numeric column: counted, read as missing
    path = workdir / "bad.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(deepspark.errors.DataError, match="numeric in .* but has text"):
        prepare_data(TrainConfig(data=str(path), target="y"))  # in memory: strict, as before
    result = deepspark.train(str(path), "y", max_memory_mb=0.01, **{**FAST, "epochs": 30})
    assert result.metrics["test_r2"] > 0.8
    assert sum(result.rows.values()) == 600


@pytest.mark.spark
def test_a_spark_dataframe_is_streamed_by_the_executors(spark, workdir):
    frame = make_table(rows=500)
    spark_frame = spark.createDataFrame(frame).repartition(3)
    streamed = prepare_data(TrainConfig(data="<Spark DataFrame>", target="y"), data=spark_frame)
    in_memory = prepare_data(TrainConfig(data="<pandas DataFrame>", target="y"), data=frame)
    assert dataclasses.replace(in_memory.schema) == streamed.schema
    assert streamed.rows == in_memory.rows
    names = [name for part in streamed.streamed.shards.manifest()["splits"]["train"]["files"]
             for name in part]  # fmt: skip
    assert len(names) == 3 and all("-p0000" in name for name in names)  # one file per partition
    result = deepspark.train(spark_frame, "y", **FAST)
    assert result.rows == in_memory.rows and np.isfinite(result.metrics["test_rmse"])
    scored = deepspark.load_model(result.model_uri).predict(pd.DataFrame(frame.head(3)))
    assert len(scored) == 3
