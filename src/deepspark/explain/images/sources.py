"""Which images an explanation covers, in which order, and the background images.

Image files (a folder, searched recursively; a glob; one file) are explained in path order,
the order Spark's ``binaryFile`` source gives once sorted, so ``row_id`` means the same image in
both. As in Hadoop, files and folders whose names start with ``.`` or ``_`` are skipped. A table
(a file, or a pandas DataFrame) with a ``path`` or ``image`` column keeps its own row order.

Background images are sampled (seeded) from every image of the data, not only the explained
ones, by position, so the Spark job draws the same images.
"""

from __future__ import annotations

import dataclasses
import glob
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from deepspark.data.image_inputs import PATH_COLUMN, decode_rows, image_column
from deepspark.data.image_sources import IMAGE_SUFFIXES
from deepspark.errors import DataError

logger = logging.getLogger(__name__)

_GLOB_CHARACTERS = set("*?[")


def is_image_source(data) -> bool:
    """Whether ``data`` (a path or glob) names image files rather than a table."""
    if isinstance(data, pd.DataFrame) or hasattr(data, "sparkSession"):
        return False
    text = str(data)
    path = Path(text)
    if path.is_dir():
        from deepspark.data.image_sources import is_image_folder

        return is_image_folder(path) or bool(_image_files(path))
    return Path(text.rstrip("/")).suffix.lower() in IMAGE_SUFFIXES


def is_file_source(data) -> bool:
    """Whether ``data`` is read as image files (folder, glob or one image), not as a table."""
    if isinstance(data, pd.DataFrame) or hasattr(data, "sparkSession"):
        return False
    text = str(data)
    return (
        Path(text).is_dir()
        or bool(_GLOB_CHARACTERS & set(text))
        or Path(text).suffix.lower() in IMAGE_SUFFIXES
    )


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
        from deepspark.data.readers import read_table

        frame = read_table(data)
    image_column(frame, model.schema)
    if frame.empty:
        raise DataError("No images to explain: the table has no rows. Received: rows=0")
    return frame


def list_image_files(data) -> list[str]:
    """Image files of a folder (recursively), a glob or a file, as sorted absolute paths.

    Raises:
        DataError: Nothing matches.
    """
    text = str(data)
    path = Path(text)
    if path.is_dir():
        files = _image_files(path)
    elif _GLOB_CHARACTERS & set(text):
        files = [
            Path(name)
            for name in glob.glob(text, recursive=True)
            if Path(name).is_file() and Path(name).suffix.lower() in IMAGE_SUFFIXES
        ]
    elif path.is_file():
        files = [path]
    else:
        raise DataError(f"Image file not found; check the path. Received: data={text!r}")
    if not files:
        raise DataError(
            "No image files found (JPEG, PNG, BMP, GIF, WebP, TIFF); check the path or glob. "
            f"Received: data={text!r}"
        )
    return sorted(str(file.absolute()) for file in files)


def _image_files(root: Path) -> list[Path]:
    return [
        file
        for file in root.rglob("*")
        if file.suffix.lower() in IMAGE_SUFFIXES
        and file.is_file()
        and not any(part.startswith((".", "_")) for part in file.relative_to(root).parts)
    ]


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
