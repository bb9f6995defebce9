"""PySpark's Python worker daemon, with Keras and deepspark (scoring, and the spark launcher's
ranks) imported once.

Spark starts one daemon per executor (``python -m <spark.python.daemon.module>``) and forks a
worker from it for each concurrent task; every worker would otherwise import Keras, its backend
and deepspark on its own (several seconds of CPU each). Imported here, before any fork, the
workers inherit them. Nothing runs on a backend here (no device, no thread pool yet), so a fork
is safe. ``get_session`` selects this module for local masters (``DEEPSPARK_SPARK_PRELOAD=1``
also on a cluster whose executors have deepspark installed; ``0`` never).
"""

from __future__ import annotations


def preload() -> None:
    """Import what scoring workers need; a failure only means the workers import it later."""
    import contextlib

    from deepspark.distributed import _zygote

    # Keras (the backend KERAS_BACKEND names, set for executors) and what the spark launcher's
    # ranks run: a barrier task forks its rank from the worker (distributed._spark).
    _zygote.preload(collectives=False)
    with contextlib.suppress(Exception):
        import deepspark.spark.arrow_scoring  # noqa: F401
        import deepspark.tracking.model  # noqa: F401


if __name__ == "__main__":
    preload()
    from pyspark import daemon

    daemon.manager()
