"""deepspark's default on a suite of small public tables, 5-fold, against trees and a linear model.

Tables (all offline: the packages ship them): scikit-learn's diabetes, breast_cancer, wine and
iris; statsmodels' fair (binary: any affair), anes96 (7-class party identification), star98
(share of pupils above the median), randhie (doctor visits, 20,000 of its rows), grunfeld
(investment, firm as a category) and engel (food expenditure on income); palmerpenguins'
penguins (species, with missing values and categories); California housing subsamples of 500,
1,000 and 2,000 rows (``../shared/data/california_housing.csv``). 150 to 20,000 rows;
regression, binary and multiclass.

Per table and seed (``--seeds``), ``--folds``-fold cross-validation (stratified for classifiers,
shuffled with the seed). In every fold each contender sees the training folds only and is scored
on the held-out fold:

- ``deepspark``: ``deepspark.train(<training folds as a DataFrame>, target, task=...,
  test_fraction=0)`` with default settings (deepspark cuts its own validation split from the
  training folds by row hash, as ``data/splits.py`` does for any table; a small table is bagged
  by default: ``config.default_bagging``); the held-out fold is scored with the logged model's
  ``predict`` (``deepspark.load_model``), as a user would;
- ``deepspark_single`` (``bagging=1``): one network, trained only on tables whose default is a
  bagged ensemble (elsewhere it is the default itself); the table's ``bagging_gain`` is
  ``deepspark`` / ``deepspark_single``;
- ``deepspark_bagged_K`` (``--bagging K``): ``deepspark.train(bagging=K)`` (the default's own
  run where the default is K members); ``bagging_gain_K`` is its error / one network's;
- ``random_forest``, ``hist_gradient_boosting``: scikit-learn's defaults (NaN handled natively,
  categories one-hot on the training folds' levels);
- ``linear``: ``RidgeCV`` / ``LogisticRegression`` on median-imputed, standardized columns.

Error (lower is better): RMSE for regression, log-loss for classifiers (smooth and never zero on
tiny tables, where 1 - accuracy often is; accuracy is reported too). A random forest's log-loss
suffers from its zero probabilities: the better tree is usually the boosted one there.
Normalised error = deepspark's error / the better tree's (mean over folds and seeds); the suite
mean and the worst table per network; seconds per deepspark training; seed spread (max - min of
a table's mean error over seeds, with 2+ seeds) and the fold standard deviation.

Goals (issue 22): suite mean normalised error <= 1.0, no table above 1.05, tables under 2,000
rows train in <= 120 s each. ``--quick``: 2 tables, 2 folds, 8 epochs (a smoke run, not a
measurement). The CPU is shared on developer machines: compare ratios within one run.
Prints one JSON object with --json.
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

import numpy as np

CALIFORNIA = (
    Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "california_housing.csv"
)
TABLES = (
    "diabetes",
    "breast_cancer",
    "wine",
    "iris",
    "fair",
    "anes96",
    "star98",
    "randhie",
    "grunfeld",
    "engel",
    "penguins",
    "california_500",
    "california_1000",
    "california_2000",
)
QUICK_TABLES = ("iris", "diabetes")
QUICK_SETTINGS = {"epochs": 8, "patience": 3}
TREES = ("random_forest", "hist_gradient_boosting")
GOAL_MEAN, GOAL_WORST, GOAL_SECONDS, SMALL_ROWS = 1.0, 1.05, 120.0, 2000
RANDHIE_ROWS = 20_000


# --- Tables --------------------------------------------------------------------------------------


def load_table(name: str):
    """``(frame, target, task)`` for a suite table; class labels as text."""
    import pandas as pd

    if name in ("diabetes", "breast_cancer", "wine", "iris"):
        from sklearn import datasets

        bunch = getattr(datasets, f"load_{name}")()
        frame = pd.DataFrame(bunch.data, columns=[str(column) for column in bunch.feature_names])
        if name == "diabetes":
            frame["progression"] = bunch.target
            return frame, "progression", "regression"
        frame["label"] = [str(bunch.target_names[code]) for code in bunch.target]
        return frame, "label", "binary" if name == "breast_cancer" else "multiclass"
    if name.startswith("california_"):
        rows = int(name.split("_")[1])
        frame = pd.read_csv(CALIFORNIA.resolve()).sample(n=rows, random_state=rows)
        return frame.reset_index(drop=True), "median_house_value", "regression"
    if name == "penguins":
        import palmerpenguins

        return palmerpenguins.load_penguins(), "species", "multiclass"
    return _statsmodels_table(name)


def _statsmodels_table(name: str):
    import statsmodels.api as sm

    frame = getattr(sm.datasets, name).load_pandas().data.copy()
    if name == "fair":
        frame["had_affair"] = np.where(frame.pop("affairs") > 0, "yes", "no")
        return frame, "had_affair", "binary"
    if name == "anes96":
        frame = frame.drop(columns=["vote"])  # reported after the fact; the party is the target
        frame["party"] = [f"pid{int(code)}" for code in frame.pop("PID")]
        return frame, "party", "multiclass"
    if name == "star98":
        above, below = frame.pop("NABOVE"), frame.pop("NBELOW")
        frame["share_above"] = above / (above + below)
        return frame, "share_above", "regression"
    if name == "randhie":
        frame = frame.sample(n=RANDHIE_ROWS, random_state=0).reset_index(drop=True)
        return frame, "mdvis", "regression"
    if name == "grunfeld":
        return frame, "invest", "regression"
    if name == "engel":
        return frame, "foodexp", "regression"
    raise ValueError(f"unknown table {name!r}; valid: {', '.join(TABLES)}")


def fold_ids(frame, target: str, task: str, folds: int, seed: int) -> np.ndarray:
    """The held-out fold of each row (stratified for classifiers)."""
    from sklearn.model_selection import KFold, StratifiedKFold

    ids = np.empty(len(frame), dtype=int)
    if task == "regression":
        splitter = KFold(n_splits=folds, shuffle=True, random_state=seed).split(frame)
    else:
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(
            frame, frame[target]
        )
    for fold, (_, held_out) in enumerate(splitter):
        ids[held_out] = fold
    return ids


# --- Contenders ----------------------------------------------------------------------------------


def deepspark_fit(train, test, *, target, task, seed, scratch, settings, bagging=None) -> dict:
    """deepspark on the training folds, ``predict`` on the held-out fold: outputs, seconds and
    the members it bagged (``bagging=None``: the default, resolved by ``train``)."""
    import deepspark

    started = time.perf_counter()
    common = {"task": task, "seed": seed, "test_fraction": 0.0, **settings}
    if bagging is not None:
        common["bagging"] = bagging
    result = deepspark.train(
        train,
        target,
        checkpoint_dir=str(scratch / "checkpoints"),
        run_name=f"bench-{seed}",
        **common,
    )
    model = deepspark.load_model(result.model_uri)
    seconds = time.perf_counter() - started
    return {
        "predicted": model.predict(test.drop(columns=[target])),
        "seconds": seconds,
        "bagging": result.bagging,
    }


def deepspark_scores(run: dict, test, target: str, task: str, labels) -> dict:
    predicted = run["predicted"]
    if task == "regression":
        return _scores(predicted["prediction"].to_numpy(), test[target].to_numpy(), task, labels)
    columns = [f"probability_{label}" for label in labels]
    return _scores(predicted[columns].to_numpy(), test[target].to_numpy(), task, labels)


def scikit_fits(train, test, *, target: str, task: str, seed: int, labels) -> dict[str, dict]:
    """Trees and the linear model on the training folds, scored on the held-out fold."""
    train_x, test_x = _features(train.drop(columns=[target]), test.drop(columns=[target]))
    runs = {}
    for name, estimator in _estimators(task, seed).items():
        started = time.perf_counter()
        estimator.fit(train_x, train[target].to_numpy())
        if task == "regression":
            output = estimator.predict(test_x)
        else:  # columns in ``labels`` order (a fold may miss a class: zero probability)
            probabilities = estimator.predict_proba(test_x)
            output = np.zeros((len(test_x), len(labels)))
            for column, label in enumerate(estimator.classes_):
                output[:, labels.index(label)] = probabilities[:, column]
        runs[name] = {
            **_scores(output, test[target].to_numpy(), task, labels),
            "seconds": time.perf_counter() - started,
        }
    return runs


def _features(train, test):
    """Numbers as they are (NaN kept), text columns one-hot on the training folds' levels."""
    import pandas as pd

    text = [column for column in train.columns if not pd.api.types.is_numeric_dtype(train[column])]
    train_x = pd.get_dummies(train, columns=text, dtype=float)
    test_x = pd.get_dummies(test, columns=text, dtype=float)
    test_x = test_x.reindex(columns=train_x.columns, fill_value=0.0)
    return train_x.to_numpy(np.float64), test_x.to_numpy(np.float64)


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


