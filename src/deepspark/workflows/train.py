"""``train``: one call from a data source to a tracked, evaluated, logged deepspark model.

The local-or-distributed decision is made here (``_fit``): ``training`` holds the one fit loop
both use, ``distributed`` runs it on every rank.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from deepspark._backend import backend_name, use_backend
from deepspark.config import TrainConfig, make_config
from deepspark.errors import TrainingDivergedError, UserInputError
from deepspark.models.builders import (
    check_base,
    check_model,
    default_model,
    has_own_train_step,
    unused_settings,
)
from deepspark.models.kinds import kind_of
from deepspark.store.store import STORE_ENV, Store
from deepspark.training.checkpoint import CheckpointStore, checkpoint_root
from deepspark.training.prepare import PreparedData, prepare_data
from deepspark.workflows._finish import (
    MODEL_URI_TAG,  # noqa: F401  (imported from here by tune and pretrained)
    ending_of,
    log_ending,
    log_ending_or_keep,
)

logger = logging.getLogger("deepspark.training")
CHECKPOINT_TAG = "deepspark.checkpoint_dir"
BAD_IMAGES_FILE = "bad_images.csv"


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What a training run produced.

    Attributes:
        run_id: The MLflow run.
        model_uri: Loads the model with ``deepspark.load_model`` or ``mlflow.pyfunc.load_model``.
        metrics: ``val_*`` (model as restored, whole validation split) and ``test_*`` (scored once).
        epochs_completed: Epochs trained in total (resumed runs count earlier epochs too).
        best_epoch: 1-based epoch whose weights the model keeps.
        world_size: Workers that trained the model (1: not distributed).
        launcher: How distributed workers were started (``None``: not distributed).
        restarts: Times a distributed job started again after a worker died.
        bad_images: Image files left out of training (corrupt, truncated, not images).
        registered: With ``register``: the new registered version (``name``, ``version``,
            ``aliases``, ``model_uri`` as ``models:/NAME/<version>``...); else ``None``.
        coefficients: A linear model's (``model="linear"``, or ``activation="linear"`` without
            batch normalization) coefficients in the raw columns' units: ``{column: value}``
            (one-hot categories as ``column=value``; binary: on the logit scale), per class
            ``{class: {column: value}}`` for multiclass; ``None`` for other models.
        intercept: The linear model's intercept (per class for multiclass), else ``None``.
        bagging: Members of the bagged ensemble the model averages (1: one network); the
            resolved value where ``bagging`` was left to its default (a small table: 5).
    """

    run_id: str
    model_uri: str
    metrics: dict[str, float]
    epochs_completed: int
    best_epoch: int
    stopped_early: bool
    task: str
    rows: dict[str, int]
    experiment: str
    tracking_uri: str
    seconds: float
    resumed_from_epoch: int | None = None
    world_size: int = 1
    launcher: str | None = None
    restarts: int = 0
    bad_images: int = 0
    registered: dict[str, Any] | None = None
    coefficients: dict[str, Any] | None = None
    intercept: float | dict[str, float] | None = None
    bagging: int = 1

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def train(
    data: str | None = None,
    target: str | None = None,
    *,
    config: TrainConfig | None = None,
    config_file: str | Path | None = None,
    resume: str | None = None,
    model: Any = None,
    callbacks: Sequence[Any] | None = None,
    **settings: Any,
) -> TrainResult:
    """Train a Keras network on a table, track it in MLflow and log the model.

    Args:
        data: A CSV / Parquet / JSON-lines file, a folder or glob of them (hive partitions
            too), a URI on any filesystem pyarrow reaches (``s3://bucket/houses/``), a Delta
            table, a built-in dataset name (``diabetes``), or a pandas or Spark DataFrame.
            Tables larger than ``max_memory_mb`` stream through the store.
        target: Column to predict (optional for built-in datasets).
        config: A complete ``TrainConfig`` instead of ``data``, ``target`` and settings.
        config_file: TOML file with settings; explicit arguments win over it.
        resume: Run id of a killed or failed run to continue from its last completed epoch.
        model: The network: ``None`` (deepspark's MLP), a registered builder name, a builder
            function ``builder(context) -> keras.Model``, or a ``keras.Model`` body that maps
            the encoded features to the last hidden layer (deepspark adds preprocessing and
            the task head), or a complete ``keras.Model`` (marked with
            ``deepspark.models.complete(model)``, or a subclass with its own ``train_step``:
            no head added). See ``deepspark.models.builders``. ``"linear"``: linear or
            logistic regression; the result holds its ``coefficients`` and ``intercept``.
        callbacks: Keras callbacks to run during ``fit`` after deepspark's own (they see each
            epoch's complete logs). In a distributed run, one with the attribute
            ``rank_zero_only = True`` runs on rank 0 only, the others on every rank. With
            callbacks (or a ``model``, or several workers) a small table is not bagged by
            default (``bagging`` resolves to 1).
        **settings: Any ``TrainConfig`` field (``hidden=(64, 32)``, ``lr=1e-3``, ``epochs=50``...),
            validated like the CLI options; ``register="houses"`` with ``aliases=["champion"]``
            registers the logged model after a successful run, ``tensorboard="logs"`` writes
            TensorBoard event files.

    Returns:
        A ``TrainResult`` with ``run_id``, ``model_uri`` and ``metrics``.

    Raises:
        UserInputError: Bad data or settings (message names the problem and the fix).
        TrainingDivergedError: The loss became NaN; the run is marked FAILED.

    Example:
        >>> result = deepspark.train("houses.csv", "median_house_value", hidden=(64, 32))
        >>> result.metrics["test_rmse"]
    """
    if resume:
        return _resume(resume, tracking_uri=settings.get("tracking_uri"), callbacks=callbacks)
    frame = None
    if data is not None and not isinstance(data, str | Path):  # a pandas / Spark DataFrame
        frame, data = data, describe_frame(data)
    if config is None:
        config = make_config({"data": data, "target": target, **settings}, config_file=config_file)
    check_model(model)
    check_base(model, config)
    _check_outputs(config)
    use_backend(config.keras_backend)
    callbacks = _check_callbacks(callbacks, config)
    _check_own_train_step(model, config)
    if config.base:
        from deepspark.models.applications import check_weights, find_application

        find_application(config.base)
        check_weights(config.weights)
    # Before any work: the store must be writable here (and, on a cluster, seen by executors).
    checkpoint_root(config.checkpoint_dir, config.store).check_writable()
    if config.store or os.environ.get(STORE_ENV):
        Store.resolve(config.store).check_writable()
    if config.launcher == "spark":
        from deepspark.distributed.training import check_cluster_store

        check_cluster_store(config)
    # bagging=None bags a small table by default, with the default model and no callbacks only.
    auto_bagging = model is None and not callbacks and not _distributed(config)
    prepared = prepare_data(config, model=model, data=frame, auto_bagging=auto_bagging)
    prepared = dataclasses.replace(prepared, builder=model)
    _check_buildable(prepared)
    return _run(prepared, resume_run=None, callbacks=callbacks)


