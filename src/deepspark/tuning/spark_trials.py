"""Trials as Spark tasks, several at a time: the role Hyperopt's ``SparkTrials`` played.

The study stays on the driver (ask / tell). Each of ``parallelism`` driver threads asks the
study for a trial, opens its MLflow child run, and runs a one-task Spark job that trains it;
when the task returns, the thread tells the study and completes the child run, then asks for
the next trial. The training and validation arrays are broadcast once; the test split is never
sent. Executors need neither the Optuna storage nor the MLflow store: a task prunes against the
trials finished when it was sent (``ReplicaReporter``) and returns its per-epoch metrics, which
the driver logs.

Ctrl-C on the driver cancels the running tasks (their job group), marks their trials
interrupted (child runs KILLED) and propagates; finished trials keep their records.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import threading
import time
from typing import Any

from deepspark.data.splits import DataSplit
from deepspark.training.prepare import PreparedData
from deepspark.tuning import study as studies
from deepspark.tuning.search import (
    Search,
    StartedTrial,
    failed_outcome,
    finish_trial,
    interrupt_trial,
    start_trial,
)
from deepspark.tuning.trial import FAIL, TrialOutcome, outcome_from_document

logger = logging.getLogger("deepspark.tuning")


def for_tasks(prepared: PreparedData) -> PreparedData:
    """What a task needs: the encoded training and validation arrays, not the raw frames."""
    split = prepared.split
    return dataclasses.replace(
        prepared, split=DataSplit(split.train.iloc[:0], split.val.iloc[:0], split.test.iloc[:0])
    )


def train_in_task(shipped, payload: dict[str, Any]) -> dict[str, Any]:
    """A Spark task: train one trial on the broadcast data; return its outcome as plain data."""
    from deepspark.tuning.trial import outcome_document, train_trial

    reporter = studies.ReplicaReporter(
        payload["snapshot"], direction=payload["objective"].direction, pruner=payload["pruner"]
    )
    try:
        outcome = train_trial(
            shipped.value, payload["config"], objective=payload["objective"], reporter=reporter
        )
    except Exception as error:  # noqa: BLE001  reported to the driver as a failed trial
        outcome = failed_outcome(error)
    return outcome_document(outcome)


@dataclasses.dataclass
class _Pool:
    """What the driver threads share."""

    search: Search
    context: Any  # SparkContext
    shipped: Any  # Broadcast of the task data
    pruner: Any
    group: str
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    stop: threading.Event = dataclasses.field(default_factory=threading.Event)
    in_flight: int = 0
    errors: list = dataclasses.field(default_factory=list)


def run_spark(search: Search, *, pruner, master: str | None = None, parallelism: int | None = None):
    """Run the search's remaining trials as Spark tasks, ``parallelism`` at a time (default:
    the session's default parallelism, at most the trials left).

    Raises:
        MissingDependencyError: PySpark is not installed.
    """
    from deepspark.spark.session import get_session

    context = get_session(master).sparkContext
    slots = max(1, min(parallelism or context.defaultParallelism, search.remaining()))
    pool = _Pool(
        search=search,
        context=context,
        shipped=context.broadcast(for_tasks(search.data)),
        pruner=pruner,
        group=f"deepspark-tune-{search.parent_run_id}",
    )
    logger.info("running trials on Spark (%s), %d at a time", context.master, slots)
    # Each thread sets its event when it ends: waiting on events, unlike Thread.join, is safe to
    # interrupt with Ctrl-C and to wait on again afterwards.
    ended = [threading.Event() for _ in range(slots)]
    for event in ended:
        threading.Thread(target=_drive, args=(pool, event), daemon=True).start()
    try:
        _wait(ended)
    except KeyboardInterrupt:
        pool.stop.set()
        context.cancelJobGroup(pool.group)
        _wait(ended)
        for error in pool.errors:
            logger.warning("while stopping the search: %s: %s", type(error).__name__, error)
        raise
    finally:
        pool.shipped.unpersist()
    if pool.errors:
        raise pool.errors[0]


def _wait(ended: list[threading.Event]) -> None:
    for event in ended:
        while not event.wait(timeout=0.2):
            pass


def _drive(pool: _Pool, ended: threading.Event) -> None:
    """One driver thread: trials one after another until none are left or the search stops."""
    try:
        pool.context.setJobGroup(pool.group, "deepspark tune trials", interruptOnCancel=True)
        while True:
            started, payload = _next_trial(pool)
            if started is None:
                return
            outcome = _train(pool, started, payload)
            with pool.lock:
                pool.in_flight -= 1
                if outcome is None:
                    interrupt_trial(pool.search, started)
                else:
                    finish_trial(pool.search, started, outcome, remote=True)
    except Exception as error:  # noqa: BLE001  the main thread raises it
        logger.debug("search thread failed", exc_info=error)
        pool.errors.append(error)
        pool.stop.set()
    finally:
        ended.set()


def _next_trial(pool: _Pool) -> tuple[StartedTrial | None, dict[str, Any] | None]:
    search = pool.search
    with pool.lock:
        while True:
            left = search.remaining() - pool.in_flight
            if pool.stop.is_set() or left <= 0 or search.out_of_time():
                return None, None
            started = start_trial(search)
            if started.config is not None:
                break
            finish_trial(search, started, TrialOutcome(FAIL, reason=started.error))
        pool.in_flight += 1
        payload = {
            "config": started.config,
            "objective": search.objective,
            "pruner": pool.pruner,
            "snapshot": studies.pruning_snapshot(search.study),
        }
    return started, payload


def _train(pool: _Pool, started: StartedTrial, payload: dict[str, Any]) -> TrialOutcome | None:
    """The trial's one-task job; ``None`` when the search was stopped while it ran."""
    task = functools.partial(train_in_task, pool.shipped)
    began = time.perf_counter()
    try:
        document = pool.context.parallelize([payload], 1).map(task).collect()[0]
    except Exception as error:  # noqa: BLE001  a lost executor, a cancelled job
        if pool.stop.is_set():
            return None
        outcome = failed_outcome(RuntimeError(f"Spark task failed: {error}"))
        outcome.seconds = round(time.perf_counter() - began, 3)
        return outcome
    return outcome_from_document(document)
