"""Write a table to a file or a URI atomically: a failure never leaves a partial output behind.

An output is a CSV, Parquet or JSON-lines file (by suffix), given as a local path or as a URI on
a file system pyarrow opens (``s3://``, ``gs://``, ``hdfs://``, ``abfs://``, ``file://``):

- a local file is written to a hidden temporary sibling, renamed over the destination at the end;
- a remote file is written to a local temporary file first, then copied up once: on an object
  store the object appears whole when that one upload completes; elsewhere (HDFS) it is copied
  to a hidden sibling and renamed.

``write_table`` writes a whole pandas frame; ``open_table_writer`` appends Arrow tables one
after the other (a streamed ``predict``) and publishes the file only when the block ends
without error.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs

from deepspark._atomic import atomic_path
from deepspark.data._source_files import OBJECT_STORES, PYARROW_SCHEMES, SCHEME_PATTERN, first_line
from deepspark.errors import StorageFullError, UserInputError

_WRITERS = {
    ".csv": lambda frame, path: frame.to_csv(path, index=False),
    ".parquet": lambda frame, path: frame.to_parquet(path, index=False),
    ".pq": lambda frame, path: frame.to_parquet(path, index=False),
    ".json": lambda frame, path: frame.to_json(path, orient="records", lines=True),
    ".jsonl": lambda frame, path: frame.to_json(path, orient="records", lines=True),
}
_HINT = (
    "check the URI, the endpoint (AWS_ENDPOINT_URL for S3) and the credentials "
    "(AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, GOOGLE_APPLICATION_CREDENTIALS, ...)"
)


@dataclass(frozen=True)
class OutputTarget:
    """Where an output file goes, checked before any work.

    Attributes:
        text: The output as the user gave it (for messages).
        path: A local path, or the path inside ``filesystem``.
        suffix: The lower-case suffix that chooses the format.
        filesystem: The remote file system, or None for a local file.
    """

    text: str
    path: str
    suffix: str
    filesystem: pafs.FileSystem | None = None

    @property
    def is_local(self) -> bool:
        return self.filesystem is None


def check_output_path(path: str | os.PathLike, *, overwrite: bool) -> OutputTarget:
    """Validate an output path or URI before any work is done.

    Raises:
        UserInputError: Existing output without ``overwrite``, unknown suffix, missing folder or
            bucket, unreachable storage.
    """
    text = os.fspath(path)
    match = SCHEME_PATTERN.match(text)
    scheme = match.group(1).lower() if match else "file"
    local = scheme == "file"
    if local and match:
        text = text[len("file://") :]
    suffix = (Path(text) if local else PurePosixPath(text)).suffix.lower()
    if suffix not in _WRITERS:
        raise UserInputError(
            f"Unknown output format '{suffix}'; use one of "
            f"{', '.join(sorted(_WRITERS))}. Received: output={os.fspath(path)!r}"
        )
    if local:
        _check_local(Path(text), overwrite=overwrite)
        return OutputTarget(text=text, path=text, suffix=suffix)
    filesystem, inside = _open_remote(text, scheme)
    _check_remote(filesystem, inside, text, overwrite=overwrite)
    return OutputTarget(text=text, path=inside, suffix=suffix, filesystem=filesystem)


def _check_local(path: Path, *, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise UserInputError(
            f"Output already exists; pass --overwrite to replace it. Received: output={str(path)!r}"
        )
    if not path.parent.exists():
        raise UserInputError(
            f"Output folder does not exist; create it first. Received: output={str(path)!r}"
        )


def _open_remote(text: str, scheme: str) -> tuple[pafs.FileSystem, str]:
    uri = PYARROW_SCHEMES.get(scheme, scheme) + text[len(scheme) :]
    try:
        return pafs.FileSystem.from_uri(uri)
    except (OSError, pa.ArrowException, ValueError) as error:
        raise UserInputError(
            f"Cannot open the output location ({first_line(error)}); {_HINT}. "
            f"Received: output={text!r}"
        ) from error


def _check_remote(filesystem, inside: str, text: str, *, overwrite: bool) -> None:
    parent, _, name = inside.rstrip("/").rpartition("/")
    try:
        info = filesystem.get_file_info(inside)
        container = parent.split("/", 1)[0] if parent else ""
        folder = container if filesystem.type_name in OBJECT_STORES else parent
        folder_info = filesystem.get_file_info(folder) if folder else None
    except OSError as error:
        raise UserInputError(
            f"Cannot reach the output location ({first_line(error)}); {_HINT}. "
            f"Received: output={text!r}"
        ) from error
    if not name or info.type == pafs.FileType.Directory:
        raise UserInputError(
            f"Output must name a file (e.g. .../scored.parquet), not a folder. "
            f"Received: output={text!r}"
        )
    if info.type != pafs.FileType.NotFound and not overwrite:
        raise UserInputError(
            f"Output already exists; pass --overwrite to replace it. Received: output={text!r}"
        )
    if folder_info is None or folder_info.type == pafs.FileType.NotFound:
        what = "bucket or container" if filesystem.type_name in OBJECT_STORES else "folder"
        raise UserInputError(
            f"Output {what} '{folder}' does not exist or is not visible with these credentials; "
            f"create it first, or {_HINT}. Received: output={text!r}"
        )


def write_table(
    frame: pd.DataFrame, path: str | os.PathLike | OutputTarget, *, overwrite: bool = False
) -> OutputTarget:
    """Write ``frame`` by suffix (CSV, Parquet, JSON lines) to a path or URI, atomically
    (an ``OutputTarget`` is written as already checked)."""
    target = _target(path, overwrite=overwrite)
    with staged_output(target) as staging:
        _WRITERS[target.suffix](frame, staging)
    return target


@contextlib.contextmanager
def staged_output(target: OutputTarget) -> Iterator[Path]:
    """Yield a local file to write; when the block ends without error it becomes ``target``
    (renamed, or uploaded once), otherwise it is removed and ``target`` is left as it was.

    Raises:
        StorageFullError: The disk filled up while the file was written or published.
    """
    if target.is_local:
        folder = str(Path(target.path).parent)
        with _full_disk_as_error(target, folder, _OTHER_OUTPUT), atomic_path(target.path) as path:
            yield path
        return
    staging_folder = Path(tempfile.mkdtemp(prefix="deepspark-output-"))
    try:
        staging = staging_folder / f"output{target.suffix}"
        with _full_disk_as_error(target, str(staging_folder), _OTHER_TMPDIR):
            yield staging
        with _full_disk_as_error(target, target.text.rpartition("/")[0], _OTHER_OUTPUT):
            _publish(staging, target)
    finally:
        shutil.rmtree(staging_folder, ignore_errors=True)


_OTHER_OUTPUT = "free space there, or choose another --output"
_OTHER_TMPDIR = (
    "free space there, or point TMPDIR at a folder with room (a remote output is staged "
    "locally first)"
)


@contextlib.contextmanager
def _full_disk_as_error(target: OutputTarget, folder: str, fix: str) -> Iterator[None]:
    """A full disk while ``target`` is written into ``folder`` becomes ``StorageFullError``."""
    try:
        yield
    except StorageFullError:
        raise
    except Exception as error:
        if not StorageFullError.caused(error):
            raise
        raise StorageFullError.writing(
            f"the output {PurePosixPath(target.text).name}",
            folder,
            f"{fix}; an existing output was left as it was and no partial file was kept",
        ) from error


def _publish(staging: Path, target: OutputTarget) -> None:
    filesystem = target.filesystem
    local = pafs.LocalFileSystem()
    destination = target.path
    if filesystem.type_name not in OBJECT_STORES:
        parent, _, name = target.path.rpartition("/")
        destination = f"{parent}/.{name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        pafs.copy_files(
            str(staging), destination, source_filesystem=local, destination_filesystem=filesystem
        )
        if destination != target.path:
            filesystem.move(destination, target.path)
    except OSError as error:
        if StorageFullError.caused(error):
            raise  # staged_output says the disk is full
        raise UserInputError(
            f"Cannot write the output ({first_line(error)}); {_HINT}. "
            f"Received: output={target.text!r}"
        ) from error
    finally:
        if destination != target.path:
            with contextlib.suppress(OSError):
                filesystem.delete_file(destination)


class TableAppender:
    """Arrow tables appended to one output file (see ``open_table_writer``).

    Attributes:
        rows: Rows written so far.
    """

    def __init__(self, staging: Path, suffix: str, schema: pa.Schema):
        self.rows = 0
        self._schema = schema
        self._suffix = suffix
        self._parquet = None
        self._handle = None
        if suffix in {".parquet", ".pq"}:
            import pyarrow.parquet as pq

            self._parquet = pq.ParquetWriter(staging, schema)
        else:
            self._handle = staging.open("w", newline="", encoding="utf-8")

    def write(self, table: pa.Table) -> None:
        """Append ``table`` (cast to the writer's schema)."""
        table = table.select(self._schema.names).cast(self._schema)
        if self._parquet is not None:
            self._parquet.write_table(table)
        else:
            # pandas formats the text as ``write_table`` does for a whole frame.
            frame = table.to_pandas()
            if self._suffix == ".csv":
                frame.to_csv(self._handle, index=False, header=self.rows == 0)
            else:
                frame.to_json(self._handle, orient="records", lines=True)
        self.rows += table.num_rows

    def close(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
        elif self.rows == 0 and self._suffix == ".csv":
            self._schema.empty_table().to_pandas().to_csv(self._handle, index=False)
        if self._handle is not None:
            self._handle.close()


@contextlib.contextmanager
def open_table_writer(
    path: str | os.PathLike | OutputTarget, schema: pa.Schema, *, overwrite: bool = False
) -> Iterator[TableAppender]:
    """Append Arrow tables of ``schema`` to one CSV, Parquet or JSON-lines output; the file
    appears (atomically, see the module) only when the block ends without error.

    Example:
        >>> with open_table_writer("s3://bucket/scored.parquet", schema) as writer:
        ...     for table in tables:
        ...         writer.write(table)
    """
    target = _target(path, overwrite=overwrite)
    with staged_output(target) as staging:
        appender = TableAppender(staging, target.suffix, schema)
        try:
            yield appender
        finally:
            appender.close()


def _target(path, *, overwrite: bool) -> OutputTarget:
    if isinstance(path, OutputTarget):
        return path
    return check_output_path(path, overwrite=overwrite)