def _check_callbacks(callbacks: Sequence[Any] | None, config: TrainConfig) -> list:
    """The user's callbacks, checked before any work (``UserInputError`` for a bad one)."""
    from deepspark.training.callbacks import rank_callbacks

    callbacks = list(callbacks or ())
    rank_callbacks(callbacks, rank=0)  # raises for an item that is not a Keras callback
    if callbacks and (config.bagging or 1) > 1:  # None: resolved to 1 with callbacks
        raise UserInputError(
            "callbacks= does not apply to a bagged ensemble yet (its members train quietly); "
            f"leave out bagging or the callbacks. Received: bagging={config.bagging}"
        )
    if callbacks and _distributed(config):
        import cloudpickle

        try:  # they travel to the ranks
            cloudpickle.dumps(callbacks)
        except Exception as error:  # noqa: BLE001  whatever cannot be pickled
            raise UserInputError(
                "callbacks= for a distributed run must be picklable (they are sent to every "
                f"worker): {type(error).__name__}: {error}. Received: callbacks={callbacks!r}"
            ) from error
    return callbacks


def _distributed(config: TrainConfig) -> bool:
    return config.workers > 1 or config.launcher is not None


def _check_own_train_step(model: Any, config: TrainConfig) -> None:
    from deepspark.models.builders import is_complete

    if is_complete(model) and has_own_train_step(model) and _distributed(config):
        raise UserInputError(
            "A model with its own train_step trains in one process: distributed training "
            "averages gradients in the optimizer of Keras' own train_step; leave out --workers "
            "and --launcher (or wrap your optimizer in deepspark.distributed."
            f"DistributedOptimizer in a script of your own). Received: workers={config.workers}"
        )


