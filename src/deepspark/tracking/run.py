"""The one MLflow run context deepspark uses: the status is always right when it exits."""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Iterator

from deepspark.errors import UserInputError

logger = logging.getLogger(__name__)


def use_tracking_uri(tracking_uri: str | None) -> None:
    """Point MLflow at ``tracking_uri``; ``None`` keeps MLflow's own default and environment."""
    import mlflow

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)


@contextlib.contextmanager
def tracked_run(
    *,
    experiment: str,
    run_name: str | None = None,
    run_id: str | None = None,
    tracking_uri: str | None = None,
) -> Iterator:
    """Start (or reopen, with ``run_id``) an MLflow run and end it with the right status.

    FINISHED on success, KILLED on Ctrl-C or SIGTERM, FAILED on any other exception, which is
    re-raised. A tracking server that does not answer fails the start at once (one line), and
    at the end leaves the run RUNNING, without waiting on MLflow's retries: the exception says
    how to finish it (``tracking.resilient.TrackingUnavailableError``).

    Yields:
        The active ``mlflow.ActiveRun``.
    """
    import mlflow

    from deepspark.tracking.resilient import check_tracking_server

    use_tracking_uri(tracking_uri)
    check_tracking_server()
    nested = mlflow.active_run() is not None
    if run_id is None:
        experiment_id = _experiment_id(experiment)
        active = mlflow.start_run(experiment_id=experiment_id, run_name=run_name, nested=nested)
    else:
        active = mlflow.start_run(run_id=run_id, nested=nested)
    status = "FAILED"
    _interrupts["received"] = None
    try:
        with _signals_as_interrupt():
            yield active
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        _interrupts["received"] = None
        raise
    finally:
        with deferred_interrupts():
            _end_run(status)
        logger.debug("MLflow run %s ended %s", active.info.run_id, status)


def _end_run(status: str) -> None:
    """``mlflow.end_run``; when the server does not answer, only the local active run ends
    (the server keeps the run RUNNING until ``deepspark sync`` or a resume ends it)."""
    import mlflow

    from deepspark.tracking.resilient import is_unavailable, quick_requests, tracking_reachable

    if tracking_reachable():
        mlflow.end_run(status=status)
        return
    try:
        with quick_requests(retries=0):
            mlflow.end_run(status=status)  # pops the local run first, then asks the server
    except Exception as error:  # noqa: BLE001  the caller's own exception says what to do
        if not is_unavailable(error):
            raise
        logger.debug("could not mark the run %s: %s", status, error)


def _experiment_id(name: str) -> str:
    import mlflow
    from mlflow.exceptions import MlflowException

    experiment = mlflow.get_experiment_by_name(name)
    if experiment is None:
        try:
            return mlflow.create_experiment(name)
        except MlflowException:  # another process created it first (runs started together)
            experiment = mlflow.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage == "deleted":
        raise UserInputError(
            f"MLflow experiment '{name}' is deleted; restore it or choose another "
            f"name with --experiment. Received: experiment={name!r}"
        )
    return experiment.experiment_id


# Signals that arrive while an MLflow write or a checkpoint is in progress wait until it is done:
# a KeyboardInterrupt inside a sqlite transaction would leave the store locked, and the run
# could then not be marked KILLED.
# "received" remembers a signal until its KeyboardInterrupt ends the run: Python ignores an
# exception raised inside a finalizer (__del__, weakref callbacks), and a signal handler can run
# there, so ``raise_if_interrupted`` raises it again from a safe point (each training batch).
_interrupts = {"depth": 0, "pending": None, "received": None}


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold Ctrl-C / SIGTERM until the block ends, then raise ``KeyboardInterrupt``."""
    _interrupts["depth"] += 1
    try:
        yield
    finally:
        _interrupts["depth"] -= 1
    if _interrupts["depth"] == 0 and _interrupts["pending"] is not None:
        signum, _interrupts["pending"] = _interrupts["pending"], None
        raise KeyboardInterrupt(f"signal {signum}")


def raise_if_interrupted() -> None:
    """Raise ``KeyboardInterrupt`` for a Ctrl-C / SIGTERM whose first one was swallowed."""
    if _interrupts["received"] is not None and not _interrupts["depth"]:
        signum, _interrupts["received"] = _interrupts["received"], None
        raise KeyboardInterrupt(f"signal {signum}")


def _interrupt(signum, frame):
    _interrupts["received"] = signum
    if _interrupts["depth"]:
        _interrupts["pending"] = signum
        return
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def _signals_as_interrupt():
    """Ctrl-C and SIGTERM end the run KILLED, never in the middle of a write (main thread)."""
    try:
        previous = {
            number: signal.signal(number, _interrupt) for number in (signal.SIGINT, signal.SIGTERM)
        }
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def get_run(run_id: str, tracking_uri: str | None = None):
    """Fetch a run, or raise ``UserInputError`` when it does not exist."""
    import mlflow
    from mlflow.exceptions import MlflowException

    use_tracking_uri(tracking_uri)
    try:
        return mlflow.MlflowClient().get_run(run_id)
    except MlflowException as error:
        raise UserInputError(
            f"MLflow run not found in {mlflow.get_tracking_uri()}; check the run id and "
            f"--tracking-uri. Received: run_id={run_id!r}"
        ) from error
