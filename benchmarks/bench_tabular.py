"""Default deepspark training on California housing: test RMSE in dollars over several seeds.

Trains with full defaults (the default Keras backend, JAX, unless KERAS_BACKEND says otherwise;
300 epochs at most with early stopping) once per seed (``--seeds``, default 42, 7, 123): each
seed changes the split, the initialisation and the shuffling. Reports each seed's figures, the
mean, the standard deviation (n - 1) and the spread (max - min) of the test RMSE.

Goals (issues 2 and 9): mean test RMSE <= $50,000 with default settings; each training run
under 5 minutes on 2 cores. Prints one JSON object with --json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_DATA = (
    Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "california_housing.csv"
)
GOAL_RMSE = 50_000.0
GOAL_SECONDS = 300.0


def train_once(data: str, target: str, seed: int) -> dict:
    """One default training run; its test metrics and wall time."""
    import deepspark

    with tempfile.TemporaryDirectory() as scratch:
        os.environ["DEEPSPARK_CHECKPOINT_DIR"] = str(Path(scratch) / "checkpoints")
        started = time.perf_counter()
        result = deepspark.train(
            data, target, seed=seed, tracking_uri=f"sqlite:///{scratch}/mlflow.db"
        )
        seconds = time.perf_counter() - started
    return {
        "seed": seed,
        "test_rmse_dollars": round(result.metrics["test_rmse"], 1),
        "val_rmse_dollars": round(result.metrics["val_rmse"], 1),
        "test_mae_dollars": round(result.metrics["test_mae"], 1),
        "test_r2": round(result.metrics["test_r2"], 4),
        "wall_seconds": round(seconds, 1),
        "epochs_completed": result.epochs_completed,
        "best_epoch": result.best_epoch,
        "rows": result.rows,
    }


def summarize(runs: list[dict]) -> dict:
    rmses = [run["test_rmse_dollars"] for run in runs]
    seconds = [run["wall_seconds"] for run in runs]
    mean_rmse = statistics.fmean(rmses)
    return {
        "test_rmse_mean_dollars": round(mean_rmse, 1),
        "test_rmse_std_dollars": round(statistics.stdev(rmses), 1) if len(rmses) > 1 else 0.0,
        "test_rmse_spread_dollars": round(max(rmses) - min(rmses), 1),
        "test_rmse_min_dollars": min(rmses),
        "test_rmse_max_dollars": max(rmses),
        "wall_seconds_mean": round(statistics.fmean(seconds), 1),
        "wall_seconds_max": max(seconds),
        "goal_rmse_dollars": GOAL_RMSE,
        "goal_rmse_met": mean_rmse <= GOAL_RMSE,
        "goal_time_met": max(seconds) <= GOAL_SECONDS,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=str(DEFAULT_DATA.resolve()))
    parser.add_argument("--target", default="median_house_value")
    parser.add_argument("--seeds", default="42,7,123", help="comma-separated seeds")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    seeds = [int(part) for part in args.seeds.split(",")]

    from deepspark._backend import backend_name

    started = time.perf_counter()
    load_at_start = os.getloadavg()[0]
    runs = [train_once(args.data, args.target, seed) for seed in seeds]
    figures = {
        "benchmark": "tabular_california",
        "keras_backend": backend_name(),
        "seeds": seeds,
        "runs": runs,
        **summarize(runs),
        "total_wall_seconds": round(time.perf_counter() - started, 1),
        # 1-minute load average at start and end: a busy machine (load above its cores) gives
        # slower, noisier figures.
        "load_average": [round(load_at_start, 2), round(os.getloadavg()[0], 2)],
        "cpu_count": os.cpu_count(),
    }
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key}: {value}", file=sys.stdout)


if __name__ == "__main__":
    main()