def _check_buildable(prepared: PreparedData) -> None:
    """Build a ``keras.Model`` given as ``model`` once before the run starts, so that a model
    that does not fit the data fails with its ``UserInputError`` and leaves no FAILED run."""
    from deepspark.models.builders import build_model, is_keras_model
    from deepspark.training.fit import build_context

    if is_keras_model(prepared.builder):
        build_model(build_context(prepared), prepared.builder)


def _check_outputs(config: TrainConfig) -> None:
    """Before any work: what ``--tensorboard`` needs is installed."""
    if config.tensorboard:
        from deepspark.training.tensorboard import import_tensorboardx

        import_tensorboardx()


# What ``config.data`` holds when the data was a DataFrame (``describe_frame``).
FRAME_NAMES = ("<pandas DataFrame>", "<Spark DataFrame>")


def describe_frame(frame: Any) -> str:
    """What a DataFrame given as ``data`` is called in the run's params and messages (one of
    ``FRAME_NAMES``)."""
    kind = "Spark" if type(frame).__module__.startswith("pyspark") else "pandas"
    return f"<{kind} DataFrame>"


def _resume(run_id: str, *, tracking_uri: str | None, callbacks=None) -> TrainResult:
    from deepspark.tracking.resilient import has_pending
    from deepspark.tracking.run import get_run

    run = get_run(run_id, tracking_uri)
    if run.info.status == "FINISHED":
        raise UserInputError(
            f"Run {run_id} already FINISHED; there is nothing to resume. "
            f"Received: resume={run_id!r}"
        )
    directory = run.data.tags.get(CHECKPOINT_TAG)
    store = CheckpointStore(directory) if directory else None
    if store is not None and has_pending(store.store):  # trained; the server missed the end
        return finish_logging(run_id, tracking_uri=tracking_uri)
    if store is None or not store.has_run_info():
        raise UserInputError(
            f"Run {run_id} has no checkpoint to resume from (looked in "
            f"{directory}); start a new run. Received: resume={run_id!r}"
        )
    info = store.read_run_info()
    stored = dict(info["config"])
    if tracking_uri:
        stored["tracking_uri"] = tracking_uri
    config = TrainConfig.from_dict(stored)
    _check_outputs(config)
    prepared = prepare_data(config)
    if prepared.fingerprint != info["fingerprint"]:
        raise UserInputError(
            f"The data changed since run {run_id} started ({stored['data']}); "
            f"resume needs the same data. Received: resume={run_id!r}"
        )
    callbacks = _check_callbacks(callbacks, config)
    return _run(prepared, resume_run=(run_id, store), callbacks=callbacks)


def _run(prepared: PreparedData, *, resume_run, callbacks: Sequence[Any] = ()) -> TrainResult:
    import mlflow

    from deepspark.tracking.run import deferred_interrupts, tracked_run

    config = prepared.config
    started = time.perf_counter()
    run_id = resume_run[0] if resume_run else None
    with tracked_run(
        experiment=config.experiment,
        run_name=config.run_name,
        run_id=run_id,
        tracking_uri=config.tracking_uri,
    ) as active:
        run_id = active.info.run_id
        if resume_run:
            store = resume_run[1]
        else:
            with deferred_interrupts():
                store = _start_run_records(prepared, run_id)
        outcome = _fit(prepared, store, run_id=run_id, callbacks=callbacks)
        with deferred_interrupts():
            result = _finish(prepared, outcome, run_id, started, store=store)
    store.remove()
    result = dataclasses.replace(result, tracking_uri=mlflow.get_tracking_uri())
    if config.register:
        result = _register(result, config)
    return result


def _register(result: TrainResult, config: TrainConfig) -> TrainResult:
    """Register the finished run's model (``config.register``, ``config.aliases``)."""
    import mlflow

    from deepspark.errors import DeepsparkError
    from deepspark.tracking.registry import REGISTERED_TAG, register_model

    try:
        version = register_model(result.model_uri, config.register, aliases=config.aliases)
    except DeepsparkError as error:
        raise UserInputError(
            f"Run {result.run_id} finished and logged {result.model_uri}, but registering it "
            f"failed: {error} Register it with: deepspark register --model {result.model_uri} "
            f"--name {config.register}"
        ) from error
    mlflow.MlflowClient().set_tag(
        result.run_id, REGISTERED_TAG, f"{version.name}/{version.version}"
    )
    logger.info(
        "registered %s%s",
        version.model_uri,
        f" ({', '.join(version.aliases)})" if version.aliases else "",
    )
    return dataclasses.replace(result, registered=version.to_dict())


