"""The search loop on the process that owns the study: ask for a trial, open its MLflow child run,
train it (here, or in a Spark task: ``spark_trials``), tell the study, close the child run.

Every trial is an MLflow child run of the search's parent run, with the trial's drawn values as
params, its per-epoch metrics, the objective (``val_<metric>``) and tags
``deepspark.tune.state`` (``COMPLETE``, ``PRUNED`` or ``FAIL``) and ``deepspark.tune.trial``
(its number). The child run ends FINISHED (complete or pruned), FAILED, or KILLED when the search
was interrupted while it trained; a finished trial's records are complete before the next trial
starts, so an interrupted search keeps every finished trial.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Mapping
from typing import Any

from deepspark.config import TrainConfig
from deepspark.errors import DeepsparkError, UserInputError
from deepspark.tracking.run import deferred_interrupts
from deepspark.training.prepare import PreparedData
from deepspark.tuning import study as studies
from deepspark.tuning.space import Distribution, suggest, trial_config
from deepspark.tuning.trial import COMPLETE, FAIL, PRUNED, TrialOutcome

logger = logging.getLogger("deepspark.tuning")
PARENT_TAG = "mlflow.parentRunId"
STATE_TAG = "deepspark.tune.state"
TRIAL_TAG = "deepspark.tune.trial"
ROLE_TAG = "deepspark.tune.role"
REASON_TAG = "deepspark.tune.reason"
INTERNAL_PREFIX = "internal error: "
_RUN_STATUS = {COMPLETE: "FINISHED", PRUNED: "FINISHED", FAIL: "FAILED"}


@dataclasses.dataclass
class Search:
    """One search in progress: the study, what it searches, and where its runs go."""

    study: Any
    space: dict[str, Distribution]
    objective: studies.Objective
    data: PreparedData  # validation_only: trials never see the test split
    parent_run_id: str
    experiment_id: str
    trials: int  # the total the search runs to (finished trials of earlier sessions count)
    timeout: float | None = None
    started: float = dataclasses.field(default_factory=time.monotonic)
    timed_out: bool = False
    started_trials: int = 0  # in this session

    @property
    def base(self) -> TrainConfig:
        return self.data.config

    def remaining(self) -> int:
        return self.trials - len(studies.finished_trials(self.study))

    def out_of_time(self) -> bool:
        """The timeout has passed (at least one trial runs, as with Optuna's timeout)."""
        elapsed = time.monotonic() - self.started
        if self.timeout is not None and self.started_trials and elapsed >= self.timeout:
            self.timed_out = True
        return self.timed_out


@dataclasses.dataclass
class StartedTrial:
    """A trial asked for, with its child run; ``config`` is ``None`` when its settings are not
    a valid configuration (``error`` says why)."""

    trial: Any
    settings: dict[str, Any]
    config: TrainConfig | None
    error: str | None
    run_id: str


def _client():
    import mlflow

    return mlflow.MlflowClient()


def start_trial(search: Search) -> StartedTrial:
    """Ask the study for a trial, draw its settings, open its child run."""
    from mlflow.entities import Param

    trial = search.study.ask()
    search.started_trials += 1
    settings = suggest(trial, search.space)
    try:
        config, error = trial_config(search.base, settings), None
    except UserInputError as invalid:
        config, error = None, " ".join(str(invalid).split())
    client = _client()
    run = client.create_run(
        search.experiment_id,
        run_name=f"trial-{trial.number:03d}",
        tags={PARENT_TAG: search.parent_run_id, TRIAL_TAG: str(trial.number), ROLE_TAG: "trial"},
    )
    run_id = run.info.run_id
    trial.set_user_attr(studies.RUN_ATTR, run_id)
    params = {**trial.params}
    if "hidden" in settings:
        params["hidden"] = ",".join(str(units) for units in settings["hidden"])
    client.log_batch(run_id, params=[Param(key, str(value)) for key, value in params.items()])
    return StartedTrial(trial, settings, config, error, run_id)


def finish_trial(
    search: Search, started: StartedTrial, outcome: TrialOutcome, *, remote: bool = False
) -> None:
    """Tell the study how the trial ended and complete its child run.

    Args:
        remote: The trial trained in a Spark task: its per-epoch metrics and pruning reports are
            recorded here (a local trial logged and reported them as it trained).
    """
    optuna = studies.import_optuna()
    trial, client = started.trial, _client()
    if remote:
        studies.record_intermediate(trial, outcome.intermediate)
        _log_history(client, started.run_id, outcome.history)
    if outcome.reason:
        trial.set_user_attr(studies.REASON_ATTR, outcome.reason)
    states = optuna.trial.TrialState
    with studies.quiet_optuna():
        if outcome.state == COMPLETE:
            search.study.tell(trial, outcome.value)
        else:
            state = states.PRUNED if outcome.state == PRUNED else states.FAIL
            search.study.tell(trial, state=state)
    _close_child(client, started.run_id, outcome, search.objective)
    _log_parent_progress(search, trial.number, outcome)
    _log_line(search, started, outcome)


def interrupt_trial(search: Search, started: StartedTrial) -> None:
    """The search was interrupted while ``started`` trained: a failed, interrupted trial (run
    again on resume), its child run KILLED."""
    optuna = studies.import_optuna()
    started.trial.set_user_attr(studies.INTERRUPTED_ATTR, True)
    with studies.quiet_optuna():
        search.study.tell(started.trial, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
    client = _client()
    client.set_tag(started.run_id, STATE_TAG, "INTERRUPTED")
    client.set_terminated(started.run_id, status="KILLED")


def kill_child_runs(trials: list) -> None:
    """Mark the child runs of trials a killed process left RUNNING as KILLED."""
    client = _client()
    for trial in trials:
        run_id = trial.user_attrs.get(studies.RUN_ATTR)
        if run_id:
            client.set_tag(run_id, STATE_TAG, "INTERRUPTED")
            client.set_terminated(run_id, status="KILLED")


def _log_history(client, run_id: str, history: list[dict[str, float]]) -> None:
    from mlflow.entities import Metric

    stamp = int(time.time() * 1000)
    metrics = [
        Metric(key, float(value), stamp, int(entry["epoch"]))
        for entry in history
        for key, value in entry.items()
        if key != "epoch" and math.isfinite(float(value))
    ]
    for start in range(0, len(metrics), 1000):  # MLflow's batch limit
        client.log_batch(run_id, metrics=metrics[start : start + 1000])


def _close_child(client, run_id: str, outcome: TrialOutcome, objective) -> None:
    tags = {STATE_TAG: outcome.state}
    if outcome.reason:
        tags[REASON_TAG] = outcome.reason[:5000]
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
    client.log_metric(run_id, "epochs_completed", outcome.epochs)
    if outcome.value is not None:
        # At step = epochs, as ``train`` logs its final metrics after the per-epoch curve.
        client.log_metric(run_id, f"val_{objective.metric}", outcome.value, step=outcome.epochs)
    client.set_terminated(run_id, status=_RUN_STATUS[outcome.state])


def _log_parent_progress(search: Search, number: int, outcome: TrialOutcome) -> None:
    """The objective per trial and the best so far, at step = trial number, on the parent."""
    if outcome.value is None:
        return
    client, metric = _client(), search.objective.metric
    client.log_metric(search.parent_run_id, f"trial_{metric}", outcome.value, step=number)
    best = studies.best_trial(search.study)
    if best is not None:
        client.log_metric(search.parent_run_id, f"best_{metric}", best.value, step=number)


def _log_line(search: Search, started: StartedTrial, outcome: TrialOutcome) -> None:
    finished = len(studies.finished_trials(search.study))
    if outcome.value is not None:
        result = f"{search.objective.metric}={outcome.value:.5g}"
    else:
        result = outcome.reason or "no value"
    best = studies.best_trial(search.study)
    best_text = f" (best {best.value:.5g}, trial {best.number})" if best is not None else ""
    drawn = " ".join(f"{key}={_short(value)}" for key, value in started.trial.params.items())
    logger.info(
        "trial %d (%d/%d) %s %s%s: %s; %d epochs, %.1fs",
        started.trial.number,
        finished,
        search.trials,
        outcome.state,
        result,
        best_text,
        drawn,
        outcome.epochs,
        outcome.seconds,
    )


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def run_local(search: Search) -> None:
    """Run trials one after another in this process until ``search.trials`` have finished or
    the time is up. Ctrl-C finishes the interrupted trial's records, then propagates."""
    while search.remaining() > 0 and not search.out_of_time():
        _run_one(search)


def _run_one(search: Search) -> None:
    from deepspark.tuning.trial import train_trial

    # A Ctrl-C held back by ``deferred_interrupts`` is raised when its block ends: ``started``
    # is set (and cleared once the trial is told) inside the blocks, so that the handler below
    # knows whether a trial was left open.
    started = None
    try:
        with deferred_interrupts():
            started = start_trial(search)
        if started.config is None:
            outcome = TrialOutcome(FAIL, reason=started.error)
        else:
            try:
                outcome = train_trial(
                    search.data,
                    started.config,
                    objective=search.objective,
                    reporter=started.trial,
                    run_id=started.run_id,
                )
            except Exception as error:  # noqa: BLE001  one bad trial does not end the search
                outcome = failed_outcome(error)
        with deferred_interrupts():
            finish_trial(search, started, outcome)
            started = None
    except KeyboardInterrupt:
        if started is not None:
            with deferred_interrupts():
                interrupt_trial(search, started)
        raise


def failed_outcome(error: Exception) -> TrialOutcome:
    """A trial that raised: ``UserInputError`` (a setting the network refuses) is the search
    space's problem; anything else is recorded as an internal error (see ``no_trial_error``)."""
    text = " ".join(str(error).split())
    if isinstance(error, UserInputError):
        return TrialOutcome(FAIL, reason=text)
    logger.warning("trial failed: %s: %s", type(error).__name__, text, exc_info=error)
    return TrialOutcome(FAIL, reason=f"{INTERNAL_PREFIX}{type(error).__name__}: {text}")


def no_trial_error(study) -> Exception:
    """Why a search without any complete trial ends: ``UserInputError`` when every trial failed
    for its settings (invalid, diverged), an internal ``DeepsparkError`` otherwise."""
    trials = studies.finished_trials(study)
    reasons = [trial.user_attrs.get(studies.REASON_ATTR) or "no reason" for trial in trials]
    first = reasons[0] if reasons else "-"
    summary = f"{len(trials)} trials, none completed; first failure: {first}"
    if any(reason.startswith(INTERNAL_PREFIX) for reason in reasons):
        return DeepsparkError(f"The search failed: {summary}")
    return UserInputError(
        f"The search space yields no valid trial: {summary}. Narrow the space (e.g. a lower lr "
        f"range) or change the fixed settings. Received: trials={len(trials)}"
    )


def check_space_yields(
    space: Mapping[str, Distribution], base: TrainConfig, *, draws: int = 64
) -> None:
    """Raise ``UserInputError`` when ``draws`` random draws from ``space`` give no valid
    configuration (before any data is read or run is opened)."""
    optuna = studies.import_optuna()
    with studies.quiet_optuna():
        probe = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=base.seed))
    first_error = None
    for _ in range(draws):
        trial = probe.ask()
        try:
            trial_config(base, suggest(trial, space))
            return
        except UserInputError as error:
            first_error = first_error or " ".join(str(error).split())
        finally:
            probe.tell(trial, state=optuna.trial.TrialState.FAIL)
    raise UserInputError(
        f"The search space yields no valid trial ({draws} draws tried); narrow it to valid "
        f"values. First problem: {first_error}"
    )
