"""Image files as rows ``path``, ``label`` and ``split``: one resolver for every verb.

``resolve_images`` turns what the user gives (a local folder, a glob, one image file, or the same
as a URI on any filesystem pyarrow or fsspec opens: ``s3://bucket/photos/``, ``file:///...``,
``gs://...``) into an ``ImageListing``; train, predict, classify, featurize, explain and Spark
all list images through it, with the same rules. The usual layout, one subfolder per class, at
any depth below it::

    photos/ants/001.jpg           label "ants"
    photos/bees/x/002.png         label "bees" (nested folders belong to their class)
    photos/003.jpg                no label (listed; training leaves it out)

or with the data set's own split, which training then uses instead of drawing one::

    photos/train/ants/001.jpg     split "train", label "ants"
    photos/val/bees/002.jpg       split "val" (``valid``, ``validation`` too), label "bees"
    photos/test/...               split "test"

Files and folders whose names start with ``.`` or ``_`` are left out, as Spark and Hadoop do.
Files are listed by suffix (JPEG, PNG, BMP, GIF, WebP, TIFF, any case); whether a listed file
really is an image is found out when it is decoded (``image_decode``), where a bad one is counted
and skipped, not fatal. Nothing here reads image bytes except ``read_image_bytes``, which reads
one file through its URI's filesystem (so a rank on any host can decode an ``s3://`` image).

Paths in a listing are absolute local paths for local files, else URIs (``s3://bucket/key``).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from pathlib import PurePosixPath
from urllib.parse import unquote, urlsplit

import pandas as pd
import pyarrow.fs as pafs

from deepspark.data._source_files import (
    SCHEME_PATTERN,
    Location,
    file_info,
    first_line,
    glob_to_regex,
    has_glob,
    list_path,
    not_found,
    open_location,
    select_files,
)
from deepspark.errors import DataError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
SPLIT_FOLDERS = {
    "train": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
}
COLUMNS = ["path", "label", "split"]
_SPLIT_ORDER = {"train": 0, "val": 1, "test": 2}
IMAGE_KINDS = "JPEG, PNG, BMP, GIF, WebP or TIFF"


@dataclasses.dataclass(frozen=True)
class ImageListing:
    """Image files resolved once from what the user gave.

    Attributes:
        data: What the user gave, as text.
        kind: ``folder`` (class subfolders: labelled rows), ``files`` (a folder of images
            without class subfolders), ``glob`` or ``file``.
        rows: ``path``, ``label`` and ``split`` (``None`` where there is none), sorted by split,
            label and path.
        remote: Whether the paths are URIs of a filesystem other than this host's.
    """

    data: str
    kind: str
    rows: pd.DataFrame
    remote: bool

    @property
    def paths(self) -> list[str]:
        return self.rows["path"].tolist()

    def labelled(self) -> pd.DataFrame:
        """The rows training uses: those with a class, and inside the folder's own split
        folders when it has them."""
        rows = self.rows[self.rows["label"].notna()]
        if rows["split"].notna().any():
            rows = rows[rows["split"].notna()]
        return rows.reset_index(drop=True)


def resolve_images(data) -> ImageListing | None:
    """List the image files ``data`` names, or ``None`` when it names none (a table, or a local
    path that does not exist: the table reader then says which).

    Args:
        data: A folder, a glob (``photos/*/*.jpg``, ``**`` crosses folders) or an image file,
            as a local path or a URI (``s3://bucket/photos/``, ``file:///...``, any scheme
            pyarrow or fsspec opens).

    Returns:
        The listing: a folder gives every image below it (``folder`` when some are in class
        subfolders, else ``files``); a glob gives its image matches, labelled by their
        folder's name; an image file gives itself.

    Raises:
        DataError: A URI that does not exist, whose storage cannot be reached (missing
            bucket, credentials, endpoint) or whose scheme no filesystem handles (a glob whose
            matches hold no image file is ``None``, not an error).

    Example:
        >>> listing = resolve_images("s3://bucket/photos/")
        >>> listing.kind, listing.rows["label"].unique()
        ('folder', array(['ants', 'bees'], dtype=object))
    """
    if not isinstance(data, str | os.PathLike):
        return None
    text = os.fsdecode(data)
    if not text or text.startswith("delta:"):
        return None
    if has_glob(text) and (is_remote(text) or not os.path.exists(text)):
        return _glob_matches(text)[0]
    location, root = open_image_location(text)
    info = file_info(location, root, text)
    if info.type == pafs.FileType.NotFound:
        if location.scheme == "file":
            return None
        if not isinstance(location.filesystem, pafs.PyFileSystem):
            list_path(text)  # the tables' message: a missing bucket, or a missing key
        raise not_found(text)
    if info.type == pafs.FileType.File:
        if not _is_image_name(root):
            return None
        return _listing(text, "file", location, [(root, None, None)])
    return _resolve_folder(text, location, root.rstrip("/"))


def is_image_folder(path) -> bool:
    """Whether ``path`` (a local folder or a URI) holds images in class subfolders."""
    try:
        listing = resolve_images(path)
    except DataError:
        return False  # the table reader reports unreachable storage in its own words
    return listing is not None and listing.kind == "folder"


def list_image_folder(path) -> pd.DataFrame:
    """Rows ``path``, ``label`` and ``split`` (``None`` without split folders) of the images in
    class subfolders of a local folder or URI, sorted by split, label and path; with split
    folders, images outside them are left out.

    Raises:
        DataError: The folder is missing or unreachable, or holds no class subfolder with
            images.
    """
    listing = resolve_images(path)
    if listing is None or listing.kind == "glob":
        raise DataError(
            f"Image folder not found; give a folder with one subfolder per class. "
            f"Received: data={str(path)!r}"
        )
    rows = listing.labelled() if listing.kind == "folder" else listing.rows.iloc[:0]
    if rows.empty:
        raise DataError(
            "No images found in class subfolders; lay the folder out as <folder>/<class>/<image> "
            f"({IMAGE_KINDS}). Received: data={str(path)!r}"
        )
    return rows


def is_image_glob(pattern) -> bool:
    """Whether ``pattern`` is a glob (``photos/*.jpg``, ``s3://bucket/*/*.png``) that is not a
    table's: it matches image files, or nothing at all."""
    text = os.fsdecode(pattern) if isinstance(pattern, str | os.PathLike) else ""
    if not has_glob(text):
        return False
    try:
        listing, others = _glob_matches(text)
    except DataError:
        return True  # list_image_glob says what is wrong
    return listing is not None or others == 0


