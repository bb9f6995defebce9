"""Where a table's files are: a local path, folder or glob, or a URI on any file system pyarrow
opens (``file://``, ``s3://``, ``gs://``, ``hdfs://``, ``abfs://``), listed once.

Names starting with ``.`` or ``_`` below a folder are skipped (``_SUCCESS``, ``.crc`` files,
``_delta_log``), as Spark and pyarrow do; so are zero-byte files. A folder holding
``_delta_log/`` is reported as a Delta Lake table.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs

from deepspark.data.readers import BUILTIN_DATASETS
from deepspark.errors import DataError

SCHEME_PATTERN = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# File systems where one upload appears whole (pyarrow's type names): outputs and the store
# publish a file there with one upload, elsewhere through a temporary name and a rename.
OBJECT_STORES = frozenset({"s3", "gcs", "abfs"})
GLOB_CHARACTERS = "*?["
DELTA_LOG = "_delta_log"
# What Spark's Hadoop file systems call the same storage.
SPARK_SCHEMES = {
    "file": "file",
    "s3": "s3a",
    "s3a": "s3a",
    "gs": "gs",
    "gcs": "gs",
    "hdfs": "hdfs",
    "viewfs": "viewfs",
    "abfs": "abfs",
    "abfss": "abfss",
}
PYARROW_SCHEMES = {"s3a": "s3", "s3n": "s3"}  # Hadoop spellings of s3:// that users paste
_SUPPORTED = "file://, s3:// (or s3a://), gs://, hdfs://, abfs:// (abfss://)"
_ACCESS_HINTS = {
    "s3": "check the endpoint (AWS_ENDPOINT_URL), the bucket name and the credentials "
    "(AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)",
    "gs": "check the bucket name and the credentials (GOOGLE_APPLICATION_CREDENTIALS)",
    "abfs": "check the account, the container and the credentials (AZURE_STORAGE_ACCOUNT_KEY "
    "or an Azure identity)",
    "hdfs": "check the namenode host and port, and that a JVM and Hadoop's libhdfs are "
    "installed (JAVA_HOME, HADOOP_HOME, CLASSPATH)",
    "file": "check the path and its permissions",
}
_HINT_FAMILY = {"s3a": "s3", "gcs": "gs", "abfss": "abfs", "viewfs": "hdfs"}


@dataclass(frozen=True)
class Location:
    """An opened file system, and how its paths are written back as URIs.

    Attributes:
        filesystem: The pyarrow file system.
        scheme: ``file`` for local paths, else the URI scheme as given (``s3``, ``gs`` ...).
        netloc: The URI's authority (``namenode:8020``, ``container@account...``), or ``""``.
    """

    filesystem: pafs.FileSystem
    scheme: str
    netloc: str = ""

    def to_uri(self, path: str, *, scheme: str | None = None) -> str:
        """The URI of a path in this file system (the plain path for local files)."""
        if self.scheme == "file":
            return path if scheme is None else f"file://{path}"
        scheme = scheme or self.scheme
        if self.scheme in {"hdfs", "viewfs"}:
            return f"{scheme}://{self.netloc}{path}"
        if self.scheme in {"abfs", "abfss"} and "@" in self.netloc:
            rest = path.split("/", 1)[1] if "/" in path else ""
            return f"{scheme}://{self.netloc}/{rest}"
        return f"{scheme}://{path}"

    def to_spark_uri(self, path: str) -> str | None:
        """The URI Spark reads the path with, or None when Spark has no such file system."""
        spark_scheme = SPARK_SCHEMES.get(self.scheme)
        return None if spark_scheme is None else self.to_uri(path, scheme=spark_scheme)


@dataclass(frozen=True)
class FileListing:
    """The data files of one source, in file order.

    Attributes:
        location: The file system the paths belong to.
        kind: ``file``, ``folder`` or ``glob``.
        base: The folder hive partitions are read below (the folder, or a glob's fixed prefix).
        paths: Data file paths in ``location.filesystem``, sorted.
        sizes: Their sizes in bytes.
        is_delta: The folder holds ``_delta_log/`` (a Delta Lake table).
    """

    location: Location
    kind: str
    base: str
    paths: tuple[str, ...]
    sizes: tuple[int, ...]
    is_delta: bool = False


def not_found(data: str) -> DataError:
    """The one "Data not found" message, for paths, URIs and patterns alike."""
    names = ", ".join(BUILTIN_DATASETS)
    if SCHEME_PATTERN.match(data) is None:
        return DataError(
            f"Data not found: no such file, and not a built-in dataset ({names}); check the "
            f"path. Received: data={data!r}"
        )
    return DataError(
        f"Data not found: no such file, folder or object; check the URI. Received: data={data!r}"
    )


def access_error(error: BaseException, data: str, scheme: str) -> DataError:
    """A storage error (unreachable endpoint, unknown bucket, bad credentials) as one line."""
    family = _HINT_FAMILY.get(scheme, scheme)
    hint = _ACCESS_HINTS.get(family, _ACCESS_HINTS["file"])
    return DataError(
        f"Cannot access the data ({first_line(error)}); {hint}. Received: data={data!r}"
    )


def first_line(error: BaseException) -> str:
    """The first line of an error's message (pyarrow's can run to dozens of lines)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def open_location(text: str) -> tuple[Location, str]:
    """Open the file system of a local path or URI.

    Returns:
        The location and the path inside its file system (absolute for local paths).

    Raises:
        DataError: An unsupported scheme, or storage that cannot be reached.
    """
    match = SCHEME_PATTERN.match(text)
    if match is None:
        path = os.path.abspath(os.path.expanduser(text))
        return Location(pafs.LocalFileSystem(), "file"), path
    scheme = match.group(1).lower()
    pyarrow_scheme = PYARROW_SCHEMES.get(scheme, scheme)
    try:
        filesystem, path = pafs.FileSystem.from_uri(pyarrow_scheme + text[len(scheme) :])
    except OSError as error:
        raise access_error(error, text, scheme) from error
    except pa.ArrowException as error:
        if "Unrecognized filesystem type" not in str(error):
            raise DataError(
                f"Invalid URI ({first_line(error)}); write it as scheme://bucket-or-host/path, "
                f"e.g. s3://bucket/prefix/. Received: data={text!r}"
            ) from error
        raise DataError(
            f"Unsupported URI scheme '{scheme}://'; use a local path or one of {_SUPPORTED}, "
            f"or 'delta:' before one of those. Received: data={text!r}"
        ) from error
    if isinstance(filesystem, pafs.LocalFileSystem):
        return Location(filesystem, "file"), path
    return Location(filesystem, scheme, urlsplit(text).netloc), path


