"""What the parent run of a search holds: at the start, the fixed settings and the space (and
what resume needs, kept in the study); at the end, the search plot, every trial, the best
configuration (as params and as ``best_config.json``)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from deepspark.tuning import study as studies
from deepspark.tuning.space import space_document, space_specs, to_settings, trial_config

STORAGE_TAG = "deepspark.tune.storage"
STUDY_TAG = "deepspark.tune.study"
SETTINGS_ATTR = "deepspark"  # the study's user attribute with what resume needs
PLOT_ARTIFACT = "search.png"
TRIALS_ARTIFACT = "trials.json"
BEST_ARTIFACT = "best_config.json"


def search_figure(rows: list[dict[str, Any]], *, metric: str, direction: str):
    """The objective of each trial (pruned trials at their last reported value, marked x) and
    the best so far, by trial number."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(7, 4))
    styles = {"COMPLETE": ("o", "tab:blue", "complete"), "PRUNED": ("x", "tab:gray", "pruned")}
    for state, (marker, color, label) in styles.items():
        points = [(r["number"], r["value"]) for r in rows if r["state"] == state and _finite(r)]
        if points:
            numbers, values = zip(*points, strict=True)
            axes.scatter(numbers, values, marker=marker, color=color, label=label)
    best_numbers, best_values, best = [], [], None
    for row in sorted(rows, key=lambda item: item["number"]):
        if row["state"] == "COMPLETE" and _finite(row):
            value = row["value"]
            if best is None or (value < best if direction == "minimize" else value > best):
                best = value
        if best is not None:
            best_numbers.append(row["number"])
            best_values.append(best)
    if best_numbers:
        axes.step(best_numbers, best_values, where="post", color="tab:red", label="best so far")
    failed = [r["number"] for r in rows if r["state"] == "FAIL"]
    axes.set_xlabel("trial")
    axes.set_ylabel(f"validation {metric}")
    title = f"Search: validation {metric} per trial ({direction})"
    axes.set_title(title + (f"; {len(failed)} failed" if failed else ""))
    if axes.get_legend_handles_labels()[0]:
        axes.legend()
    figure.tight_layout()
    return figure


def _finite(row: dict[str, Any]) -> bool:
    return row["value"] is not None and math.isfinite(row["value"])


def log_search_report(search, best) -> dict[str, Any]:
    """Log the plot, ``trials.json``, ``best_config.json`` and the ``best_*`` params and metric
    on the active (parent) run.

    Returns:
        The best trial's ``TrainConfig`` settings (``hidden`` for layers and width).
    """
    import mlflow
    from matplotlib import pyplot

    objective = search.objective
    rows = [
        studies.trial_summary(trial)
        for trial in search.study.get_trials(deepcopy=False)
        if trial.state.is_finished()
    ]
    figure = search_figure(rows, metric=objective.metric, direction=objective.direction)
    mlflow.log_figure(figure, PLOT_ARTIFACT)
    pyplot.close(figure)
    mlflow.log_dict({"metric": objective.metric, "trials": rows}, TRIALS_ARTIFACT)
    settings = to_settings(best.params)
    config = trial_config(search.base, settings).to_dict()
    mlflow.log_dict(
        {
            "trial": best.number,
            "metric": objective.metric,
            "direction": objective.direction,
            "value": best.value,
            "params": dict(best.params),
            "config": config,
            "run_id": best.user_attrs.get(studies.RUN_ATTR),
        },
        BEST_ARTIFACT,
    )
    _log_params_once({f"best_{key}": value for key, value in best.params.items()})
    _log_params_once({"best_trial": best.number})
    mlflow.log_metric(f"best_val_{objective.metric}", best.value)
    return settings


def _log_params_once(params: dict[str, Any]) -> None:
    """Params may already be there from an earlier session of a resumed search; MLflow refuses
    a param logged again with another value, so those are kept as they are (the artifact and
    the metrics have the final values)."""
    import mlflow

    run = mlflow.active_run()
    logged = mlflow.MlflowClient().get_run(run.info.run_id).data.params
    fresh = {key: value for key, value in params.items() if key not in logged}
    if fresh:
        mlflow.log_params(fresh)


def stored_settings(prepared, plan: dict[str, Any]) -> dict[str, Any]:
    """What resume needs, kept in the study itself."""
    config = prepared.config.to_dict()
    if Path(config["data"]).exists():
        config["data"] = str(Path(config["data"]).resolve())
    model = plan["model"]
    return {
        "config": json_ready(config),
        "space": space_document(plan["space"]),
        "metric": plan["objective"].metric,
        "trials": plan["trials"],
        "fingerprint": prepared.fingerprint,
        "model": model if model is None or isinstance(model, str) else None,
    }


def log_search_start(prepared, plan, storage: str, name: str, options) -> None:
    """The parent run's fixed settings, search settings and space as params; where the study
    is as tags."""
    import mlflow

    from deepspark._backend import backend_name

    searched = set(plan["space"]) | ({"hidden"} if "layers" in plan["space"] else set())
    fixed = {k: v for k, v in prepared.config.to_params().items() if k not in searched}
    objective = plan["objective"]
    mlflow.log_params(fixed)
    mlflow.log_params(
        {
            "tune_trials": plan["trials"],
            "tune_metric": objective.metric,
            "tune_direction": objective.direction,
            "tune_timeout": options["timeout"] or "",
            "tune_spark": options["spark"],
            "task_resolved": prepared.schema.task,
            **{f"space_{key}": spec for key, spec in space_specs(plan["space"]).items()},
            **{f"rows_{split}": count for split, count in prepared.split.sizes().items()},
        }
    )
    mlflow.set_tags(
        {
            STORAGE_TAG: storage,
            STUDY_TAG: name,
            "deepspark.task": prepared.schema.task,
            "deepspark.kind": prepared.schema.kind,
            "deepspark.keras_backend": backend_name(),
            "deepspark.tune.role": "search",
        }
    )


def json_ready(document: dict[str, Any]) -> dict[str, Any]:
    """Tuples as lists."""
    return {
        key: list(value) if isinstance(value, tuple) else value for key, value in document.items()
    }
