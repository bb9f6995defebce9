"""DL 04 - MLflow: runs, parameters, metrics, loading the model, scoring it on Spark.

Every deepspark run is an MLflow run: the settings are its params, each epoch's losses its
metrics, the model (preprocessing inside) its artifact. The same model then loads with
``mlflow.pyfunc.load_model`` and scores a Spark DataFrame through ``mlflow.pyfunc.spark_udf`` or
deepspark's own Arrow UDF (``deepspark.spark.predict``).

Command line equivalent::

    deepspark train --data houses.csv --target median_house_value --run-name dl04 --json
    deepspark runs
    deepspark predict --spark --model models:/m-... --data houses.csv --output scored/

Run: ``python examples/dl04_mlflow.py [--tiny] [--data PATH]``; prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TARGET = "median_house_value"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="DL 04: MLflow tracking and a Spark UDF.")
    parser.add_argument("--tiny", action="store_true", help="a few hundred rows, 2 epochs")
    parser.add_argument("--data", default=str(SHARED_DATA / "california_housing.csv"))
    args = parser.parse_args(argv)

    import mlflow
    import numpy as np
    import pandas as pd

    import deepspark
    from deepspark.spark import get_session, predict

    frame = pd.read_csv(args.data)
    if args.tiny:
        frame = frame.sample(300, random_state=0)
    result = deepspark.train(
        frame,
        TARGET,
        model="mlp",
        hidden=(32, 16),
        epochs=2 if args.tiny else 50,
        experiment="dl04-mlflow",
        run_name="dl04-mlflow",
    )

    # The run as MLflow stores it: params (the settings), metrics (per epoch and final).
    run = mlflow.get_run(result.run_id)
    history = mlflow.MlflowClient().get_metric_history(result.run_id, "val_loss")
    runs = mlflow.search_runs(experiment_names=["dl04-mlflow"], order_by=["start_time DESC"])

    # Load as a plain MLflow pyfunc model: raw columns in, "prediction" out.
    features = frame.drop(columns=[TARGET]).head(50).reset_index(drop=True)
    pyfunc_model = mlflow.pyfunc.load_model(result.model_uri)
    local = np.asarray(pyfunc_model.predict(features)["prediction"], dtype=float)

    # Spark: MLflow's UDF and deepspark's Arrow UDF over the same DataFrame.
    spark = get_session()
    spark_frame = spark.createDataFrame(features)
    mlflow_udf = mlflow.pyfunc.spark_udf(
        spark, result.model_uri, result_type="double", env_manager="local"
    )
    by_mlflow = spark_frame.withColumn("price", mlflow_udf(*features.columns))
    by_deepspark = predict(spark_frame, result.model_uri)
    mlflow_prices = np.array([row.price for row in by_mlflow.collect()])
    deepspark_prices = np.array([row.prediction for row in by_deepspark.collect()])

    figures = {
        "lab": "DL04",
        "run_id": result.run_id,
        "model_uri": result.model_uri,
        "params": len(run.data.params),
        "param_hidden": run.data.params.get("hidden"),
        "val_loss_history": [metric.value for metric in history],
        "runs_in_experiment": len(runs),
        "test_rmse": run.data.metrics["test_rmse"],
        "spark_rows": len(deepspark_prices),
        "max_diff_mlflow_udf": float(np.max(np.abs(mlflow_prices - local))),
        "max_diff_deepspark_udf": float(np.max(np.abs(deepspark_prices - local))),
    }
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
