"""``tune``: a hyperparameter search over ``TrainConfig`` settings, tracked in MLflow, ending with
the best configuration retrained and the test split scored once.

Which data selects the hyperparameters: the validation split only. The data is read and split
once; every trial trains on the training split and is scored on the validation split (its early
stopping and pruning see the validation split too); no trial sees the test split. The best
configuration is then trained again by ``train`` (the same split, the same seed), and that run
scores the test split, once. With ``bagging=K`` every trial is a bagged ensemble of K members on
folds of the training + validation rows, scored by its out-of-fold predictions (each row by the
member that never saw it, ``tuning.trial.train_bagged_trial``), the score the retrained best
reports as ``val_*``; such trials are not pruned.

MLflow: a parent run (``tune`` unless ``run_name`` is given) with the fixed settings, the search
space (``space_<key>`` params), the objective per trial and the best so far (metrics
``trial_<metric>`` / ``best_<metric>`` at step = trial number), the search plot
(``search.png``), every trial (``trials.json``), the best configuration (``best_config.json``
and ``best_<key>`` params) and the retrained model's ``val_*`` / ``test_*`` metrics. Each trial
is a child run (see ``deepspark.tuning.search``); the retrained model is the child run ``best``,
with the logged model.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from deepspark._backend import use_backend
from deepspark.config import TrainConfig, make_config
from deepspark.errors import UserInputError
from deepspark.models.builders import check_model
from deepspark.models.kinds import kind_of
from deepspark.training.prepare import PreparedData, prepare_data
from deepspark.tuning import report
from deepspark.tuning import study as studies
from deepspark.tuning.space import config_fields, resolve_space, space_from_document
from deepspark.workflows.train import FRAME_NAMES, describe_frame

logger = logging.getLogger("deepspark.tuning")
RUN_NAME = "tune"
STORAGE_TAG, STUDY_TAG, SETTINGS_ATTR = report.STORAGE_TAG, report.STUDY_TAG, report.SETTINGS_ATTR


@dataclasses.dataclass(frozen=True)
class TuneResult:
    """What a search produced.

    Attributes:
        run_id: The parent MLflow run.
        best_run_id: The child run of the retrained best configuration.
        model_uri: Its logged model.
        metric: The objective (on the validation split) and ``direction``.
        best_value: The best trial's objective.
        best_trial: Its number.
        best_params: Its drawn values (``layers``, ``width``, ``lr``...).
        best_settings: The ``TrainConfig`` settings they make (``hidden`` for layers/width).
        metrics: The retrained model's ``val_*`` and ``test_*`` metrics (test scored once).
        trials: Trials finished by state: ``complete``, ``pruned``, ``failed``.
        storage: The Optuna storage holding the study (``study_name``).
        timed_out: The search stopped at ``timeout`` before running every trial.
    """

    run_id: str
    best_run_id: str
    model_uri: str
    metric: str
    direction: str
    best_value: float
    best_trial: int
    best_params: dict[str, Any]
    best_settings: dict[str, Any]
    metrics: dict[str, float]
    trials: dict[str, int]
    storage: str
    study_name: str
    experiment: str
    tracking_uri: str
    seconds: float
    resumed: bool = False
    timed_out: bool = False

    def to_dict(self) -> dict[str, Any]:
        document = dataclasses.asdict(self)
        document["best_settings"] = report.json_ready(self.best_settings)
        return document


def tune(
    data: Any = None,
    target: str | None = None,
    *,
    trials: int | None = None,
    timeout: float | None = None,
    metric: str | None = None,
    space: Mapping[str, Any] | None = None,
    spark: bool = False,
    master: str | None = None,
    parallelism: int | None = None,
    resume: str | None = None,
    storage: str | None = None,
    sampler: Any = None,
    pruner: Any = None,
    model: Any = None,
    config_file: str | Path | None = None,
    **settings: Any,
) -> TuneResult:
    """Search hyperparameters with Optuna (TPE, median pruning), retrain the best, score test once.

    Args:
        data: The table, as for ``train``: a file, folder or glob of CSV / Parquet /
            JSON-lines files, a URI (``s3://bucket/prefix/``), a Delta table, a built-in
            dataset name, or a pandas or Spark DataFrame (read into memory once: every trial
            shares it). To resume a search on a DataFrame, give the same DataFrame again.
        target: The column to predict.
        trials: Trials the search runs in total (default 20; on ``resume``, the first search's
            number; trials finished before a resume count).
        timeout: Seconds after which no new trial starts (running ones finish).
        metric: The objective on the validation split: ``rmse`` (regression default), ``mae``,
            ``mse``, ``log_loss`` (classification default), ``accuracy``, ``auc`` (binary).
        space: Entries added to or replacing the default space (``deepspark.tuning.space``):
            key -> ``FloatRange`` / ``IntRange`` / ``Choice``, a spec string (``"1e-4:1e-1:log"``,
            ``"relu,gelu"``), or ``None`` to leave a default entry out.
        spark: Run trials as Spark tasks, several at a time (needs ``deepspark[spark]``).
        master: Spark master URL (default ``DEEPSPARK_SPARK_MASTER`` or ``local[*]``).
        parallelism: Trials at a time on Spark (default: Spark's default parallelism).
        resume: The parent run id of an interrupted search to continue.
        storage: Optuna storage URL for the study (default: a sqlite file under
            ``./.deepspark/tune``, recorded on the parent run).
        sampler: An Optuna sampler (default: TPE seeded with ``seed``).
        pruner: An Optuna pruner (default: ``deepspark.tuning.study.default_pruner``).
        model: The network, as ``train``'s ``model`` (a registered name or a builder function).
        config_file: TOML file with fixed settings, as for ``train``.
        **settings: Fixed ``TrainConfig`` settings (``epochs=50``, ``batch_size=128``...); a
            searched setting given here (or in ``config_file``) is fixed and leaves the space.
            ``tensorboard=DIR`` writes each trial's curves to ``DIR/trial-NNN`` and the
            retrained best's to ``DIR/best`` (TensorBoard event files). ``bagging=K`` bags
            every trial and the retrained best; unlike ``train``, a search does not bag small
            tables by default (its trials and the best train one network unless ``bagging``
            is set).

    Returns:
        A ``TuneResult``: the parent ``run_id``, ``model_uri`` of the retrained best,
        ``best_params``, and its ``metrics`` (``test_*`` scored once).

    Raises:
        UserInputError: Bad settings, an unknown or unsearchable space key, a space that yields
            no valid trial, ``trials`` < 1, or a resume that cannot continue.
        MissingDependencyError: Optuna (``deepspark[tune]``) or, with ``spark``, PySpark is
            missing.

    Example:
        >>> result = deepspark.tune("houses.csv", "price", trials=30, epochs=100)
        >>> result.best_params, result.metrics["test_rmse"]
    """
    _check_run_settings(trials=trials, timeout=timeout, parallelism=parallelism)
    studies.import_optuna()
    if spark:
        from deepspark._optional import require

        require("pyspark", feature="tune --spark")
    options = {
        "timeout": timeout,
        "spark": spark,
        "master": master,
        "parallelism": parallelism,
        "sampler": sampler,
        "pruner": pruner,
    }
    frame = None
    if data is not None and not isinstance(data, str | Path):  # a pandas / Spark DataFrame
        frame, data = data, describe_frame(data)
    if resume:
        tracking_uri = settings.get("tracking_uri")
        return _resume(resume, trials=trials, tracking_uri=tracking_uri, frame=frame, **options)
    config = make_config({"data": data, "target": target, **settings}, config_file=config_file)
    check_model(model)
    _check_single_process(config)
    if config.tensorboard:
        from deepspark.training.tensorboard import import_tensorboardx

        import_tensorboardx()
    use_backend(config.keras_backend)
    fixed = {name for name, value in settings.items() if value is not None}
    _check_fixed_and_searched(fixed, space)
    # A key of the config file leaves the default space too; an explicit space entry wins.
    resolved = resolve_space(space, config, fixed | _file_keys(config_file))
    _check_searchable(resolved, config)
    studies.check_metric(metric, config.task)  # before reading the data, where it can be
    prepared = prepare_data(config, model=model, data=frame, stream=False)
    prepared = dataclasses.replace(prepared, builder=model)
    _check_tabular(prepared)
    # Trials are not bagged by default (prepare_data resolves bagging=None to 1 here).
    if prepared.config.bagging > 1:  # before the search: every trial would fail the same way
        from deepspark.training.bagging import check_bagging
        from deepspark.tuning.trial import validation_only

        check_bagging(validation_only(prepared), prepared.config.bagging)
    objective = studies.resolve_objective(metric, prepared.schema.task)
    plan = {
        "trials": trials or 20,
        "space": resolved,
        "objective": objective,
        "storage": storage,
        "model": model,
        "frame": frame,
    }
    return _tracked_search(prepared, plan, resume_run=None, **options)


def _check_run_settings(*, trials, timeout, parallelism) -> None:
    if trials is not None and (not isinstance(trials, int) or trials < 1):
        raise UserInputError(
            f"Invalid --trials: must be a positive integer. Received: trials={trials!r}"
        )
    if timeout is not None and not (isinstance(timeout, int | float) and timeout > 0):
        raise UserInputError(
            f"Invalid --timeout: must be a positive number of seconds. Received: "
            f"timeout={timeout!r}"
        )
    if parallelism is not None and (not isinstance(parallelism, int) or parallelism < 1):
        raise UserInputError(
            f"Invalid --parallelism: must be a positive integer. Received: "
            f"parallelism={parallelism!r}"
        )


def _file_keys(config_file: str | Path | None) -> set[str]:
    """The settings a TOML config file fixes (``make_config`` has read it without error)."""
    if config_file is None:
        return set()
    import tomllib

    with Path(config_file).open("rb") as handle:
        document = tomllib.load(handle)
    section = document.get("train", document)
    return {str(key).replace("-", "_") for key in section}


def _check_single_process(config: TrainConfig) -> None:
    if config.workers > 1 or config.launcher is not None:
        raise UserInputError(
            "tune trains each trial in one process; leave out --workers / --launcher (use "
            f"--spark to run trials in parallel). Received: workers={config.workers}"
        )


def _check_fixed_and_searched(fixed: set[str], space: Mapping[str, Any] | None) -> None:
    both = sorted(fixed & {name for name, value in (space or {}).items() if value is not None})
    if both:
        raise UserInputError(
            f"'{both[0]}' is both a fixed setting and a search space entry; give it one way. "
            f"Received: {both[0]}"
        )


def _check_searchable(space: Mapping[str, Any], config: TrainConfig) -> None:
    from deepspark.tuning.search import check_space_yields

    if not space:
        raise UserInputError(
            "The search space is empty (every entry fixed or removed); add entries with "
            "--space KEY=SPEC. Received: space={}"
        )
    check_space_yields(space, config)


def _check_tabular(prepared: PreparedData) -> None:
    if not kind_of(prepared.schema).supports_tuning:
        raise UserInputError(
            f"tune searches the settings of networks for tables; {prepared.schema.kind} data "
            f"is not supported yet. Received: data={prepared.config.data!r}"
        )


def _tracked_search(
    prepared: PreparedData, plan: dict[str, Any], *, resume_run: Any, **options: Any
) -> TuneResult:
    import mlflow

    from deepspark.tracking.run import deferred_interrupts, tracked_run

    config, started = prepared.config, time.perf_counter()
    with tracked_run(
        experiment=config.experiment,
        run_name=config.run_name or RUN_NAME,
        run_id=resume_run.info.run_id if resume_run else None,
        tracking_uri=config.tracking_uri,
    ) as active:
        with deferred_interrupts(), studies.quiet_optuna():
            search, pruner = _open_search(active, prepared, plan, resume_run, options)
        _run_trials(search, pruner, options)
        with deferred_interrupts():
            result = _finish(search, plan, started)
    return dataclasses.replace(
        result, tracking_uri=mlflow.get_tracking_uri(), resumed=resume_run is not None
    )


def _open_search(active, prepared, plan, resume_run, options):
    from deepspark.tuning.search import Search, kill_child_runs
    from deepspark.tuning.trial import validation_only

    config, objective = prepared.config, plan["objective"]
    run_id = active.info.run_id
    sampler = options["sampler"] or studies.default_sampler(config.seed, plan["trials"])
    pruner = options["pruner"] or studies.default_pruner(config.epochs)
    if resume_run is None:
        storage, name = plan["storage"] or studies.default_storage(run_id), f"deepspark-{run_id}"
        study = studies.create_study(
            storage=storage,
            name=name,
            direction=objective.direction,
            sampler=sampler,
            pruner=pruner,
        )
        study.set_user_attr(SETTINGS_ATTR, report.stored_settings(prepared, plan))
        plan["storage"] = storage
        report.log_search_start(prepared, plan, storage, name, options)
    else:
        tags = resume_run.data.tags
        study = studies.load_study(
            storage=tags[STORAGE_TAG], name=tags[STUDY_TAG], sampler=sampler, pruner=pruner
        )
        stored = dict(study.user_attrs[SETTINGS_ATTR], trials=plan["trials"])
        study.set_user_attr(SETTINGS_ATTR, stored)
        kill_child_runs(studies.abandon_running(study))
    search = Search(
        study=study,
        space=plan["space"],
        objective=objective,
        data=validation_only(prepared),
        parent_run_id=run_id,
        experiment_id=active.info.experiment_id,
        trials=plan["trials"],
        timeout=options["timeout"],
    )
    return search, pruner


def _run_trials(search, pruner, options) -> None:
    from deepspark.tuning.search import run_local

    left = search.remaining()
    logger.info(
        "search: %d trials to run (%d in total), %s %s on the validation split",
        max(left, 0),
        search.trials,
        search.objective.direction,
        search.objective.metric,
    )
    with studies.quiet_optuna():
        if options["spark"]:
            from deepspark.tuning.spark_trials import run_spark

            run_spark(
                search,
                pruner=pruner,
                master=options["master"],
                parallelism=options["parallelism"],
            )
        else:
            run_local(search)
    if search.timed_out:
        logger.info("timeout reached: no new trials started")


def _finish(search, plan: dict[str, Any], started: float) -> TuneResult:
    from deepspark.tuning.report import log_search_report
    from deepspark.tuning.search import no_trial_error

    best = studies.best_trial(search.study)
    if best is None:
        raise no_trial_error(search.study)
    best_settings = log_search_report(search, best)
    if search.base.tensorboard:
        _write_trial_events(search, search.base.tensorboard)
    trained = _retrain_best(search, best_settings, model=plan["model"], frame=plan.get("frame"))
    counts = studies.count_states(search.study)
    return TuneResult(
        run_id=search.parent_run_id,
        best_run_id=trained.run_id,
        model_uri=trained.model_uri,
        metric=search.objective.metric,
        direction=search.objective.direction,
        best_value=float(best.value),
        best_trial=best.number,
        best_params=dict(best.params),
        best_settings=best_settings,
        metrics=dict(trained.metrics),
        trials=counts,
        storage=plan["storage"],
        study_name=search.study.study_name,
        experiment=search.base.experiment,
        tracking_uri="",
        seconds=round(time.perf_counter() - started, 3),
        timed_out=search.timed_out,
    )


def _write_trial_events(search, log_dir: str) -> None:
    """Every trial's curves as TensorBoard event files in ``log_dir/trial-NNN`` (also logged to
    its child run under ``tensorboard/``), written here from the metrics the child run holds:
    a trial may have trained in a Spark task, whose host need not see ``log_dir``."""
    from deepspark.training.tensorboard import (
        log_event_files,
        mlflow_history,
        run_files,
        write_event_files,
    )

    for trial in search.study.trials:
        run_id = trial.user_attrs.get(studies.RUN_ATTR)
        folder = Path(log_dir, f"trial-{trial.number:03d}")
        if not run_id or run_files(folder, run_id):  # a resumed search wrote it before
            continue
        history = mlflow_history(run_id)
        if history:
            write_event_files(folder, run_id, history)
            log_event_files(folder, run_id)


def _retrain_best(search, best_settings: dict[str, Any], *, model: Any, frame: Any = None):
    """Train the best configuration again as the child run ``best`` (``train``: the same split
    and seed as the trials; the test split scored once), and put its metrics on the parent.
    ``frame`` is the DataFrame the search was given (``config.data`` only describes it)."""
    import mlflow

    from deepspark.tuning.search import ROLE_TAG
    from deepspark.tuning.space import trial_config
    from deepspark.workflows.train import MODEL_URI_TAG, train

    config = dataclasses.replace(trial_config(search.base, best_settings), run_name="best")
    if config.tensorboard:
        config = dataclasses.replace(config, tensorboard=str(Path(config.tensorboard, "best")))
    logger.info("retraining the best configuration; the test split is scored once")
    trained = train(frame, config=config, model=model)
    client = mlflow.MlflowClient()
    client.set_tag(trained.run_id, ROLE_TAG, "best")
    mlflow.log_metrics(trained.metrics)
    mlflow.set_tags(
        {MODEL_URI_TAG: trained.model_uri, "deepspark.tune.best_run_id": trained.run_id}
    )
    return trained


def _resume(
    run_id: str, *, trials: int | None, tracking_uri: str | None, frame: Any, **options
) -> TuneResult:
    from deepspark.tracking.run import get_run

    run = get_run(run_id, tracking_uri)
    if STORAGE_TAG not in run.data.tags:
        raise UserInputError(
            f"Run {run_id} is not a deepspark search (no {STORAGE_TAG} tag); give the parent "
            f"run id that `deepspark tune` printed. Received: resume={run_id!r}"
        )
    if run.info.status == "FINISHED":
        raise UserInputError(
            f"Search {run_id} already FINISHED; there is nothing to resume; start a new search. "
            f"Received: resume={run_id!r}"
        )
    with studies.quiet_optuna():
        study = studies.load_study(
            storage=run.data.tags[STORAGE_TAG],
            name=run.data.tags[STUDY_TAG],
            sampler=None,
            pruner=None,
        )
    stored = study.user_attrs[SETTINGS_ATTR]
    document = dict(stored["config"])
    if tracking_uri:
        document["tracking_uri"] = tracking_uri
    config = TrainConfig.from_dict(_known_fields(document))
    use_backend(config.keras_backend)
    if frame is None and config.data in FRAME_NAMES:
        raise UserInputError(
            f"Search {run_id} was given a {config.data.strip('<>')}, which a resume cannot read "
            f"again; pass the same DataFrame as data with resume. Received: resume={run_id!r}"
        )
    if frame is not None:
        config = dataclasses.replace(config, data=describe_frame(frame))
    prepared = prepare_data(config, data=frame, stream=False)
    prepared = dataclasses.replace(prepared, builder=stored.get("model"))
    if prepared.fingerprint != stored["fingerprint"]:
        raise UserInputError(
            f"The data changed since search {run_id} started ({config.data}); resume needs the "
            f"same data. Received: resume={run_id!r}"
        )
    space = space_from_document(stored["space"])
    plan = {
        "trials": trials or stored["trials"],
        "space": space,
        "objective": studies.resolve_objective(stored["metric"], prepared.schema.task),
        "storage": run.data.tags[STORAGE_TAG],
        "model": stored.get("model"),
        "frame": frame,
    }
    return _tracked_search(prepared, plan, resume_run=run, **options)


def _known_fields(document: dict[str, Any]) -> dict[str, Any]:
    fields = config_fields()
    return {key: value for key, value in document.items() if key in fields}
