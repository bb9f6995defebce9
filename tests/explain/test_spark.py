"""Explanations on Spark equal the single-process ones for the same seed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import deepspark
from deepspark.errors import UserInputError
from tests.conftest import make_table

pytestmark = pytest.mark.spark


def _explain(trained, method, *, spark, options=None):
    return deepspark.explain(
        trained.model_uri,
        str(trained.data),
        method=method,
        rows=24,
        background=30,
        seed=11,
        spark=spark,
        options=options,
        log_to_mlflow=False,
        tracking_uri=trained.tracking_uri,
    )


@pytest.mark.parametrize(
    ("method", "options"), [("gradient", None), ("lime", {"num_samples": 300})]
)
def test_spark_equals_single_process(spark, binary_model, method, options):
    local = _explain(binary_model, method, spark=False, options=options)
    distributed = _explain(binary_model, method, spark=True, options=options)
    assert distributed.summary["background_source"] == local.summary["background_source"]
    local_table, spark_table = local.explanation.table(), distributed.explanation.table()
    pd.testing.assert_frame_equal(spark_table, local_table, rtol=1e-5, atol=1e-7)
    pd.testing.assert_frame_equal(
        distributed.explanation.features, local.explanation.features, check_dtype=False
    )
    if method == "gradient":
        assert distributed.summary["max_additivity_error"] <= 0.01
    else:
        assert distributed.explanation.details["lime_conditions"].keys() == {0, 1, 2}


def test_spark_names_missing_columns(spark, binary_model, tmp_path):
    data = tmp_path / "partial.csv"
    make_table(rows=10).drop(columns=["x1"]).to_csv(data, index=False)
    with pytest.raises(UserInputError, match=r"missing 1 column\(s\) the model needs: x1"):
        deepspark.explain(
            binary_model.model_uri, str(data), spark=True, log_to_mlflow=False,
            tracking_uri=binary_model.tracking_uri,
        )  # fmt: skip


def test_background_sampled_from_the_data_is_the_same_rows_on_spark(spark, binary_model):
    from deepspark.explain.background import FrameRows
    from deepspark.explain.spark import _SparkRows, _with_row_ids

    frame = pd.read_csv(binary_model.data)
    indexed = _with_row_ids(spark.createDataFrame(frame.head(40).astype({"color": object})))
    positions = np.array([0, 7, 39])
    taken = _SparkRows(indexed, 40).take(positions).drop(columns="row_id")
    expected = FrameRows(frame.head(40)).take(positions).reset_index(drop=True)
    pd.testing.assert_frame_equal(taken[expected.columns], expected, check_dtype=False)
