"""The store: one location, local or on any filesystem pyarrow reaches, where a run keeps what
every host must see (Horovod's ``Store``, Petastorm's cache).

Layout under the store's root::

    shards/<data key>-w<world size>/   encoded data, one set per data and world size
    checkpoints/<run id>/              per-epoch checkpoints (training.checkpoint)
    _probe-<token>/                    written by the driver, looked for by the executors, removed

A store is given as ``--store URI`` / ``DEEPSPARK_STORE`` (``s3://bucket/prefix``,
``gs://...``, ``hdfs://...``, ``abfs://...``, ``file:///shared/folder`` or a plain path) and
defaults to ``./.deepspark/store``. Whole files are written atomically: on a local or HDFS
filesystem into a temporary sibling renamed over the destination, on an object store with one
upload that appears whole. A set of files (shards, a checkpoint) is made visible by a small
document written after all its files, never before.

A ``Store`` pickles as its URI: executors rebuild the filesystem from their own environment
(credentials, endpoints), as Spark's own readers do.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from deepspark.data._source_files import OBJECT_STORES, first_line
from deepspark.errors import StorageFullError, UserInputError

logger = logging.getLogger("deepspark.store")

STORE_ENV = "DEEPSPARK_STORE"
CHECKPOINT_DIR_ENV = "DEEPSPARK_CHECKPOINT_DIR"
SHARD_CACHE_ENV = "DEEPSPARK_SHARD_CACHE"
TMPDIR_FIX = "free space there, or point TMPDIR at a folder with room"
DEFAULT_STORE = ".deepspark/store"
_SCHEMES = "file://, s3://, gs://, hdfs://, abfs:// or a local path"


class Store:
    """A folder on a local or remote filesystem, addressed by URI.

    Args:
        uri: ``s3://bucket/prefix``, ``file:///path``, another pyarrow filesystem URI, or a local
            path (made absolute).

    Example:
        >>> store = Store.resolve("s3://bucket/deepspark")
        >>> store.write_json("runs/abc/state.json", {"epoch": 3})
        >>> store.child("checkpoints", "abc").uri
        's3://bucket/deepspark/checkpoints/abc'
    """

    def __init__(self, uri: str | os.PathLike):
        self.uri = _normalise(uri)
        self._resolved = None

    @classmethod
    def resolve(cls, uri: str | os.PathLike | Store | None = None) -> Store:
        """The store for ``uri``, else ``$DEEPSPARK_STORE``, else ``./.deepspark/store``."""
        if isinstance(uri, Store):
            return uri
        return cls(uri or os.environ.get(STORE_ENV) or DEFAULT_STORE)

    def __reduce__(self):
        return (Store, (self.uri,))

    def __repr__(self) -> str:
        return f"Store({self.uri!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Store) and other.uri == self.uri

    def __hash__(self) -> int:
        return hash(self.uri)

    @property
    def filesystem(self):
        """The ``pyarrow.fs.FileSystem`` holding the store."""
        return self._filesystem_and_root()[0]

    @property
    def root(self) -> str:
        """The store's folder as a path inside ``filesystem``."""
        return self._filesystem_and_root()[1]

    @property
    def is_local(self) -> bool:
        """Whether the store is on this host's filesystem (invisible to other hosts unless it
        is a shared mount)."""
        return urlparse(self.uri).scheme in ("", "file")

    @property
    def local_path(self) -> Path | None:
        """The store's folder as a local path, for a local store."""
        return Path(self.root) if self.is_local else None

    def child(self, *parts: str) -> Store:
        """The store rooted at a sub-folder of this one."""
        return Store(_join(self.uri, *parts))

    def path(self, *parts: str) -> str:
        """A path inside ``filesystem`` below the store's folder."""
        return _join(self.root, *parts)

    def url(self, *parts: str) -> str:
        """A URI (or local path) below the store's folder, for messages and tags."""
        return _join(self.uri, *parts)

    def exists(self, *parts: str) -> bool:
        from pyarrow import fs

        return self.filesystem.get_file_info(self.path(*parts)).type != fs.FileType.NotFound

    def read_bytes(self, *parts: str) -> bytes:
        with self.filesystem.open_input_stream(self.path(*parts)) as stream:
            return stream.read()

    def read_json(self, *parts: str) -> Any:
        return json.loads(self.read_bytes(*parts))

    def write_bytes(self, data: bytes, *parts: str) -> None:
        """Write a whole file; readers see the old one or the new one, never a torn one.

        Raises:
            StorageFullError: The disk filled up; the partial file was removed.
        """
        destination = self.path(*parts)
        filesystem = self.filesystem
        filesystem.create_dir(_parent(destination), recursive=True)
        if filesystem.type_name in OBJECT_STORES:  # one upload: the object appears whole
            with filesystem.open_output_stream(destination) as stream:
                stream.write(data)
            return
        temporary = f"{_parent(destination)}/.{_name(destination)}.partial-{uuid.uuid4().hex[:8]}"
        try:
            with filesystem.open_output_stream(temporary) as stream:
                stream.write(data)
            if self.is_local:
                _fsync(temporary)
            filesystem.move(temporary, destination)
        except OSError as error:
            if StorageFullError.caused(error):
                raise self._full(destination) from error
            raise
        finally:
            with contextlib.suppress(OSError):
                filesystem.delete_file(temporary)

    def _full(self, destination: str) -> StorageFullError:
        """The full-disk error for a file of the store (``destination`` in ``filesystem``)."""
        where = self.uri + destination[len(self.root) :]
        return StorageFullError.writing(
            _name(destination),
            _parent(where),
            "free space there, or choose another location with --store "
            f"(${STORE_ENV}; ${CHECKPOINT_DIR_ENV} for checkpoints, ${SHARD_CACHE_ENV} for "
            "data shards)",
        )

    def write_json(self, document: Any, *parts: str) -> None:
        self.write_bytes(json.dumps(document, indent=1, default=str).encode(), *parts)

    def upload(self, local_file: str | Path, *parts: str) -> None:
        """Copy a local file into the store (atomically, like ``write_bytes``)."""
        self.write_bytes(Path(local_file).read_bytes(), *parts)

    def rename(self, source: str, destination: str) -> None:
        """Move a file of the store over another (a rename on a local or HDFS store: no space
        needed; a copy on an object store)."""
        self.filesystem.move(self.path(source), self.path(destination))

    @contextlib.contextmanager
    def local_copy(self, *parts: str) -> Iterator[Path]:
        """A local path to the file: itself for a local store, else a downloaded temporary copy
        (for readers that need a path, such as Keras' model loader)."""
        if self.is_local:
            yield Path(self.path(*parts))
            return
        with tempfile.TemporaryDirectory(prefix="deepspark-store-") as folder:
            copy = Path(folder) / _name(self.path(*parts))
            try:
                copy.write_bytes(self.read_bytes(*parts))
            except OSError as error:
                if StorageFullError.caused(error):
                    raise StorageFullError.writing(
                        f"a local copy of {self.url(*parts)}", folder, TMPDIR_FIX
                    ) from error
                raise
            yield copy

    def list(self, *parts: str) -> list[str]:
        """Names of the entries directly below a folder of the store ([] when missing)."""
        from pyarrow import fs

        selector = fs.FileSelector(self.path(*parts), allow_not_found=True)
        return sorted(_name(info.path) for info in self.filesystem.get_file_info(selector))

    def delete(self, *parts: str) -> None:
        """Remove a file or folder of the store (nothing when it is missing)."""
        from pyarrow import fs

        target = self.path(*parts)
        info = self.filesystem.get_file_info(target)
        with contextlib.suppress(FileNotFoundError):
            if info.type == fs.FileType.Directory:
                self.filesystem.delete_dir(target)
            elif info.type == fs.FileType.File:
                self.filesystem.delete_file(target)

    def check_writable(self) -> None:
        """Write and remove a small file, or raise ``UserInputError`` saying the store cannot be
        used (no permission, unreachable endpoint, missing credentials)."""
        folder = f"_probe-{uuid.uuid4().hex}"
        try:
            self.write_bytes(b"deepspark", folder, "writable")
            self.delete(folder)
        except StorageFullError as error:
            with contextlib.suppress(OSError):
                self.delete(folder)
            raise StorageFullError.writing("a first small file", self.uri, error.fix) from error
        except (OSError, UserInputError) as error:
            raise UserInputError(
                f"The store is not writable ({first_line(error)}); give --store a location "
                f"this machine can write (check permissions, credentials and the endpoint). "
                f"Received: store={self.uri!r}"
            ) from error

    def _filesystem_and_root(self):
        if self._resolved is None:
            self._resolved = _open_filesystem(self.uri)
        return self._resolved


