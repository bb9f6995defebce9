"""Default deepspark training on California housing: test RMSE in dollars and wall time.

Goal (issue 2): test RMSE <= $50,000 with default settings, in under 5 minutes on 2 cores.
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
GOAL_RMSE = 50_000.0
GOAL_SECONDS = 300.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=str(DEFAULT_DATA.resolve()))
    parser.add_argument("--target", default="median_house_value")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import deepspark

    with tempfile.TemporaryDirectory() as scratch:
        os.environ["DEEPSPARK_CHECKPOINT_DIR"] = str(Path(scratch) / "checkpoints")
        started = time.perf_counter()
        result = deepspark.train(
            args.data, args.target, seed=args.seed, tracking_uri=f"sqlite:///{scratch}/mlflow.db"
        )
        seconds = time.perf_counter() - started
    figures = {
        "benchmark": "tabular_california",
        "test_rmse_dollars": round(result.metrics["test_rmse"], 1),
        "val_rmse_dollars": round(result.metrics["val_rmse"], 1),
        "test_mae_dollars": round(result.metrics["test_mae"], 1),
        "test_r2": round(result.metrics["test_r2"], 4),
        "wall_seconds": round(seconds, 1),
        "epochs_completed": result.epochs_completed,
        "best_epoch": result.best_epoch,
        "rows": result.rows,
        "goal_rmse_met": result.metrics["test_rmse"] <= GOAL_RMSE,
        "goal_time_met": seconds <= GOAL_SECONDS,
        "cpu_count": os.cpu_count(),
    }
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key}: {value}", file=sys.stdout)


if __name__ == "__main__":
    main()
