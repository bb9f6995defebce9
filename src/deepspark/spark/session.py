"""The one Spark session builder, and reading a Spark data source (a file path or a table name).

Local by default (``local[*]``, UI off, Arrow on); ``master=`` or ``DEEPSPARK_SPARK_MASTER`` points
at a real cluster; an already active session is reused as it is.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import warnings
from pathlib import Path

from deepspark._atomic import write_text_atomic
from deepspark._backend import backend_name, configure_backend
from deepspark._optional import require
from deepspark.errors import DataError

logger = logging.getLogger(__name__)

MASTER_ENV = "DEEPSPARK_SPARK_MASTER"
DEFAULT_MASTER = "local[*]"
DEFAULT_ARROW_BATCH_ROWS = 10_000
PRELOAD_ENV = "DEEPSPARK_SPARK_PRELOAD"

_BASE_CONFIG = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.execution.arrow.pyspark.fallback.enabled": "false",
    "spark.sql.execution.arrow.maxRecordsPerBatch": str(DEFAULT_ARROW_BATCH_ROWS),
    "spark.sql.session.timeZone": "UTC",
    "spark.driver.memory": "2g",
    # Python workers must use the same interpreter (and, below, Keras backend) as the driver.
    "spark.executorEnv.PYSPARK_PYTHON": sys.executable,
    "spark.pyspark.python": sys.executable,
    "spark.pyspark.driver.python": sys.executable,
}


def get_session(
    master: str | None = None,
    *,
    app_name: str = "deepspark",
    config: dict[str, str] | None = None,
):
    """Return the active SparkSession, or build one.

    Args:
        master: Spark master URL; default ``DEEPSPARK_SPARK_MASTER`` or ``local[*]``. Ignored
            (with a log line) when a session is already active: Spark allows one per process.
        app_name: Application name for a new session.
        config: Extra Spark settings for a new session.

    Returns:
        A ``pyspark.sql.SparkSession``.

    Raises:
        MissingDependencyError: PySpark is not installed.
    """
    require("pyspark", feature="Spark")
    from pyspark.sql import SparkSession

    # PySpark 4 warns on every pandas conversion under pandas 3; deepspark's Spark paths are
    # tested with pandas 3, so the warning is noise for users.
    warnings.filterwarnings("ignore", "PySpark does not yet fully support pandas", FutureWarning)
    # JAX warns on every fork; Spark's launcher forks only to exec the JVM at once.
    warnings.filterwarnings("ignore", r"os\.fork\(\) was called", RuntimeWarning)

    active = SparkSession.getActiveSession()
    if active is not None:
        if master and active.sparkContext.master != master:
            logger.info(
                "reusing the active Spark session on %s (asked for %s)",
                active.sparkContext.master,
                master,
            )
        return active
    configure_backend()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    resolved_master = master or os.environ.get(MASTER_ENV) or DEFAULT_MASTER
    builder = SparkSession.builder.master(resolved_master).appName(app_name)
    settings = {
        **_BASE_CONFIG,
        "spark.executorEnv.KERAS_BACKEND": backend_name(),
        **_preload_config(resolved_master),
        **(config or {}),
    }
    settings.setdefault("spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile={_log4j()}")
    for key, value in settings.items():
        builder = builder.config(key, value)
    logger.info("starting Spark on %s", resolved_master)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session


def _preload_config(master: str) -> dict[str, str]:
    """Python workers forked from a daemon that imported Keras and deepspark once
    (``deepspark.spark.daemon``): on local masters, where the driver's interpreter runs them, or
    wherever ``DEEPSPARK_SPARK_PRELOAD=1`` says the executors have deepspark installed."""
    wanted = os.environ.get(PRELOAD_ENV, "").strip().lower()
    if wanted in {"0", "false", "no"} or not (master.startswith("local") or wanted):
        return {}
    return {"spark.python.daemon.module": "deepspark.spark.daemon"}


def _log4j() -> Path:
    """A log4j2 configuration that keeps the JVM's start-up chatter off the user's terminal
    (warnings and errors still show); users override it with spark.driver.extraJavaOptions."""
    path = Path(tempfile.gettempdir()) / "deepspark-log4j2.properties"
    if not path.exists():
        write_text_atomic(path, _LOG4J2)
    return path


_LOG4J2 = """\
rootLogger.level = error
rootLogger.appenderRef.stderr.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{yy/MM/dd HH:mm:ss} %p %c{1}: %m%n%ex
"""


def read_source(spark, source: str | Path):
    """Read a Spark data source: a CSV, Parquet (file or folder) or JSON-lines path, or a table.

    Args:
        spark: The SparkSession.
        source: A path, or the name of a table / view in the session's catalog.

    Returns:
        A Spark DataFrame.

    Raises:
        DataError: Neither an existing path nor a known table; the message says what to pass.
    """
    text = str(source)
    path = Path(text)
    if path.exists():
        return _read_path(spark, path)
    if "://" in text:  # a cluster file system (hdfs://, s3a://, dbfs:/ ...)
        return _read_path(spark, path, uri=text)
    if spark.catalog.tableExists(text):
        return spark.table(text)
    raise DataError(
        f"Spark data source not found: no such path and no table or view of that name; give a "
        f"CSV, Parquet or JSON-lines path, or a table name. Received: data={text!r}"
    )


def _read_path(spark, path: Path, uri: str | None = None):
    location = uri or str(path)
    suffix = path.suffix.lower()
    if path.is_dir() or suffix in {".parquet", ".pq"}:
        return spark.read.parquet(location)
    if suffix in {".json", ".jsonl", ".ndjson"}:
        return spark.read.json(location)
    if suffix in {".csv", ".tsv", ".txt"}:
        separator = "\t" if suffix == ".tsv" else ","
        return spark.read.csv(location, header=True, inferSchema=True, sep=separator)
    raise DataError(
        f"Unknown file type {suffix or '(none)'} for Spark; use .csv, .tsv, .parquet or .jsonl. "
        f"Received: data={location!r}"
    )
