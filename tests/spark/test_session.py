"""The one session builder and Spark data sources (file paths of each format, table names)."""

import pandas as pd
import pytest

from deepspark.errors import DataError
from deepspark.spark import get_session, read_source

pytestmark = pytest.mark.spark


def test_active_session_is_reused(spark):
    assert get_session() is spark
    assert get_session("local[1]") is spark  # one session per process: the active one wins
    assert spark.conf.get("spark.sql.execution.arrow.pyspark.enabled") == "true"
    assert spark.sparkContext.getConf().get("spark.ui.enabled") == "false"


def test_read_each_source_kind(spark, tmp_path):
    frame = pd.DataFrame({"x": [1.5, 2.5, None], "city": ["a", "b", None]})
    frame.to_csv(tmp_path / "t.csv", index=False)
    frame.to_parquet(tmp_path / "t.parquet", index=False)
    frame.to_json(tmp_path / "t.jsonl", orient="records", lines=True)
    spark.createDataFrame(frame.dropna()).createOrReplaceTempView("cities")
    for source in ("t.csv", "t.parquet", "t.jsonl"):
        read = read_source(spark, tmp_path / source)
        assert dict(read.dtypes) == {"x": "double", "city": "string"}, source
        assert read.count() == 3
    assert read_source(spark, "cities").count() == 2


def test_unknown_source_says_what_to_pass(spark, tmp_path):
    with pytest.raises(DataError, match=r"no such path and no table or view.*data='nope'"):
        read_source(spark, "nope")
    (tmp_path / "t.xlsx").write_text("x")
    with pytest.raises(DataError, match=r"Unknown file type \.xlsx for Spark"):
        read_source(spark, tmp_path / "t.xlsx")


def test_local_python_workers_start_with_keras_imported(spark):
    """Workers fork from deepspark's daemon, which imported Keras and the scoring code once."""
    import pandas as pd
    from pyspark.sql.functions import pandas_udf

    assert spark.conf.get("spark.python.daemon.module") == "deepspark.spark.daemon"

    @pandas_udf("boolean")
    def imported_before(values: pd.Series) -> pd.Series:
        import sys

        ready = "keras" in sys.modules and "deepspark.spark.arrow_scoring" in sys.modules
        return pd.Series([ready] * len(values))

    rows = spark.range(4, numPartitions=2).select(imported_before("id").alias("ready")).collect()
    assert [row.ready for row in rows] == [True] * 4
