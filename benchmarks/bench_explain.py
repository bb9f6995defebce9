"""Explanation cost and quality on a California-housing model.

Trains a quick model (default architecture, few epochs), then explains rows of the same file with
every method at the same background size, after one untimed warm-up row per method (imports,
numba compilation). Figures:

- ``seconds_per_row`` per method, ``gradient_vs_kernel_speedup`` (goal >= 100) for the default
  gradient baseline (the background mean), and the same for the baseline averaged over every
  background row (SHAP's reference, cost grows with the background);
- ``max_additivity_error`` per additive method (goal for ``gradient``: <= 0.01), defined as the
  max over rows of |sum(attributions) - (prediction - baseline)| / std of the predictions over
  the background rows;
- Spark (``local[2]``) rows/s for ``gradient`` against one process, cold (Python workers start
  and load the model) and warm (second job, workers reused).

Prints one JSON object with --json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_DATA = (
    Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "california_housing.csv"
)
GOAL_SPEEDUP = 100.0
GOAL_ADDITIVITY = 0.01
# name -> (method, options, rows explained)
METHODS = {
    "gradient": ("gradient", None, 500),
    "gradient_background_baseline": ("gradient", {"baseline": "background"}, 50),
    "kernel": ("kernel", None, 10),
    "permutation": ("permutation", None, 5),
    "lime": ("lime", None, 10),
}


def _explain(model_uri: str, data: str, method: str, *, rows: int, background: int, **extra):
    import deepspark

    result = deepspark.explain(
        model_uri, data, method=method, rows=rows, background=background, seed=0,
        log_to_mlflow=False, **extra,
    )  # fmt: skip
    return result.summary


def _methods(model_uri: str, data: str, background: int) -> dict:
    figures = {}
    for name, (method, options, rows) in METHODS.items():
        _explain(model_uri, data, method, rows=1, background=background, options=options)
        summary = _explain(
            model_uri, data, method, rows=rows, background=background, options=options
        )
        figures[name] = {
            "rows": summary["rows"],
            "seconds_per_row": round(summary["seconds_per_row"], 6),
            "max_additivity_error": summary["max_additivity_error"],
        }
    return figures


def _spark(model_uri: str, data: str, background: int, rows: int) -> dict:
    from deepspark.spark.session import get_session

    single = _explain(model_uri, data, "gradient", rows=rows, background=background)
    get_session("local[2]")
    cold = _explain(model_uri, data, "gradient", rows=rows, background=background, spark=True)
    warm = _explain(model_uri, data, "gradient", rows=rows, background=background, spark=True)
    return {
        "rows": rows,
        "single_process_rows_per_second": round(single["rows_per_second"], 1),
        "spark_local2_rows_per_second_cold": round(cold["rows_per_second"], 1),
        "spark_local2_rows_per_second_warm": round(warm["rows_per_second"], 1),
        "spark_warm_vs_single_process": round(
            warm["rows_per_second"] / single["rows_per_second"], 2
        ),
        "spark_max_additivity_error": warm["max_additivity_error"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=str(DEFAULT_DATA.resolve()))
    parser.add_argument("--target", default="median_house_value")
    parser.add_argument("--background", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--spark-rows", type=int, default=16000)
    parser.add_argument("--no-spark", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import deepspark

    with tempfile.TemporaryDirectory() as scratch:
        os.environ["DEEPSPARK_CHECKPOINT_DIR"] = str(Path(scratch) / "checkpoints")
        tracking_uri = f"sqlite:///{scratch}/mlflow.db"
        started = time.perf_counter()
        trained = deepspark.train(
            args.data, args.target, epochs=args.epochs, seed=42, tracking_uri=tracking_uri
        )
        train_seconds = time.perf_counter() - started
        methods = _methods(trained.model_uri, args.data, args.background)
        spark = None
        if not args.no_spark:
            spark = _spark(trained.model_uri, args.data, args.background, args.spark_rows)
    kernel_seconds = methods["kernel"]["seconds_per_row"]
    speedup = kernel_seconds / methods["gradient"]["seconds_per_row"]
    background_speedup = kernel_seconds / methods["gradient_background_baseline"]["seconds_per_row"]
    figures = {
        "benchmark": "explain_california",
        "background": args.background,
        "model": {"test_rmse_dollars": round(trained.metrics["test_rmse"], 1),
                  "epochs": trained.epochs_completed, "train_seconds": round(train_seconds, 1)},
        "seconds_per_row": {name: value["seconds_per_row"] for name, value in methods.items()},
        "rows_explained": {name: value["rows"] for name, value in methods.items()},
        "max_additivity_error": {
            name: value["max_additivity_error"]
            for name, value in methods.items()
            if value["max_additivity_error"] is not None
        },
        "gradient_vs_kernel_speedup": round(speedup, 1),
        "gradient_background_baseline_vs_kernel_speedup": round(background_speedup, 1),
        "goal_speedup_met": speedup >= GOAL_SPEEDUP,
        "goal_additivity_met": methods["gradient"]["max_additivity_error"] <= GOAL_ADDITIVITY,
        "spark": spark,
        "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }  # fmt: skip
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key}: {value}", file=sys.stdout)


if __name__ == "__main__":
    main()