def _open_filesystem(uri: str):
    from pyarrow import fs

    if urlparse(uri).scheme in ("", "file"):
        return fs.LocalFileSystem(), _local_path(uri)
    try:
        filesystem, path = fs.FileSystem.from_uri(uri)
    except (OSError, ValueError) as error:
        filesystem, path = _fsspec_filesystem(uri, error)
    return filesystem, path.rstrip("/")


def _fsspec_filesystem(uri: str, error: Exception):
    """Schemes pyarrow does not know natively, through fsspec when it is installed."""
    try:
        import fsspec
        from pyarrow.fs import FSSpecHandler, PyFileSystem
    except ImportError:
        fsspec = None
    if fsspec is not None:
        try:
            filesystem, path = fsspec.core.url_to_fs(uri)
            return PyFileSystem(FSSpecHandler(filesystem)), path
        except (ImportError, ValueError, OSError):
            pass
    raise UserInputError(
        f"Cannot open the store ({first_line(error)}); use {_SCHEMES}. Received: store={uri!r}"
    ) from error


def _normalise(uri: str | os.PathLike) -> str:
    text = os.fspath(uri)
    if not text:
        raise UserInputError(f"The store is empty; give a folder or URI. Received: store={text!r}")
    scheme = urlparse(text).scheme
    if scheme == "file":
        return _local_path(text)
    if scheme and len(scheme) > 1:  # a one-letter scheme is a Windows drive
        return text.rstrip("/")
    return str(Path(text).expanduser().resolve())


def _local_path(uri: str) -> str:
    parsed = urlparse(uri)
    return str(Path(parsed.path if parsed.scheme == "file" else uri).resolve())


def _join(base: str, *parts: str) -> str:
    cleaned = [part.strip("/") for part in parts if part and part.strip("/")]
    return "/".join([base.rstrip("/") or "/", *cleaned]) if cleaned else base


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path else ""


def _name(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def _fsync(path: str) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())
