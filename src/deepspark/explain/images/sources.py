"""Which images an explanation covers, in which order, and the background images.

Image files (a folder, searched recursively; a glob; one file; local or a URI such as
``s3://bucket/photos/``), listed by ``data.image_sources.resolve_images`` as every verb lists
them, are explained in path order, the order Spark's reader gives once sorted, so ``row_id``
means the same image in both. As in Hadoop, files and folders whose names start with ``.`` or
``_`` are skipped. A table (a file, folder or URI of tables, or a pandas DataFrame) with a
``path`` or ``image`` column keeps its own row order.

Background images are sampled (seeded) from every image of the data, not only the explained
ones, by position, so the Spark job draws the same images.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import PurePosixPath

import numpy as np
import pandas as pd

from deepspark.data.image_inputs import PATH_COLUMN, decode_rows, image_column
from deepspark.data.image_sources import IMAGE_SUFFIXES, has_glob, is_remote, resolve_images
from deepspark.errors import DataError

logger = logging.getLogger(__name__)


def is_image_source(data) -> bool:
    """Whether ``data`` (a path, glob or URI) names image files rather than a table."""
    if not isinstance(data, str | os.PathLike):
        return False
    if _has_image_suffix(os.fsdecode(data)):
        return True
    try:
        return resolve_images(data) is not None
    except DataError:
        return False  # the table reader says what is wrong with it


def is_file_source(data) -> bool:
    """Whether ``data`` is read as image files (folder, glob, one image, or a URI of them),
    not as a table."""
    if not isinstance(data, str | os.PathLike):
        return False
    text = os.fsdecode(data)
    if has_glob(text) or _has_image_suffix(text):
        return True
    if not is_remote(text) and os.path.isdir(text):
        return True  # a folder without images: list_image_files says so
    return is_image_source(text)


def image_rows(model, data) -> pd.DataFrame:
    """The rows to explain: a ``path`` column for image files, or the table as given.

    Raises:
        DataError: No images found, or a missing file.
        UserInputError: A table without a column of images (``image``, ``content``, ``path``).
    """
    if isinstance(data, pd.DataFrame):
        frame = data.reset_index(drop=True)
    elif is_file_source(data):
        frame = pd.DataFrame({PATH_COLUMN: list_image_files(data)})
    else:
        from deepspark.data.sources import resolve_source

        frame = resolve_source(data).read_pandas()
    image_column(frame, model.schema)
    if frame.empty:
        raise DataError("No images to explain: the table has no rows. Received: rows=0")
    return frame


def list_image_files(data) -> list[str]:
    """Image files of a folder (recursively), a glob or a file, local or a URI
    (``data.image_sources.resolve_images``), as sorted absolute paths or URIs.

    Raises:
        DataError: Nothing matches.
    """
    text = os.fsdecode(data)
    listing = resolve_images(text)
    if listing is not None:
        return sorted(listing.paths)
    if not is_remote(text) and not os.path.exists(text) and not has_glob(text):
        raise DataError(f"Image file not found; check the path. Received: data={text!r}")
    raise DataError(
        "No image files found (JPEG, PNG, BMP, GIF, WebP, TIFF); check the path or glob. "
        f"Received: data={text!r}"
    )


def _has_image_suffix(text: str) -> bool:
    return PurePosixPath(text.rstrip("/")).suffix.lower() in IMAGE_SUFFIXES


def background_positions(total: int, size: int, seed: int) -> np.ndarray:
    """Sorted positions of the background images among ``total`` (at most all of them)."""
    count = min(int(size), int(total))
    if count < size:
        logger.info("background: the data has %d images, fewer than %d: using all", total, size)
    return np.sort(np.random.default_rng(seed).choice(total, size=count, replace=False))


@dataclasses.dataclass(frozen=True)
class BackgroundImages:
    """Decoded background images and where they came from."""

    pixels: np.ndarray
    source: str


def decode_background(model, rows: pd.DataFrame) -> BackgroundImages:
    """Decode the sampled rows (bad images left out)."""
    column = image_column(rows, model.schema)
    values = [None if value is None else value for value in rows[column].tolist()]
    decoded = decode_rows(values, model.schema.image)
    source = f"the explained data's images ({len(decoded.images)} sampled by position)"
    logger.info("background: %d images decoded (%d bad)", len(decoded.images), decoded.bad_count)
    return BackgroundImages(decoded.images, source)


NO_BACKGROUND = "none (the method needs no background)"
