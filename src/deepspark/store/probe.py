"""Before a cluster run starts: can every executor see the store the driver writes to?

A driver-local folder works on ``local[*]`` (every task runs on the driver's host) and fails on a
real cluster only when a worker first opens a shard or a checkpoint, after minutes of work. The
probe finds that out in about a second: the driver writes a token into the store and one task per
executor slot looks for it.
"""

from __future__ import annotations

import logging
import uuid

from deepspark.errors import UserInputError
from deepspark.store.store import Store

logger = logging.getLogger("deepspark.store")


def shares_driver_host(master: str) -> bool:
    """Whether every executor of ``master`` runs on the driver's host and filesystem."""
    return master.startswith(("local[", "local-cluster[")) or master == "local"


def check_store_visible(store: Store, spark) -> None:
    """Raise ``UserInputError`` unless the driver can write ``store`` and the executors of the
    ``spark`` session can read what it wrote.

    Args:
        store: The run's store.
        spark: The session whose executors will run the job.

    Raises:
        UserInputError: The store is not writable, or not visible from some executor; the message
            names ``--store``.
    """
    store.check_writable()
    master = spark.sparkContext.master
    if shares_driver_host(master):
        return
    folder = f"_probe-{uuid.uuid4().hex}"
    token = f"{folder}/visible"
    store.write_bytes(b"deepspark", token)
    try:
        slots = max(1, int(spark.sparkContext.defaultParallelism))
        seen = _look_from_executors(spark, store, token, slots)
    finally:
        store.delete(folder)
    blind = sorted({host for host, visible, _ in seen if not visible})
    if blind:
        reason = next(detail for _, visible, detail in seen if not visible)
        local = " a folder on the driver's disk," if store.is_local else ""
        raise UserInputError(
            f"The store is not visible from the Spark executors on {', '.join(blind)}{local} "
            f"({reason}); pass --store (or set DEEPSPARK_STORE) with a location every host can "
            f"reach: s3://bucket/prefix, gs://..., hdfs://..., abfs://... or a shared mount. "
            f"Received: store={store.uri!r}"
        )
    logger.info("store %s is visible from %d executor task(s)", store.uri, len(seen))


def _look_from_executors(spark, store: Store, token: str, slots: int) -> list:
    def look(_rows):
        import os
        import socket

        try:
            visible = store.exists(token)
            detail = "" if visible else f"{store.url(token)} not found there"
        except OSError as error:
            visible, detail = False, str(error).splitlines()[0] if str(error) else "error"
        yield f"{socket.gethostname()} (pid {os.getpid()})", visible, detail

    rdd = spark.sparkContext.parallelize(range(slots), slots)
    return rdd.mapPartitions(look).collect()
