"""Spark scoring jobs: read a source, score it (DataFrame API or a SQL query), write Parquet.

The output is written to a hidden sibling folder and renamed into place only when the job
succeeded, so a failed job never leaves a partial output at the destination.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
import uuid

from deepspark.errors import DataError, UserInputError

logger = logging.getLogger(__name__)

# A deepspark error raised inside a Python worker reaches the driver as a PythonException
# whose text ends with the worker's traceback; its last "deepspark.errors.X: message" line is
# the message the user needs.
_WORKER_ERROR = re.compile(r"deepspark\.errors\.(\w+): (.+)")


@dataclasses.dataclass(frozen=True)
class ScoreJobResult:
    """What a scoring job wrote."""

    output: str
    rows: int
    columns: list[str]
    seconds: float

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def score_to_parquet(
    source: str,
    model_uri: str,
    *,
    output: str,
    overwrite: bool = False,
    master: str | None = None,
    batch_rows: int | None = None,
    batch_bytes: int | None = None,
    sql: str | None = None,
    function_name: str = "model",
    view: str = "data",
) -> ScoreJobResult:
    """Score a Spark source with a model and write the result as Parquet.

    Args:
        source: A CSV / Parquet / JSON-lines path or a table name; for an image model also an
            image folder, a glob (``photos/*.jpg``) or a Hadoop URI of image files, read with
            ``binaryFile`` (the output keeps ``path``, not the image bytes).
        model_uri: A deepspark model URI or folder.
        output: Destination Parquet folder (any Hadoop path).
        overwrite: Replace an existing ``output``.
        master: Spark master URL when no session is active.
        batch_rows: Rows per Arrow batch sent to the model.
        batch_bytes: Image models: bytes per batch sent to the model (default 64 MB).
        sql: Instead of appending predictions, run this query; the source is the view ``view``
            and the model the SQL function ``function_name`` (call it as ``name(struct(*))``).
        function_name: SQL function name of the model (with ``sql``).
        view: Temporary view name of the source (with ``sql``).

    Returns:
        The output path, row count, columns and seconds taken.

    Raises:
        UserInputError: Existing output, bad source, missing columns, bad SQL: before any job
            where possible; otherwise the worker's deepspark message.
        ModelNotFoundError: The model URI does not resolve (checked on the driver).
    """
    from deepspark.models.kinds import kind_of
    from deepspark.spark.images import file_count, is_image_files_source, read_image_files
    from deepspark.spark.scoring import predict, register_model, set_arrow_batch_rows, spark_model
    from deepspark.spark.session import get_session, read_source

    spark = get_session(master)
    started = time.perf_counter()
    files = HadoopFiles(spark)
    if files.exists(output) and not overwrite:
        raise UserInputError(
            f"Output already exists; pass --overwrite to replace it. Received: output={output!r}"
        )
    resolved = spark_model(spark, model_uri)
    images = kind_of(resolved.model.schema).reads_images
    image_files = images and is_image_files_source(source, spark)
    if image_files:
        frame = read_image_files(spark, source)
    else:
        frame = read_source(spark, source)
    set_arrow_batch_rows(spark, batch_rows)
    if sql:
        frame.createOrReplaceTempView(view)
        register_model(spark, function_name, resolved, batch_bytes=batch_bytes)
        scored = _run_sql(spark, sql)
    else:
        scored = predict(frame, resolved, batch_rows=batch_rows, batch_bytes=batch_bytes)
        if images:  # the image bytes stay where they are; the output names them by path
            scored = scored.drop(*_binary_columns(scored))
    write_atomically(scored, output, files)
    if image_files and not sql:
        rows = file_count(frame)  # one row per file, bad ones included (with their error)
    else:
        rows = spark.read.parquet(output).count()  # from Parquet footers, not a rescan
    return ScoreJobResult(output, rows, scored.columns, round(time.perf_counter() - started, 3))


def _binary_columns(frame) -> list[str]:
    from pyspark.sql import types as T

    return [field.name for field in frame.schema.fields if isinstance(field.dataType, T.BinaryType)]


def _run_sql(spark, query: str):
    from pyspark.errors import AnalysisException, ParseException

    try:
        return spark.sql(query)
    except (AnalysisException, ParseException) as error:
        first_line = str(error).strip().splitlines()[0]
        raise UserInputError(f"SQL query failed: {first_line}. Received: sql={query!r}") from error


def write_atomically(scored, output: str, files: HadoopFiles) -> None:
    from pyspark.errors import PythonException

    staging = f"{output.rstrip('/')}.__deepspark-{uuid.uuid4().hex[:12]}"
    try:
        scored.write.parquet(staging)
        if files.exists(output):
            files.delete(output)
        files.rename(staging, output)
    except PythonException as error:
        raise worker_error(error) from error
    finally:
        if files.exists(staging):
            files.delete(staging)
    logger.info("wrote %s", output)


def worker_error(error: Exception) -> Exception:
    """A worker-side deepspark error as the same ``UserInputError`` on the driver."""
    found = _WORKER_ERROR.findall(str(error))
    if not found:
        return error
    _, message = found[-1]
    return DataError(message.strip())


class HadoopFiles:
    """File operations on any Hadoop file system (local, HDFS, S3, ...) via the JVM."""

    def __init__(self, spark) -> None:
        self._jvm = spark.sparkContext._jvm
        self._configuration = spark.sparkContext._jsc.hadoopConfiguration()

    def _resolve(self, path: str):
        hadoop_path = self._jvm.org.apache.hadoop.fs.Path(path)
        return hadoop_path.getFileSystem(self._configuration), hadoop_path

    def exists(self, path: str) -> bool:
        file_system, hadoop_path = self._resolve(path)
        return bool(file_system.exists(hadoop_path))

    def delete(self, path: str) -> None:
        file_system, hadoop_path = self._resolve(path)
        file_system.delete(hadoop_path, True)

    def file_names(self, path: str, *, limit: int) -> list[str] | None:
        """Names of up to ``limit`` files below the folder ``path`` (recursive); ``None`` when
        ``path`` is not a folder."""
        file_system, hadoop_path = self._resolve(path)
        if not file_system.exists(hadoop_path):
            return None
        if not file_system.getFileStatus(hadoop_path).isDirectory():
            return None
        names, files = [], file_system.listFiles(hadoop_path, True)
        while len(names) < limit and files.hasNext():
            names.append(str(files.next().getPath().getName()))
        return names

    def rename(self, source: str, target: str) -> None:
        file_system, source_path = self._resolve(source)
        _, target_path = self._resolve(target)
        if not file_system.rename(source_path, target_path):
            raise OSError(f"could not move {source} to {target}")
