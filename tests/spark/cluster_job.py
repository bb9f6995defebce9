"""Run by test_cluster.py in its own process: score on ``local-cluster[2,1,1024]`` (two executor
JVMs with their own Python workers) and report where the work ran; then, on the same cluster (its
start-up is the expensive part), train with the spark launcher and check it equals one process."""

import json
import os
import sys

import pandas as pd
from pyspark.sql.functions import pandas_udf
from pyspark.sql.types import StringType


@pandas_udf(StringType())
def worker_report(ids: pd.Series) -> pd.Series:
    from deepspark.spark.udf import worker_loads

    report = json.dumps({"pid": os.getpid(), "loads": worker_loads()})
    return pd.Series([report] * len(ids))


def main(model_dir: str, data: str, output: str) -> None:
    from deepspark.distributed import run
    from deepspark.spark import get_session, predict
    from tests.distributed.checks import assert_matches_single_process
    from tests.distributed.rank_functions import fit_on_shard

    # The executor JVMs start like the driver's (tests/conftest.py: SPARK_SUBMIT_OPTS).
    fast_jvm = {"spark.executor.extraJavaOptions": os.environ.get("SPARK_SUBMIT_OPTS", "")}
    spark = get_session("local-cluster[2,1,1024]", config=fast_jvm)
    frame = spark.read.parquet(data).repartition(4)
    predict(frame, model_dir, batch_rows=100).write.parquet(output)
    reports = spark.range(0, 40, numPartitions=8).select(worker_report("id")).toPandas()
    executors = spark.sparkContext._jsc.sc().getExecutorMemoryStatus().size() - 1
    document = {
        "driver_pid": os.getpid(),
        "executors": executors,
        "application_id": spark.sparkContext.applicationId,
        "workers": [json.loads(text) for text in reports.iloc[:, 0].unique()],
    }
    # Ranks as barrier tasks on the separate executor JVMs; raises unless exact.
    assert_matches_single_process(run(fit_on_shard, workers=2, launcher="spark"))
    document["launcher"] = "matches one process"
    print(json.dumps(document))
    spark.stop()


if __name__ == "__main__":
    main(*sys.argv[1:4])