def _scores(output: np.ndarray, truth: np.ndarray, task: str, labels) -> dict:
    """``error`` (RMSE or log-loss) and, for classifiers, ``accuracy``."""
    from sklearn.metrics import log_loss

    if task == "regression":
        errors = np.asarray(output, dtype=np.float64).reshape(-1) - truth.astype(np.float64)
        return {"error": float(np.sqrt(np.mean(errors**2)))}
    probabilities = np.clip(np.asarray(output, dtype=np.float64), 1e-15, 1.0)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    predicted = np.asarray(labels)[probabilities.argmax(axis=1)]
    return {
        "error": float(log_loss(truth, probabilities, labels=labels)),
        "accuracy": float(np.mean(predicted == truth)),
    }


# --- One table -----------------------------------------------------------------------------------


def run_table(name: str, args, scratch: Path) -> dict:
    frame, target, task = load_table(name)
    labels = None if task == "regression" else sorted(frame[target].astype(str).unique())
    if labels is not None:
        frame[target] = frame[target].astype(str)
    by_seed, default_members = {}, []
    for seed in args.seeds:
        ids = fold_ids(frame, target, task, args.folds, seed)
        folds: dict[str, list[dict]] = {}
        for fold in range(args.folds):
            train = frame[ids != fold].reset_index(drop=True)
            test = frame[ids == fold].reset_index(drop=True)
            rows = scikit_fits(train, test, target=target, task=task, seed=seed, labels=labels)
            fit = {
                "train": train,
                "test": test,
                "target": target,
                "task": task,
                "labels": labels,
                "seed": seed,
                "scratch": scratch,
            }
            rows.update(_network_rows(fit, args, default_members))
            for model, row in rows.items():
                folds.setdefault(model, []).append(row)
            _progress(name, seed, fold, rows)
        by_seed[str(seed)] = {model: _mean_rows(rows) for model, rows in folds.items()}
    networks = table_networks(args.bagging, bagged_by_default=max(default_members) > 1)
    if "deepspark_single" not in networks:  # the default is one network: no column of its own
        for seed_rows in by_seed.values():
            seed_rows.pop("deepspark_single")
    return {
        "rows": len(frame),
        "task": task,
        "classes": len(labels) if labels else None,
        "default_bagging": sorted(set(default_members)),
        **summarize_table(by_seed, networks),
    }


