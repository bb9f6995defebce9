"""The end of a training run, logged to MLflow or kept for later: final metrics, loss curve,
model, TensorBoard files, kept checkpoints and coefficients.

A tracking server that does not answer at the end leaves all of it in the run's checkpoint
folder (``tracking.resilient.save_pending``) with one line saying how to log it once the server
is back (``deepspark sync RUN_ID``, ``finish_logging`` in ``workflows.train``), which logs only
what the run still lacks.
"""

from __future__ import annotations

from typing import Any

from deepspark.config import TrainConfig

MODEL_URI_TAG = "deepspark.model_uri"


def finish_tensorboard(log_dir: str, ending: dict[str, Any], run_id: str) -> None:
    """Log the run's event files under ``tensorboard/``. A distributed run's ranks wrote none
    (rank 0 may not see the folder): the driver writes them here from rank 0's history."""
    from deepspark.training.tensorboard import log_event_files, write_event_files

    if ending["distributed"]:
        write_event_files(log_dir, run_id, ending["history"])
    log_event_files(log_dir, run_id)


def ending_of(config: TrainConfig, outcome, result, linear: dict) -> dict[str, Any]:
    """What the end of a run (``result``, a ``TrainResult``) logs besides the model, as plain
    values (kept on disk when the tracking server does not answer)."""
    return {
        "metrics": result.metrics,
        "member_best_epochs": list(getattr(outcome, "member_best_epochs", None) or []),
        "history": outcome.history,
        "coefficients": linear or None,
        "tensorboard": config.tensorboard,
        "distributed": outcome.world_size > 1 or outcome.launcher is not None,
        "keep_checkpoints": bool(config.keep_checkpoints),
        "register": config.register,
        "aliases": list(config.aliases or ()),
        "result": result.to_dict(),
    }


def log_ending_or_keep(run_id, deepspark_model, example, ending, *, store) -> str:
    """Log the run's end; when the tracking server does not answer, keep it in the checkpoint
    folder and raise ``TrackingUnavailableError`` saying how to log it later."""
    import mlflow

    from deepspark.tracking.resilient import (
        TrackingUnavailableError,
        is_unavailable,
        save_pending,
        tracking_reachable,
    )

    failure = None
    if tracking_reachable():
        try:
            return log_ending(run_id, deepspark_model, example, ending, store=store)
        except Exception as error:
            if not is_unavailable(error):
                raise
            failure = error
    save_pending(store.store, model=deepspark_model, example=example, document=ending)
    uri = mlflow.get_tracking_uri()
    raise TrackingUnavailableError(
        f"Run {run_id} trained {ending['result']['epochs_completed']} epochs, but the MLflow "
        f"tracking server at {uri} does not answer; its model and metrics are kept in "
        f"{store.directory}. Once the server is back, log them with: deepspark sync {run_id} "
        f"--tracking-uri {uri}"
    ) from failure


def log_ending(run_id, deepspark_model, example, ending, *, store, again=False) -> str:
    """Log the final metrics, loss curve, model and extras of a run (the active one). With
    ``again`` (``deepspark sync``), what the run already has is not logged twice.

    Returns:
        The logged model's URI.
    """
    import mlflow

    from deepspark.tracking.plots import loss_curve_figure
    from deepspark.tracking.resilient import logged_artifacts, logged_steps, quick_requests

    done = logged_artifacts(run_id) if again else set()
    tags = mlflow.MlflowClient().get_run(run_id).data.tags if again else {}
    epochs = ending["result"]["epochs_completed"]

    def missing(key: str, step: int) -> bool:
        return not again or step not in logged_steps(run_id, key)

    with quick_requests():
        if ending["metrics"] and missing(next(iter(ending["metrics"])), epochs):
            mlflow.log_metrics(ending["metrics"], step=epochs)
        members = ending["member_best_epochs"]
        if members and missing("member_0_best_epoch", 0):  # a bagged ensemble
            mlflow.log_metrics({f"member_{i}_best_epoch": e for i, e in enumerate(members)})
        if ending["history"] and "loss_curve.png" not in done:
            figure = loss_curve_figure(ending["history"])
            mlflow.log_figure(figure, "loss_curve.png")
            import matplotlib.pyplot

            matplotlib.pyplot.close(figure)
        model_uri = tags.get(MODEL_URI_TAG)
        if model_uri is None:
            model_uri = _log_model(deepspark_model, example, run_id, ending)
            mlflow.set_tag(MODEL_URI_TAG, model_uri)
        if missing("epochs_completed", 0):
            best_epoch = ending["result"]["best_epoch"]
            mlflow.log_metrics({"epochs_completed": epochs, "best_epoch": best_epoch})
        if ending["tensorboard"] and "tensorboard" not in done:
            finish_tensorboard(ending["tensorboard"], ending, run_id)
        if ending["keep_checkpoints"] and "checkpoints" not in done:
            from deepspark.training.checkpoint import log_kept_checkpoints

            log_kept_checkpoints(deepspark_model.keras_model, store)
        if ending["coefficients"] and "coefficients.json" not in done:
            mlflow.log_dict(ending["coefficients"], "coefficients.json")
    return model_uri


def _log_model(deepspark_model, example, run_id: str, ending: dict[str, Any]) -> str:
    """Log the model (``runs:/`` artifact); a full disk is one line saying the checkpoint is
    kept and how to log the model once there is room."""
    import mlflow

    from deepspark.errors import StorageFullError
    from deepspark.tracking.pyfunc import log_pyfunc_model

    try:
        return log_pyfunc_model(deepspark_model, example).model_uri
    except Exception as error:
        if not StorageFullError.caused(error):
            raise
        epochs = ending["result"]["epochs_completed"]
        raise StorageFullError.writing(
            "the model", mlflow.get_artifact_uri(),
            f"the run's checkpoint ({epochs} epochs) is kept: free space there and log it "
            f"with: deepspark train --resume {run_id}",
        ) from error  # fmt: skip