def list_image_glob(pattern) -> pd.DataFrame:
    """Rows ``path``, ``label`` (each file's folder name) and ``split`` (``None``) for the image
    files matching a glob, local or a URI; ``**`` matches any depth.

    Raises:
        DataError: Nothing matches, or nothing that matches is an image file.
    """
    text = os.fsdecode(pattern)
    listing, others = _glob_matches(text)
    if listing is None:
        raise DataError(
            f"No image files match the pattern ({others} other files do); give a glob of "
            f"{IMAGE_KINDS} files. Received: data={text!r}"
        )
    return listing.rows


def open_image_location(text: str) -> tuple[Location, str]:
    """The filesystem of a local path or URI and the path inside it: pyarrow's filesystems,
    else fsspec's (``memory://``, ``gcs://`` through gcsfs...) when it knows the scheme.

    Raises:
        DataError: No filesystem for the scheme, or storage that cannot be reached.
    """
    try:
        return open_location(text)
    except DataError:
        opened = _fsspec_location(text)
        if opened is None:
            raise
        return opened


def read_image_bytes(uri: str) -> bytes:
    """The bytes of one file named by a URI (``s3://bucket/key``, ``file:///...``) or a local
    path, through its filesystem (opened once per bucket or host and reused).

    Raises:
        FileNotFoundError: No such file.
        OSError: The storage could not be read.
        DataError: No filesystem for the scheme, or a missing bucket.
    """
    match = SCHEME_PATTERN.match(uri)
    if match is None or match.group(1).lower() == "file":
        local = unquote(urlsplit(uri).path) if match else uri
        with open(local, "rb") as handle:
            return handle.read()
    parts = urlsplit(uri)
    scheme = match.group(1)
    filesystem, root = _root_filesystem(scheme, parts.netloc, os.environ.get("AWS_ENDPOINT_URL"))
    path = root + uri[len(f"{scheme}://{parts.netloc}") :]
    try:
        with filesystem.open_input_stream(path) as stream:
            return stream.read()
    except FileNotFoundError as error:
        raise FileNotFoundError(2, "No such file", uri) from error


def is_remote(text: str) -> bool:
    """Whether a path or URI names a filesystem other than this host's."""
    match = SCHEME_PATTERN.match(str(text))
    return match is not None and match.group(1).lower() != "file"


@functools.lru_cache(maxsize=32)
def _root_filesystem(scheme: str, netloc: str, endpoint: str | None):
    """The filesystem of ``scheme://netloc`` and its root path (opening an S3 filesystem asks
    the bucket's region: once per bucket, not once per image)."""
    del endpoint  # part of the cache key: a new endpoint is a new filesystem
    location, root = open_image_location(f"{scheme}://{netloc}")
    return location.filesystem, root.rstrip("/")