def table_networks(bagging: int, *, bagged_by_default: bool) -> list[str]:
    """The deepspark columns of a table: the default, one network where the default bags, and
    ``deepspark_bagged_K`` with ``--bagging K``."""
    return (
        ["deepspark"]
        + (["deepspark_single"] if bagged_by_default else [])
        + ([f"deepspark_bagged_{bagging}"] if bagging > 1 else [])
    )


def _network_rows(fit: dict, args, default_members: list[int]) -> dict[str, dict]:
    """The deepspark rows of one fold: the default, one network (trained only when the
    default bagged) and ``--bagging K`` (the default's run when it bagged K members)."""

    def run(bagging):
        outcome = deepspark_fit(
            fit["train"],
            fit["test"],
            target=fit["target"],
            task=fit["task"],
            seed=fit["seed"],
            scratch=fit["scratch"],
            settings=args.settings,
            bagging=bagging,
        )
        scores = deepspark_scores(outcome, fit["test"], fit["target"], fit["task"], fit["labels"])
        return {**scores, "seconds": outcome["seconds"]}, outcome["bagging"]

    default, members = run(None)
    default_members.append(members)
    rows = {"deepspark": default, "deepspark_single": default if members == 1 else run(1)[0]}
    if args.bagging > 1:
        same = members == args.bagging
        rows[f"deepspark_bagged_{args.bagging}"] = default if same else run(args.bagging)[0]
    return rows


