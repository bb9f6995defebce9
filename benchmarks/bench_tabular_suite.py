"""deepspark on a suite of tables against scikit-learn's trees and a linear model, same splits.

Datasets: California housing (``../shared/data/california_housing.csv``, target
median_house_value) and the tables scikit-learn ships offline: diabetes (regression), breast
cancer (binary), wine and digits (multiclass). For every dataset and seed (``--seeds``, default
42, 7, 123) the split is deepspark's own (``prepare_data``: 70 / 15 / 15, stratified for
classification), and every contender is scored on the same test rows:

- ``deepspark_tabular_net``: ``deepspark.train(..., model="tabular_net")``, default settings;
- ``deepspark_mlp``: ``deepspark.train(..., model="mlp")`` (the plain MLP), default settings;
  the JSON's ``default_tabular_model`` says which of the two ``deepspark train`` uses when no
  ``--model`` is given;
- ``deepspark_tuned``: ``deepspark.tune`` with ``--tune-trials`` trials, when deepspark has it
  (see ``tuned_run``: a hook, filled in when ``deepspark.tune`` exists; else ``null`` with the
  reason);
- ``random_forest`` and ``hist_gradient_boosting``: scikit-learn's defaults, fit on train +
  validation (the rows a network uses for training and model selection), NaN handled natively,
  categories one-hot;
- ``linear``: ridge regression or logistic regression on median-imputed, standardized numbers and
  one-hot categories (also train + validation).

Metrics: test RMSE (regression), accuracy and log-loss (classification), and wall seconds per
fit. The summary gives each contender's mean, standard deviation (n - 1) and spread (max - min)
over seeds, and each network's relative gap to the better tree (RMSE ratio - 1 for
regression, accuracy of the better tree / the network's - 1 for classification; negative: the
network is better).

Goals (issue 13), checked for ``--candidate`` (default ``deepspark_tabular_net``): within 1 % of
the better tree on average over the suite, and no worse than either tree on California
(<= $47.7k mean test RMSE over 3 seeds). The CPU is
shared on developer machines: wall times are noisy, compare their ratios within one run.
Prints one JSON object with --json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CALIFORNIA = (
    Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "california_housing.csv"
)
SKLEARN_DATASETS = {  # name -> (loader, target column written to the CSV)
    "diabetes": ("load_diabetes", "disease_progression"),
    "breast_cancer": ("load_breast_cancer", "diagnosis"),
    "wine": ("load_wine", "cultivar"),
    "digits": ("load_digits", "digit"),
}
NETWORKS = {"deepspark_tabular_net": "tabular_net", "deepspark_mlp": "mlp"}
CONTENDERS = (
    *NETWORKS,
    "deepspark_tuned",
    "random_forest",
    "hist_gradient_boosting",
    "linear",
)
GOAL_GAP = 0.01
GOAL_CALIFORNIA_RMSE = 47_700.0


@dataclasses.dataclass(frozen=True)
class Table:
    name: str
    path: str
    target: str


def write_tables(names: list[str], folder: Path) -> list[Table]:
    """The suite's tables as CSV files (scikit-learn's own written once into ``folder``)."""
    import pandas as pd
    from sklearn import datasets

    tables = []
    for name in names:
        if name == "california":
            tables.append(Table(name, str(CALIFORNIA.resolve()), "median_house_value"))
            continue
        loader, target = SKLEARN_DATASETS[name]
        bunch = getattr(datasets, loader)()
        frame = pd.DataFrame(bunch.data, columns=[str(column) for column in bunch.feature_names])
        labels = bunch.target
        if name != "diabetes":  # class labels as text, so deepspark infers a classification task
            labels = np.asarray([f"c{int(label)}" for label in labels])
        frame[target] = labels
        path = folder / f"{name}.csv"
        frame.to_csv(path, index=False)
        tables.append(Table(name, str(path), target))
    return tables


def deepspark_run(table: Table, seed: int, scratch: Path, model: str) -> dict:
    """``deepspark.train`` with a named builder and default settings."""
    import deepspark

    started = time.perf_counter()
    result = deepspark.train(
        table.path,
        table.target,
        seed=seed,
        model=model,
        tracking_uri=f"sqlite:///{scratch}/mlflow.db",
        checkpoint_dir=str(scratch / "checkpoints"),
        run_name=f"{table.name}-{model}-{seed}",
    )
    seconds = time.perf_counter() - started
    metrics = result.metrics
    row = {"seconds": round(seconds, 1), "best_epoch": result.best_epoch}
    if "test_rmse" in metrics:
        return {"test_rmse": round(metrics["test_rmse"], 4), **row}
    return {
        "test_accuracy": round(metrics["test_accuracy"], 4),
        "test_log_loss": round(metrics.get("test_log_loss", float("nan")), 4),
        **row,
    }


def tuned_run(
    table: Table, seed: int, scratch: Path, trials: int, settings: dict | None = None
) -> dict | None:
    """``deepspark.tune(data, target, trials=N, seed=S, **settings)`` (its own MLflow and Optuna
    stores in ``scratch``): the retrained best model's test metrics (scored once), the best
    parameters and the trials' seconds. ``settings`` are fixed training settings (the
    ``--tune-setting`` budget: epochs, batch size)."""
    import deepspark

    started = time.perf_counter()
    result = deepspark.tune(
        table.path,
        table.target,
        trials=trials,
        seed=seed,
        tracking_uri=f"sqlite:///{scratch}/mlflow.db",
        storage=f"sqlite:///{scratch}/optuna.db",
        checkpoint_dir=str(scratch / "checkpoints"),
        **(settings or {}),
    )
    metrics = result.metrics
    row = {
        "seconds": round(time.perf_counter() - started, 1),
        "trials": trials,
        "fixed_settings": settings or {},
        "best_params": getattr(result, "best_params", None),
    }
    if "test_rmse" in metrics:
        return {"test_rmse": round(metrics["test_rmse"], 4), **row}
    return {
        "test_accuracy": round(metrics["test_accuracy"], 4),
        "test_log_loss": round(metrics.get("test_log_loss", float("nan")), 4),
        **row,
    }


def tune_status(trials: int) -> str:
    if trials <= 0:
        return "skipped: --tune-trials 0"
    import deepspark

    if not hasattr(deepspark, "tune"):
        return "unavailable: deepspark.tune does not exist yet"
    return f"ran {trials} trials"


def scikit_runs(table: Table, seed: int) -> dict[str, dict]:
    """Trees and a linear model fit on deepspark's train + validation rows, scored on its test
    rows."""
    from deepspark.config import make_config
    from deepspark.training.prepare import prepare_data

    prepared = prepare_data(make_config({"data": table.path, "target": table.target, "seed": seed}))
    schema, split = prepared.schema, prepared.split
    fit_rows = _features(split.train, schema), _features(split.val, schema)
    train_x = np.vstack(fit_rows)
    train_y = np.concatenate([split.train[table.target], split.val[table.target]])
    test_x, test_y = _features(split.test, schema), split.test[table.target].to_numpy()
    runs = {}
    for name, estimator in _estimators(schema.task, seed).items():
        started = time.perf_counter()
        estimator.fit(train_x, train_y)
        runs[name] = {
            **_score(estimator, test_x, test_y, schema.task),
            "seconds": round(time.perf_counter() - started, 1),
        }
    return runs


def _features(frame, schema) -> np.ndarray:
    """Numbers as they are (NaN kept), categories one-hot on the training vocabulary."""
    parts = [frame[list(schema.numeric_names)].to_numpy(dtype=np.float64)]
    for spec in schema.categorical_specs:
        values = frame[spec.name].astype("string").to_numpy()
        parts.append(np.stack([values == level for level in spec.vocabulary], axis=1))
    return np.hstack(parts).astype(np.float64)


def _estimators(task: str, seed: int) -> dict:
    from sklearn import ensemble, linear_model
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def linear(model):
        return make_pipeline(SimpleImputer(strategy="median"), StandardScaler(), model)

    if task == "regression":
        return {
            "random_forest": ensemble.RandomForestRegressor(random_state=seed, n_jobs=-1),
            "hist_gradient_boosting": ensemble.HistGradientBoostingRegressor(random_state=seed),
            "linear": linear(linear_model.RidgeCV()),
        }
    return {
        "random_forest": ensemble.RandomForestClassifier(random_state=seed, n_jobs=-1),
        "hist_gradient_boosting": ensemble.HistGradientBoostingClassifier(random_state=seed),
        "linear": linear(linear_model.LogisticRegression(max_iter=2000)),
    }


def _score(estimator, test_x, test_y, task: str) -> dict:
    from sklearn.metrics import log_loss

    if task == "regression":
        errors = estimator.predict(test_x) - test_y.astype(np.float64)
        return {"test_rmse": round(float(np.sqrt(np.mean(errors**2))), 4)}
    probabilities = estimator.predict_proba(test_x)
    predicted = estimator.classes_[probabilities.argmax(axis=1)]
    return {
        "test_accuracy": round(float(np.mean(predicted == test_y)), 4),
        "test_log_loss": round(
            float(log_loss(test_y, probabilities, labels=estimator.classes_)), 4
        ),
    }


def run_table(
    table: Table,
    seeds: list[int],
    contenders: list[str],
    trials: int,
    tune_settings: dict | None = None,
) -> dict:
    """Every contender on every seed of one table, and the per-contender summary."""
    by_contender: dict[str, list[dict]] = {name: [] for name in contenders}
    for seed in seeds:
        with tempfile.TemporaryDirectory() as folder:
            scratch = Path(folder)
            scikit = scikit_runs(table, seed)
            for name in contenders:
                if name in scikit:
                    row = scikit[name]
                elif name in NETWORKS:
                    row = deepspark_run(table, seed, scratch, NETWORKS[name])
                elif name == "deepspark_tuned":
                    ran = tune_status(trials).startswith("ran")
                    row = tuned_run(table, seed, scratch, trials, tune_settings) if ran else None
                else:
                    continue
                if row is not None:
                    by_contender[name].append({"seed": seed, **row})
                    print(f"{table.name} seed {seed} {name}: {row}", file=sys.stderr, flush=True)
    summary = {name: summarize(runs) for name, runs in by_contender.items() if runs}
    return {
        "task_metric": "test_rmse" if "test_rmse" in _first_row(by_contender) else "test_accuracy",
        "runs": {name: runs for name, runs in by_contender.items() if runs},
        "summary": summary,
        "gap_to_better_tree": {
            name: gap_to_better_tree(summary, name)
            for name in (*NETWORKS, "deepspark_tuned")
            if name in summary
        },
    }


def _first_row(by_contender: dict[str, list[dict]]) -> dict:
    return next(runs[0] for runs in by_contender.values() if runs)


def summarize(runs: list[dict]) -> dict:
    figures = {}
    for key in ("test_rmse", "test_accuracy", "test_log_loss", "seconds"):
        values = [run[key] for run in runs if key in run]
        if not values:
            continue
        figures[f"{key}_mean"] = round(statistics.fmean(values), 4)
        figures[f"{key}_std"] = round(statistics.stdev(values), 4) if len(values) > 1 else 0.0
        figures[f"{key}_spread"] = round(max(values) - min(values), 4)
    return figures


def gap_to_better_tree(summary: dict, network_name: str) -> float | None:
    """A network's relative gap to the better tree (negative: the network wins)."""
    trees = [summary.get(name) for name in ("random_forest", "hist_gradient_boosting")]
    network = summary.get(network_name)
    if network is None or not all(trees):
        return None
    if "test_rmse_mean" in network:
        best = min(tree["test_rmse_mean"] for tree in trees)
        return round(network["test_rmse_mean"] / best - 1.0, 4)
    best = max(tree["test_accuracy_mean"] for tree in trees)
    return round(best / network["test_accuracy_mean"] - 1.0, 4)