def has_glob(text: str) -> bool:
    """Whether a path or URI is a pattern: ``*``, ``?`` or ``[`` (in a URI, ``?`` starts the
    query string pyarrow reads options from, so only ``*`` and ``[`` count there)."""
    match = SCHEME_PATTERN.match(text)
    wildcards = "*[" if match else GLOB_CHARACTERS
    rest = text[match.end() :] if match else text
    return any(character in rest for character in wildcards)


def list_path(text: str) -> FileListing | None:
    """List a local path or URI (file or folder).

    Returns:
        The listing, or None for a local path that does not exist (it may name a built-in
        dataset; the caller decides).

    Raises:
        DataError: A URI that does not exist, or storage that cannot be reached.
    """
    location, path = open_location(text)
    info = file_info(location, path, text)
    if info.type == pafs.FileType.NotFound:
        if location.scheme == "file":
            return None
        _check_bucket(location, path, text)
        raise not_found(text)
    if info.type == pafs.FileType.File:
        if not info.size:
            raise DataError(
                f"Data file is empty (0 bytes); give a file with a header and data. "
                f"Received: {location.to_uri(path)}"
            )
        return FileListing(location, "file", "", (path,), (info.size,))
    selector = pafs.FileSelector(path, recursive=True)
    return _listing(location, "folder", path, select_files(location, selector, text), None)