def _progress(name: str, seed: int, fold: int, rows: dict) -> None:
    brief = {model: round(row["error"], 4) for model, row in rows.items()}
    print(f"{name} seed {seed} fold {fold}: {brief}", file=sys.stderr, flush=True)


def _mean_rows(rows: list[dict]) -> dict:
    figures = {}
    for key in ("error", "accuracy", "seconds"):
        values = [row[key] for row in rows if key in row]
        if values:
            figures[f"{key}_mean"] = round(statistics.fmean(values), 5)
    errors = [row["error"] for row in rows]
    figures["error_folds"] = [round(value, 5) for value in errors]
    figures["error_fold_std"] = round(statistics.stdev(errors), 5) if len(errors) > 1 else 0.0
    return figures


def summarize_table(by_seed: dict, networks: list[str]) -> dict:
    """Per-model means over seeds, normalised errors and seed spreads."""
    models = list(next(iter(by_seed.values())))
    summary = {}
    for model in models:
        errors = [seed_rows[model]["error_mean"] for seed_rows in by_seed.values()]
        seconds = [seed_rows[model]["seconds_mean"] for seed_rows in by_seed.values()]
        summary[model] = {
            "error_mean": round(statistics.fmean(errors), 5),
            "seconds_mean": round(statistics.fmean(seconds), 2),
            "seed_spread": round(max(errors) - min(errors), 5) if len(errors) > 1 else None,
        }
        accuracies = [rows[model].get("accuracy_mean") for rows in by_seed.values()]
        if None not in accuracies:
            summary[model]["accuracy_mean"] = round(statistics.fmean(accuracies), 5)
    better_tree = min(TREES, key=lambda tree: summary[tree]["error_mean"])
    normalised = {
        network: round(summary[network]["error_mean"] / summary[better_tree]["error_mean"], 4)
        for network in networks
    }
    return {
        "summary": summary,
        "better_tree": better_tree,
        "normalised_error": normalised,
        "by_seed": by_seed,
    }


# --- Suite ---------------------------------------------------------------------------------------


def suite_figures(tables: dict, networks: list[str]) -> dict:
    """Per network, over the tables that have its column: the mean and worst normalised error,
    the goals and the seconds per training; the bagging gains per table."""
    figures = {}
    for network in networks:
        having = {name: table for name, table in tables.items() if network in table["summary"]}
        if having:
            figures[network] = _network_figures(having, network)
    # Error of the bagged ensemble / one network's, per table (below 1: bagging helps).
    figures["bagging_gain"] = {
        name: _gain(table, "deepspark", "deepspark_single")
        for name, table in tables.items()
        if "deepspark_single" in table["summary"]
    }
    for network in networks:
        if network.startswith("deepspark_bagged_"):
            members = network.rsplit("_", 1)[1]
            figures[f"bagging_gain_{members}"] = {
                name: _gain(table, network, _single_column(table)) for name, table in tables.items()
            }
    return figures


def _single_column(table: dict) -> str:
    return "deepspark_single" if "deepspark_single" in table["summary"] else "deepspark"


def _gain(table: dict, bagged: str, single: str) -> float:
    summary = table["summary"]
    return round(summary[bagged]["error_mean"] / summary[single]["error_mean"], 4)