def _start_run_records(prepared: PreparedData, run_id: str) -> CheckpointStore:
    import mlflow

    config = prepared.config
    store = CheckpointStore(checkpoint_root(config.checkpoint_dir, config.store).child(run_id))
    stored_config = config.to_dict()
    if Path(config.data).exists():
        stored_config["data"] = str(Path(config.data).resolve())
    store.write_run_info({"config": stored_config, "fingerprint": prepared.fingerprint})
    unused = unused_settings(prepared.builder, prepared.schema.kind, config)
    mlflow.log_params(
        {name: value for name, value in config.to_params().items() if name not in unused}
    )
    mlflow.log_params(
        {
            "task_resolved": prepared.schema.task,
            "model": _model_name(prepared.builder, prepared.schema.kind, config),
            "features": len(prepared.schema.features),
            **{f"rows_{name}": count for name, count in prepared.rows.items()},
        }
    )
    mlflow.set_tags(
        {
            CHECKPOINT_TAG: str(store.directory),
            "deepspark.task": prepared.schema.task,
            "deepspark.kind": prepared.schema.kind,
            "deepspark.keras_backend": backend_name(),
        }
    )
    mlflow.log_dict(prepared.schema.to_dict(), "feature_schema.json")
    if kind_of(prepared.schema).reads_images:
        _log_bad_images(prepared.bad_images)
    return store


def _log_bad_images(bad_images) -> None:
    """The images left out of training, with the reason, as ``bad_images.csv`` (always logged
    for image data, so an empty file says none were bad)."""
    import mlflow
    import pandas as pd

    mlflow.log_metric("bad_images", len(bad_images))
    listing = pd.DataFrame(list(bad_images), columns=["source", "reason"])
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch, BAD_IMAGES_FILE)
        listing.to_csv(path, index=False)
        mlflow.log_artifact(str(path))


def _evaluate_streamed(model, shards, split: str, task: str) -> dict[str, float]:
    """The metrics of a whole split read back from every rank's shard files, a record batch at
    a time into running totals (``StreamingEvaluation``): memory stays flat in the rows."""
    from deepspark.data.parquet_io import parquet_batches
    from deepspark.distributed.shards import table_to_arrays
    from deepspark.models.inference import predict_arrays
    from deepspark.training.evaluation import StreamingEvaluation

    totals = StreamingEvaluation(task)
    for rank in range(shards.world_size):
        for path in shards.files(split, rank):
            for batch in parquet_batches(shards.store.filesystem, path, batch_rows=65_536):
                inputs, target = table_to_arrays(batch)
                totals.update(target, predict_arrays(model, inputs))
    return totals.result()


def _model_name(model: Any, kind: str, config: TrainConfig) -> str:
    if model is None or isinstance(model, str):
        return model or default_model(kind, config)
    return getattr(model, "name", None) or getattr(model, "__name__", type(model).__name__)


def _fit(prepared: PreparedData, store: CheckpointStore, *, run_id: str, callbacks=()):
    from deepspark.training.fit import fit_model

    config = prepared.config
    if config.bagging > 1 and _distributed(config):  # members in parallel worker processes
        from deepspark.distributed.bagging import fit_bagged_parallel

        outcome = fit_bagged_parallel(prepared, store)
    elif config.bagging > 1:
        from deepspark.training.bagging import fit_bagged

        outcome = fit_bagged(prepared, config.bagging)
    elif _distributed(config):
        from deepspark.distributed.training import fit_distributed

        outcome = fit_distributed(prepared, store, run_id=run_id, callbacks=callbacks)
    else:
        outcome = fit_model(prepared, store, callbacks=callbacks)
    if outcome.diverged_at is not None:
        epoch, batch = outcome.diverged_at
        rate = prepared.config.lr if prepared.config.lr is not None else "the default"
        raise TrainingDivergedError(
            f"Training diverged: the loss became NaN or infinite at epoch {epoch + 1}, batch "
            f"{batch + 1}; lower --lr (now {rate}) or try --optimizer adam. "
            f"Received: lr={prepared.config.lr}"
        )
    return outcome


