"""DL 05 - Hyperparameter search on Spark (the course's Hyperopt with ``SparkTrials``).

deepspark searches with Optuna (TPE sampling, median pruning on each epoch's validation metric);
with ``spark=True`` every trial trains in a Spark task, several at a time, while the study stays
on the driver. Trials are scored on the validation split only; the best configuration is
retrained and the test split is scored once, at the end. Each trial is an MLflow child run.

Command line equivalent::

    deepspark tune --data ../shared/data/california_housing.csv --target median_house_value \
        --trials 20 --epochs 30 --spark --space lr=1e-4:1e-1:log --json

Run: ``python examples/dl05_hyperopt_spark.py [--tiny] [--data PATH] [--local]``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TARGET = "median_house_value"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="DL 05: hyperparameter search on Spark.")
    parser.add_argument("--tiny", action="store_true", help="a few hundred rows, 2 trials")
    parser.add_argument("--data", default=str(SHARED_DATA / "california_housing.csv"))
    parser.add_argument("--local", action="store_true", help="trials in this process, no Spark")
    args = parser.parse_args(argv)

    import pandas as pd

    import deepspark

    frame = pd.read_csv(args.data)
    if args.tiny:
        frame = frame.sample(300, random_state=0)

    # The search space: the course searches the width, depth and learning rate of the network.
    space = {"layers": "1:3", "width": "8:128:log", "lr": "1e-4:3e-2:log"}
    result = deepspark.tune(
        frame,
        TARGET,
        model="mlp",
        space=space,
        trials=2 if args.tiny else 20,
        epochs=2 if args.tiny else 30,
        batch_size=64,
        spark=not args.local,  # one Spark task per trial (SparkTrials)
        parallelism=2,
        experiment="dl05-tune",
    )
    figures = {
        "lab": "DL05",
        "parent_run_id": result.run_id,
        "best_run_id": result.best_run_id,
        "model_uri": result.model_uri,
        "metric": result.metric,
        "best_value": result.best_value,
        "best_params": result.best_params,
        "trials": result.trials,
        "test_rmse": result.metrics["test_rmse"],
        "spark": not args.local,
    }
    print(json.dumps(figures, default=str))
    return figures


if __name__ == "__main__":
    main()