def _network_figures(tables: dict, network: str) -> dict:
    ratios = {name: table["normalised_error"][network] for name, table in tables.items()}
    worst = max(ratios, key=ratios.get)
    small = [
        table["summary"][network]["seconds_mean"]
        for table in tables.values()
        if table["rows"] < SMALL_ROWS
    ]
    return {
        "mean_normalised_error": round(statistics.fmean(ratios.values()), 4),
        "worst_table": worst,
        "worst_normalised_error": ratios[worst],
        "tables_over_goal": sorted(name for name, ratio in ratios.items() if ratio > GOAL_WORST),
        "seconds_per_training": {
            name: table["summary"][network]["seconds_mean"] for name, table in tables.items()
        },
        "max_seconds_small_tables": max(small) if small else None,
        "goal_mean_met": statistics.fmean(ratios.values()) <= GOAL_MEAN,
        "goal_worst_met": ratios[worst] <= GOAL_WORST,
        "goal_seconds_met": (max(small) <= GOAL_SECONDS) if small else None,
    }


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tables", default=None, help=f"comma-separated; default all: {TABLES}")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seeds", default="42", help="comma-separated; 2+ give the seed spread")
    parser.add_argument(
        "--bagging",
        type=int,
        default=1,
        help="K > 1 adds deepspark_bagged_K (the default bags small tables itself: the "
        "deepspark column; deepspark_single is one network there)",
    )
    parser.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a deepspark training setting for every fit (repeatable), e.g. epochs=100",
    )
    parser.add_argument("--quick", action="store_true", help="2 tables, 2 folds, 8 epochs")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.tables = args.tables or ",".join(QUICK_TABLES)
        args.folds = 2
    args.tables = (args.tables or ",".join(TABLES)).split(",")
    unknown = sorted(set(args.tables) - set(TABLES))
    if unknown:
        parser.error(f"unknown tables {unknown}; valid: {', '.join(TABLES)}")
    if args.folds < 2 or args.bagging < 1:
        parser.error(f"--folds needs 2+, --bagging 1+. Received: {args.folds}, {args.bagging}")
    args.seeds = [int(part) for part in args.seeds.split(",")]
    settings = dict(QUICK_SETTINGS) if args.quick else {}
    for item in args.setting:
        key, _, value = item.partition("=")
        if not value:
            parser.error(f"--setting takes KEY=VALUE. Received: {item!r}")
        try:
            settings[key] = json.loads(value)  # numbers, true / false, lists
        except ValueError:
            settings[key] = value
    args.settings = settings
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    started, load_at_start = time.perf_counter(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{scratch}/mlflow.db"
        from deepspark._backend import backend_name
        from deepspark.config import (
            AUTO_BAGGING_MEMBERS,
            LARGE_TABLE_EMBEDDING_SIGMA,
            SMALL_TABLE_EMBEDDING_SIGMA,
            SMOOTH_EMBEDDING_ROWS,
            auto_bagging_rows,
        )
        from deepspark.models.kinds import kind_named

        tables = {name: run_table(name, args, scratch) for name in args.tables}
    networks = table_networks(args.bagging, bagged_by_default=True)
    figures = {
        "benchmark": "tabular_suite",
        "keras_backend": backend_name(),
        "default_tabular_model": kind_named("tabular").default_builder,
        # Tables of at most this many training + validation rows are bagged by default.
        "auto_bagging_rows": auto_bagging_rows(),
        "auto_bagging_members": AUTO_BAGGING_MEMBERS,
        # tabular_net's default embedding_sigma: the small value up to this many table rows.
        "auto_embedding_sigma": {
            "rows": SMOOTH_EMBEDDING_ROWS,
            "small": SMALL_TABLE_EMBEDDING_SIGMA,
            "large": LARGE_TABLE_EMBEDDING_SIGMA,
        },
        "error": {"regression": "rmse", "binary": "log_loss", "multiclass": "log_loss"},
        "normalised_error": "network error / better tree's error (mean over folds and seeds)",
        "folds": args.folds,
        "seeds": args.seeds,
        "quick": args.quick,
        "deepspark_settings": args.settings,
        "bagging": args.bagging,
        "suite": suite_figures(tables, networks),
        "tables": tables,
        "total_wall_seconds": round(time.perf_counter() - started, 1),
        # 1-minute load average at start and end: above the core count, timings are inflated.
        "load_average": [round(load_at_start, 2), round(os.getloadavg()[0], 2)],
        "cpu_count": os.cpu_count(),
    }
    if args.json:
        print(json.dumps(figures))
    else:
        print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
