"""Listing tracked runs with their status and key metrics."""

from __future__ import annotations

from typing import Any

from deepspark.errors import UserInputError
from deepspark.tracking.run import use_tracking_uri

KEY_METRICS = (
    "val_rmse",
    "test_rmse",
    "val_mae",
    "test_mae",
    "val_accuracy",
    "test_accuracy",
    "val_auc",
    "test_auc",
    "epochs_completed",
)


def list_runs(
    experiment: str = "deepspark",
    *,
    tracking_uri: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Runs of an experiment, newest first.

    Returns:
        One dict per run: ``run_id``, ``run_name``, ``status``, ``start_time`` (ISO),
        ``task``, ``model_uri`` and the key metrics that run has.

    Raises:
        UserInputError: The experiment does not exist.
    """
    import mlflow

    use_tracking_uri(tracking_uri)
    found = mlflow.get_experiment_by_name(experiment)
    if found is None:
        names = [item.name for item in mlflow.search_experiments()]
        raise UserInputError(
            f"Experiment not found in {mlflow.get_tracking_uri()}; known "
            f"experiments: {', '.join(names) or 'none'}. "
            f"Received: experiment={experiment!r}"
        )
    runs = mlflow.MlflowClient().search_runs(
        [found.experiment_id], max_results=limit, order_by=["attributes.start_time DESC"]
    )
    return [_describe(run) for run in runs]


def _describe(run) -> dict[str, Any]:
    import datetime

    started = datetime.datetime.fromtimestamp(run.info.start_time / 1000, datetime.UTC)
    metrics = {name: run.data.metrics[name] for name in KEY_METRICS if name in run.data.metrics}
    return {
        "run_id": run.info.run_id,
        "run_name": run.info.run_name,
        "status": run.info.status,
        "start_time": started.isoformat(timespec="seconds"),
        "task": run.data.tags.get("deepspark.task"),
        "model_uri": run.data.tags.get("deepspark.model_uri"),
        "metrics": metrics,
    }