def list_glob(text: str) -> FileListing:
    """List the files a pattern matches (``*`` stays in a folder, ``**`` crosses folders).

    Raises:
        DataError: Nothing matches, or storage that cannot be reached.
    """
    match = SCHEME_PATTERN.match(text)
    start = match.end() if match else 0
    wildcards = "*[" if match else GLOB_CHARACTERS
    first_wildcard = min(text.index(c, start) for c in wildcards if c in text[start:])
    cut = text.rfind("/", start, first_wildcard) + 1
    location, base = open_location(text[:cut] or ".")
    pattern = text[cut:]
    recursive = "/" in pattern or "**" in pattern
    selector = pafs.FileSelector(base, recursive=recursive, allow_not_found=True)
    listing = _listing(location, "glob", base, select_files(location, selector, text), pattern)
    if not listing.paths:
        raise not_found(text)
    return listing


def _listing(location, kind, base, infos, pattern) -> FileListing:
    matcher = re.compile(glob_to_regex(pattern)) if pattern else None
    files = []
    is_delta = False
    for info in infos:
        relative = info.path[len(base) :].lstrip("/")
        parts = relative.split("/")
        is_delta = is_delta or parts[0] == DELTA_LOG
        hidden = any(part.startswith((".", "_")) for part in parts)
        if info.type != pafs.FileType.File or hidden or not info.size:
            continue
        if matcher is None or matcher.fullmatch(relative):
            files.append((info.path, info.size))
    files.sort()
    paths = tuple(path for path, _ in files)
    sizes = tuple(size for _, size in files)
    return FileListing(location, kind, base, paths, sizes, is_delta and kind == "folder")


def glob_to_regex(pattern: str) -> str:
    """A regular expression for a glob relative to its folder: ``*`` and ``?`` stay within one
    folder, ``**/`` matches any number of folders, ``[...]`` is a character class."""
    out = []
    index = 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            out.append("(?:[^/]+/)*")
            index += 3
        elif pattern.startswith("**", index):
            out.append(".*")
            index += 2
        elif pattern[index] == "*":
            out.append("[^/]*")
            index += 1
        elif pattern[index] == "?":
            out.append("[^/]")
            index += 1
        elif pattern[index] == "[" and "]" in pattern[index + 2 :]:
            end = pattern.index("]", index + 2)
            body = pattern[index + 1 : end]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
            index = end + 1
        else:
            out.append(re.escape(pattern[index]))
            index += 1
    return "".join(out)


def file_info(location: Location, path: str, data: str) -> pafs.FileInfo:
    try:
        return location.filesystem.get_file_info(path)
    except OSError as error:
        raise access_error(error, data, location.scheme) from error


def select_files(location: Location, selector: pafs.FileSelector, data: str) -> list[pafs.FileInfo]:
    try:
        return location.filesystem.get_file_info(selector)
    except OSError as error:
        raise access_error(error, data, location.scheme) from error


def _check_bucket(location: Location, path: str, data: str) -> None:
    """On object stores, a missing bucket reads as a missing key: say which it is."""
    if location.scheme not in {"s3", "s3a", "gs", "gcs", "abfs", "abfss"}:
        return
    bucket = path.split("/", 1)[0]
    if bucket and file_info(location, bucket, data).type == pafs.FileType.NotFound:
        hint = _ACCESS_HINTS[_HINT_FAMILY.get(location.scheme, location.scheme)]
        raise DataError(
            f"Data not found: bucket or container '{bucket}' does not exist or is not visible "
            f"with these credentials; {hint}. Received: data={data!r}"
        )
