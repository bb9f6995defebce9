"""Images on Spark: reading image files with ``binaryFile``, and the column a model reads.

``read_image_files`` turns an image folder, a glob (``photos/*.jpg``, ``hdfs://.../**``) or a
URI (``s3://bucket/photos/``, any Hadoop URI) into rows ``path`` + ``content`` (the encoded
bytes, read by the executors, never the driver). Batches sent to Python are bounded in bytes as
well as rows (``image_batch_limits``): 10,000 decoded 224x224 RGB images are about 1.5 GB, so a
row count alone is not safe.
"""

from __future__ import annotations

import math
from pathlib import Path

from deepspark.data.image_inputs import BINARY_FILE_COLUMN, IMAGE_COLUMN, PATH_COLUMN
from deepspark.data.image_sources import IMAGE_SUFFIXES
from deepspark.data.schema import FeatureSchema
from deepspark.errors import DataError, UserInputError

ARROW_BYTES_CONF = "spark.sql.execution.arrow.maxBytesPerBatch"
ARROW_ROWS_CONF = "spark.sql.execution.arrow.maxRecordsPerBatch"
#: Default bound on a batch of images sent to a Python worker: encoded bytes in the Arrow batch,
#: and decoded pixels held while scoring it.
DEFAULT_BATCH_BYTES = 64 * 2**20
_GLOB_CHARACTERS = set("*?[{")
_FILES_PER_PARTITION = 4096
#: Object stores read through pyarrow (on the driver to list, on the executors to read), so
#: that Spark needs no Hadoop connector (hadoop-aws...) for them; other URIs use Spark's reader.
PYARROW_READ_SCHEMES = frozenset({"s3", "s3a", "s3n", "gs", "gcs", "abfs", "abfss"})
_URI_PROBE_FILES = 200  # files listed to tell a folder URI of images from a table's folder
# Any case of every suffix (Hadoop globs are case-sensitive): *.{[jJ][pP][gG],...}
_IMAGE_GLOB = (
    "*.{"
    + ",".join(
        "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in suffix[1:])
        for suffix in sorted(IMAGE_SUFFIXES)
    )
    + "}"
)


def is_image_files_source(source: str, spark=None) -> bool:
    """Whether ``source`` names image files rather than a table: what
    ``data.image_sources.resolve_images`` lists (a folder, glob, image file or URI of images),
    or a glob or name ending in an image suffix; with ``spark``, also a folder URI only Spark
    reaches (``hdfs://``...) whose first files are images and none a table's."""
    from deepspark.data.image_sources import is_image_glob, is_remote, resolve_images

    text = str(source)
    try:
        if resolve_images(text) is not None:
            return True
    except DataError:
        pass  # storage only Spark reaches (hdfs:// without libhdfs): Spark's listing decides
    if not is_remote(text) and Path(text).exists():
        return False  # a local table file or folder
    if _GLOB_CHARACTERS & set(text):
        return is_image_glob(text) or "{" in text
    if Path(text.rstrip("/")).suffix.lower() in IMAGE_SUFFIXES:
        return True
    return spark is not None and ":" in text and _is_image_folder_uri(spark, text)


_TABLE_SUFFIXES = (".parquet", ".csv", ".json", ".orc", ".avro", ".crc")


def _is_image_folder_uri(spark, uri: str) -> bool:
    from py4j.protocol import Py4JJavaError

    from deepspark.spark.jobs import HadoopFiles

    try:
        names = HadoopFiles(spark).file_names(uri, limit=_URI_PROBE_FILES)
    except Py4JJavaError:  # an unknown scheme, an unreachable store: the table reader says why
        return False
    if not names:
        return False
    suffixes = {Path(name).suffix.lower() for name in names}
    return bool(suffixes & set(IMAGE_SUFFIXES)) and not suffixes & set(_TABLE_SUFFIXES)


def read_image_files(spark, source: str):
    """Rows ``path`` and ``content`` for the image files of ``source`` (folder: every image
    below it; glob or URI: the files it matches), the bytes read by the executors.

    Object store URIs (``PYARROW_READ_SCHEMES``: ``s3://``, ``gs://``, ``abfs://``...) are
    listed on the driver (names only) and each executor reads its rows' bytes through pyarrow,
    so Spark needs no Hadoop connector for them; local files and other URIs (``hdfs://``) are
    read by Spark's ``binaryFile`` source.

    Raises:
        DataError: Nothing matches, or the storage cannot be reached.
    """
    text = str(source)
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme in PYARROW_READ_SCHEMES:
        return _listed_image_files(spark, text)
    return _binary_files(spark, text)


def _binary_files(spark, text: str):
    from pyspark.errors import AnalysisException

    reader = spark.read.format("binaryFile")
    if not (_GLOB_CHARACTERS & set(text)) and Path(text).suffix.lower() not in IMAGE_SUFFIXES:
        reader = reader.option("recursiveFileLookup", "true").option("pathGlobFilter", _IMAGE_GLOB)
    try:
        frame = reader.load(text).select(PATH_COLUMN, BINARY_FILE_COLUMN)
        # The listing the reader made (glob filter applied): no job, unlike limit(1).count(),
        # which cost 1.2 s on 6,000 files.
        files = file_count(frame)
    except AnalysisException as error:
        first_line = str(error).strip().splitlines()[0]
        raise DataError(
            f"No image files at this path ({first_line}); give an image folder, a glob such as "
            f"'photos/*.jpg', or a Hadoop URI. Received: data={text!r}"
        ) from error
    if files == 0:
        raise _no_images(text)
    # binaryFile counts every file as 4 MB (openCostInBytes): small images come ~32 to a
    # partition, and each Python task has a fixed cost (~0.1 s). Fewer, fuller partitions, in
    # whole waves of one per core. Measured scoring CIFAR files on 2 cores: 10,000 in 2
    # partitions 4.9 s, 10 5.6 s, 20 6.3 s; 6,000 in binaryFile's 188 partitions 5x slower.
    partitions = image_partitions(files, spark.sparkContext.defaultParallelism)
    if partitions < frame.rdd.getNumPartitions():
        frame = frame.coalesce(partitions)
    return frame