def goals(results: dict, candidate: str) -> dict:
    gaps = [table["gap_to_better_tree"].get(candidate) for table in results.values()]
    gaps = [gap for gap in gaps if gap is not None]
    figures = {
        "candidate": candidate,
        "mean_gap_to_better_tree": round(statistics.fmean(gaps), 4) if gaps else None,
    }
    figures["goal_gap_met"] = bool(gaps) and statistics.fmean(gaps) <= GOAL_GAP
    california = results.get("california", {}).get("summary", {})
    if candidate in california:
        mean_rmse = california[candidate]["test_rmse_mean"]
        trees = [
            california.get(name, {}).get("test_rmse_mean")
            for name in ("random_forest", "hist_gradient_boosting")
        ]
        figures["california_candidate_rmse_mean"] = mean_rmse
        figures["goal_california_met"] = mean_rmse <= GOAL_CALIFORNIA_RMSE and all(
            tree is None or mean_rmse <= tree for tree in trees
        )
    tuned = california.get("deepspark_tuned", {}).get("test_rmse_mean")
    if tuned is not None:  # issue 13: tuned better than both trees on California
        best_tree = min(
            california.get(name, {}).get("test_rmse_mean", float("inf"))
            for name in ("random_forest", "hist_gradient_boosting")
        )
        figures["california_tuned_rmse_mean"] = tuned
        figures["goal_tuned_california_met"] = tuned < best_tree
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--datasets", default="california,diabetes,breast_cancer,wine,digits")
    parser.add_argument("--seeds", default="42,7,123", help="comma-separated seeds")
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--tune-trials", type=int, default=0, help="0 skips deepspark.tune")
    parser.add_argument(
        "--tune-setting",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a fixed training setting for every trial (repeatable), e.g. epochs=100",
    )
    parser.add_argument("--candidate", default="deepspark_tabular_net", help="goals checked for")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    seeds = [int(part) for part in args.seeds.split(",")]
    contenders = [name for name in args.contenders.split(",") if name]
    unknown = sorted(set(contenders) - set(CONTENDERS))
    if unknown:
        parser.error(f"unknown contenders {unknown}; valid: {', '.join(CONTENDERS)}")

    tune_settings = {}
    for item in args.tune_setting:
        key, _, value = item.partition("=")
        if not value:
            parser.error(f"--tune-setting takes KEY=VALUE. Received: {item!r}")
        try:
            tune_settings[key] = json.loads(value)  # numbers, true / false, lists
        except ValueError:
            tune_settings[key] = value

    from deepspark._backend import backend_name
    from deepspark.models.builders import DEFAULT_MODELS

    started, load_at_start = time.perf_counter(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as folder:
        tables = write_tables(args.datasets.split(","), Path(folder))
        results = {
            table.name: run_table(table, seeds, contenders, args.tune_trials, tune_settings)
            for table in tables
        }
    figures = {
        "benchmark": "tabular_suite",
        "keras_backend": backend_name(),
        "default_tabular_model": DEFAULT_MODELS["tabular"],
        "seeds": seeds,
        "trees_fit_on": "train+val",
        "tuned_status": tune_status(args.tune_trials),
        "tune_settings": tune_settings,
        "datasets": results,
        **goals(results, args.candidate),
        "total_wall_seconds": round(time.perf_counter() - started, 1),
        # 1-minute load average at start and end: above the core count, timings are inflated.
        "load_average": [round(load_at_start, 2), round(os.getloadavg()[0], 2)],
        "cpu_count": os.cpu_count(),
    }
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key}: {value}")


if __name__ == "__main__":
    main()
