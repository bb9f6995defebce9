"""The ``spark`` launcher: ranks run as Spark barrier tasks on whatever master the session uses.

``torch`` backend: ``pyspark.ml.torch.distributor.TorchDistributor`` (each task starts a torchrun
process, which sets the torch.distributed environment). ``horovod`` backend:
``horovod.spark.run`` (Horovod's own task service and Gloo rendezvous).

Spark reports a failed barrier stage as text; a failure carrying ``NO_RETRY_MARKER`` is a worker
that raised (``WorkerFailedError``), anything else (a killed Python worker, a lost executor) is a
lost worker (``WorkerLostError``), which ``run`` may retry.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import signal
import threading

from deepspark._optional import require
from deepspark.distributed.launch import (
    NO_RETRY_MARKER,
    WorkerFailedError,
    WorkerLostError,
    run_rank,
)

logger = logging.getLogger("deepspark.distributed")
_TAIL_CHARACTERS = 2000


def launch(train_fn, args, *, workers: int, backend: str, attempt: int):
    """Run ``train_fn(*args)`` on ``workers`` barrier tasks; return rank 0's value."""
    require("pyspark", feature="The spark launcher")
    from deepspark.spark.session import get_session

    session = get_session()
    logger.info(
        "launching %d ranks on Spark (%s, %s backend)",
        workers,
        session.sparkContext.master,
        backend,
    )
    if backend == "horovod":
        horovod_spark = require("horovod.spark", feature="The spark launcher with Horovod")
        job = functools.partial(
            horovod_spark.run,
            run_rank,
            args=(train_fn, tuple(args), "horovod"),
            num_proc=workers,
            use_gloo=True,
            verbose=0,
        )
    else:
        job = functools.partial(
            _torch_distributor(session, workers).run, run_rank, train_fn, tuple(args), "torch"
        )
    # Set-up errors (above) propagate as they are; failures of the job itself are classified.
    try:
        with _signal_handlers_kept():
            results = job()
    except Exception as error:  # noqa: BLE001  Spark gives failures as text; classify them
        text = str(error)
        if NO_RETRY_MARKER in text:
            raise WorkerFailedError(_tail(text[text.index(NO_RETRY_MARKER) :])) from error
        raise WorkerLostError(f"a Spark task failed: {_tail(text)}") from error
    return results[0] if backend == "horovod" else results


@contextlib.contextmanager
def _signal_handlers_kept():
    """horovod.spark.run installs SIGINT/SIGTERM handlers in the driver and leaves them there,
    which would make a later Ctrl-C do nothing; put the caller's handlers back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    kept = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in kept.items():
            signal.signal(number, handler)


def _torch_distributor(session, workers: int):
    import torch
    from pyspark.ml.torch.distributor import TorchDistributor

    # GPUs only when Spark hands them to tasks; otherwise TorchDistributor refuses to start.
    gpu_per_task = session.conf.get("spark.task.resource.gpu.amount", "0")
    use_gpu = torch.cuda.is_available() and float(gpu_per_task or 0) > 0
    return TorchDistributor(num_processes=workers, local_mode=False, use_gpu=use_gpu)


def _tail(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _TAIL_CHARACTERS else "..." + text[-_TAIL_CHARACTERS:]