def _fsspec_location(text: str) -> tuple[Location, str] | None:
    """The location of a URI through fsspec; ``None`` when fsspec does not know its scheme."""
    match = SCHEME_PATTERN.match(text)
    try:
        import fsspec
        from pyarrow.fs import FSSpecHandler, PyFileSystem
    except ImportError:
        return None
    scheme = match.group(1).lower() if match else ""
    if scheme not in fsspec.available_protocols():
        return None
    try:
        filesystem, path = fsspec.core.url_to_fs(text)
    except (ImportError, ValueError, OSError) as error:
        raise DataError(
            f"Cannot open the images' filesystem ({first_line(error)}); install the package "
            f"fsspec names for '{scheme}://', or check the URI. Received: data={text!r}"
        ) from error
    location = Location(PyFileSystem(FSSpecHandler(filesystem)), scheme, "")
    return location, path if path.startswith("/") else "/" + path


def _select(location: Location, base: str, data: str, *, recursive: bool) -> list:
    selector = pafs.FileSelector(base, recursive=recursive, allow_not_found=True)
    return select_files(location, selector, data)


def _resolve_folder(text: str, location: Location, root: str) -> ImageListing | None:
    relatives = [
        relative
        for info in _select(location, root, text, recursive=True)
        if info.type == pafs.FileType.File
        and _is_image_name(info.path)
        and not _hidden(relative := info.path[len(root) :].lstrip("/"))
    ]
    if not relatives:
        return None
    splits = {
        relative.split("/", 1)[0].lower()
        for relative in relatives
        if relative.split("/", 1)[0].lower() in SPLIT_FOLDERS and "/" in relative
    }
    has_splits = any(SPLIT_FOLDERS[name] == "train" for name in splits)
    rows = [
        (f"{root}/{relative}", *_label_and_split(relative, has_splits)) for relative in relatives
    ]
    kind = "folder" if any(label is not None for _, label, _ in rows) else "files"
    return _listing(text, kind, location, rows)


def _label_and_split(relative: str, has_splits: bool) -> tuple[str | None, str | None]:
    parts = relative.split("/")
    if has_splits and len(parts) > 1 and parts[0].lower() in SPLIT_FOLDERS:
        return (parts[1] if len(parts) > 2 else None), SPLIT_FOLDERS[parts[0].lower()]
    return (parts[0] if len(parts) > 1 else None), None


def _glob_matches(text: str) -> tuple[ImageListing | None, int]:
    """The image files a glob matches (``None`` when none) and how many other files match."""
    match = SCHEME_PATTERN.match(text)
    start = match.end() if match else 0
    wildcards = "*[" if match else "*?["
    first_wildcard = min(text.index(c, start) for c in wildcards if c in text[start:])
    cut = text.rfind("/", start, first_wildcard) + 1
    location, base = open_image_location(text[:cut] or ".")
    base = base.rstrip("/")
    pattern = text[cut:]
    matcher = glob_to_regex(pattern)
    recursive = "/" in pattern or "**" in pattern
    compiled = re.compile(matcher)
    matched = [
        info.path
        for info in _select(location, base, text, recursive=recursive)
        if info.type == pafs.FileType.File
        and compiled.fullmatch(info.path[len(base) :].lstrip("/"))
    ]
    images = [path for path in matched if _is_image_name(path)]
    if not images:
        return None, len(matched)
    rows = [(path, PurePosixPath(path).parent.name or None, None) for path in images]
    return _listing(text, "glob", location, rows), len(matched) - len(images)


def _listing(text: str, kind: str, location: Location, rows: list) -> ImageListing:
    frame = pd.DataFrame(
        [(location.to_uri(path), label, split) for path, label, split in rows],
        columns=COLUMNS,
        dtype=object,
    )
    order = frame["split"].map(lambda split: _SPLIT_ORDER.get(split, 3))
    labels = frame["label"].fillna("")
    frame = frame.assign(_order=order, _label=labels)
    frame = frame.sort_values(["_order", "_label", "path"], kind="stable")
    frame = frame.drop(columns=["_order", "_label"]).reset_index(drop=True)
    return ImageListing(data=text, kind=kind, rows=frame, remote=location.scheme != "file")


def _is_image_name(path: str) -> bool:
    return PurePosixPath(path).suffix.lower() in IMAGE_SUFFIXES


def _hidden(relative: str) -> bool:
    return any(part.startswith((".", "_")) for part in relative.split("/"))