def _finish(
    prepared: PreparedData, outcome, run_id: str, started: float, *, store: CheckpointStore
) -> TrainResult:
    from deepspark.models.inference import predict_arrays
    from deepspark.tracking.model import DeepsparkModel
    from deepspark.training.evaluation import evaluate_predictions

    schema, model = prepared.schema, outcome.model
    metrics: dict[str, float] = {}
    splits = ("val", "test") if prepared.rows["test"] else ("val",)
    for name in splits:
        if name == "val" and getattr(outcome, "oof_metrics", None):
            scores = outcome.oof_metrics  # bagging: K - 1 members trained on the val rows
        elif prepared.streamed is not None:
            scores = _evaluate_streamed(model, prepared.streamed.shards, name, schema.task)
        else:
            output = predict_arrays(model, prepared.inputs[name])
            scores = evaluate_predictions(schema.task, prepared.targets[name], output)
        metrics.update({f"{name}_{key}": value for key, value in scores.items()})
    deepspark_model = DeepsparkModel(
        model,
        schema,
        {
            "run_id": run_id,
            "target_center": prepared.target_center,
            "target_scale": prepared.target_scale,
            "metrics": metrics,
        },
    )
    example = kind_of(schema).logged_example(prepared)
    linear = _linear_coefficients(model, schema)
    result = TrainResult(
        run_id=run_id,
        model_uri="",
        metrics=metrics,
        epochs_completed=outcome.epochs_completed,
        best_epoch=outcome.best_epoch + 1,
        stopped_early=outcome.stopped_early,
        task=schema.task,
        rows=prepared.rows,
        experiment=prepared.config.experiment,
        tracking_uri="",
        seconds=round(time.perf_counter() - started, 3),
        resumed_from_epoch=outcome.resumed_from_epoch,
        world_size=outcome.world_size,
        launcher=outcome.launcher,
        restarts=outcome.restarts,
        bad_images=len(prepared.bad_images),
        bagging=prepared.config.bagging or 1,
        **linear,
    )
    ending = ending_of(prepared.config, outcome, result, linear)
    model_uri = log_ending_or_keep(run_id, deepspark_model, example, ending, store=store)
    return dataclasses.replace(result, model_uri=model_uri)


def finish_logging(run_id: str, *, tracking_uri: str | None = None) -> TrainResult:
    """Log the end of a run that the tracking server missed (``deepspark sync RUN_ID``): the
    epochs it lacks, the final metrics and the model kept in the run's checkpoint folder; the
    run ends FINISHED and the folder is removed.

    Raises:
        UserInputError: The run does not exist, or has no kept end to log.
    """
    import mlflow

    from deepspark.tracking.resilient import has_pending, load_pending
    from deepspark.tracking.run import get_run, tracked_run
    from deepspark.training.fit import relog_missing_epochs

    run = get_run(run_id, tracking_uri)
    directory = run.data.tags.get(CHECKPOINT_TAG)
    store = CheckpointStore(directory) if directory else None
    if store is None or not has_pending(store.store):
        raise UserInputError(
            f"Run {run_id} has no kept run end to log (looked in {directory}); deepspark sync "
            f"logs runs whose end could not reach the tracking server. Received: run_id={run_id!r}"
        )
    with (
        tempfile.TemporaryDirectory(prefix="deepspark-sync-") as scratch,
        tracked_run(experiment="", run_id=run_id, tracking_uri=tracking_uri),
    ):
        deepspark_model, example, ending = load_pending(store.store, scratch)
        relog_missing_epochs(ending["history"], run_id=run_id)
        model_uri = log_ending(run_id, deepspark_model, example, ending, store=store, again=True)
    store.remove()
    result = TrainResult(**{**ending["result"], "model_uri": model_uri})
    result = dataclasses.replace(result, tracking_uri=mlflow.get_tracking_uri())
    if ending["register"]:
        from types import SimpleNamespace

        settings = SimpleNamespace(register=ending["register"], aliases=ending["aliases"])
        result = _register(result, settings)
    return result


def _linear_coefficients(model, schema) -> dict[str, Any]:
    """``coefficients`` and ``intercept`` of an affine model on a table (logged as
    ``coefficients.json``); empty for other models."""
    if not kind_of(schema).encoded_features:
        return {}
    from deepspark.models.linear import linear_coefficients

    return linear_coefficients(model, schema) or {}