def _no_images(text: str) -> DataError:
    return DataError(
        "No image files found (JPEG, PNG, BMP, GIF, WebP, TIFF); check the path or glob. "
        f"Received: data={text!r}"
    )


def _listed_image_files(spark, text: str):
    """``path`` + ``content`` of the images of a URI, listed by pyarrow on the driver and read
    by pyarrow on the executors."""
    from deepspark.data.image_sources import resolve_images

    listing = resolve_images(text)
    if listing is None:
        raise _no_images(text)
    paths = listing.paths
    partitions = image_partitions(len(paths), spark.sparkContext.defaultParallelism)
    rows = spark.sparkContext.parallelize([(path,) for path in paths], partitions)
    names = spark.createDataFrame(rows, f"{PATH_COLUMN} string")
    schema = f"{PATH_COLUMN} string, {BINARY_FILE_COLUMN} binary"
    frame = names.mapInPandas(_with_contents, schema)
    frame._deepspark_file_count = len(paths)  # for file_count: this frame reads no files
    return frame


def _with_contents(batches):
    """Executor side: each row's bytes read through its URI's filesystem (``None`` when the
    file cannot be read: its row is then reported as a bad image, not a failed task)."""
    from concurrent.futures import ThreadPoolExecutor

    from deepspark.data.image_decode import REMOTE_READ_THREADS

    with ThreadPoolExecutor(max_workers=REMOTE_READ_THREADS) as pool:
        for batch in batches:
            contents = list(pool.map(_read_or_none, batch[PATH_COLUMN].tolist()))
            yield batch.assign(**{BINARY_FILE_COLUMN: contents})


def _read_or_none(uri: str) -> bytes | None:
    from deepspark.data.image_sources import read_image_bytes

    try:
        return read_image_bytes(uri)
    except (OSError, DataError):
        return None


def image_partitions(files: int, parallelism: int) -> int:
    """Partitions for ``files`` image files: whole waves of ``parallelism`` tasks, each task at
    most ``_FILES_PER_PARTITION`` files (its rows still reach Python in byte-bounded batches)."""
    parallelism = max(1, int(parallelism))
    return parallelism * max(1, math.ceil(files / (parallelism * _FILES_PER_PARTITION)))


def file_count(frame) -> int:
    """Files in the reader's listing (of ``read_image_files``' frame). ``inputFiles()`` copies
    every name through Py4J one at a time (0.2 s for 6,000 files); the JVM array's length is
    one call."""
    listed = getattr(frame, "_deepspark_file_count", None)
    if listed is not None:
        return listed
    java_frame = getattr(frame, "_jdf", None)
    if java_frame is not None:
        return len(java_frame.inputFiles())
    return len(frame.inputFiles())


def image_input_column(frame, schema: FeatureSchema):
    """The column of a Spark DataFrame an image model reads (the model's own column name,
    ``image`` or ``content`` as bytes, or ``path``), as a ``Column``.

    Raises:
        UserInputError: No such column, or one that is neither binary nor text.
    """
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    from deepspark.spark.columns import quote

    types = {field.name: field.dataType for field in frame.schema.fields}
    candidates = dict.fromkeys(
        [schema.feature_names[0], IMAGE_COLUMN, BINARY_FILE_COLUMN, PATH_COLUMN]
    )
    present = [name for name in candidates if name in types]
    # Bytes first: binaryFile rows carry both, and the executors already hold the bytes.
    binary = [name for name in present if isinstance(types[name], T.BinaryType)]
    found = (binary or present or [None])[0]
    if found is None:
        raise UserInputError(
            "This model takes images: give a binary column 'image' or 'content' (encoded image "
            "bytes, e.g. from spark.read.format('binaryFile')) or a text column 'path'. "
            f"Received: columns={list(types)}"
        )
    if not isinstance(types[found], T.BinaryType | T.StringType):
        raise UserInputError(
            f"Column '{found}' has Spark type {types[found].simpleString()}; an image model "
            f"needs encoded image bytes (binary) or file paths (string). "
            f"Received: {found}={types[found].simpleString()}"
        )
    return F.col(quote(found))


def image_batch_limits(spark, schema: FeatureSchema, batch_bytes: int | None) -> None:
    """Bound the Arrow batches an image model scores by ``batch_bytes`` (default 64 MB): in
    encoded bytes, and in rows (as many decoded images as fit ``batch_bytes``)."""
    batch_bytes = DEFAULT_BATCH_BYTES if batch_bytes is None else int(batch_bytes)
    if batch_bytes < 2**20:
        raise UserInputError(
            f"--batch-bytes must be at least 1 MB (1048576). Received: batch_bytes={batch_bytes}"
        )
    rows = max(1, batch_bytes // schema.image.pixel_bytes)
    spark.conf.set(ARROW_BYTES_CONF, str(batch_bytes))
    spark.conf.set(ARROW_ROWS_CONF, str(rows))
