"""Image folders as rows: ``path``, ``label`` (the class folder's name) and ``split``.

The usual layout, one subfolder per class, at any depth below it::

    photos/ants/001.jpg           label "ants"
    photos/bees/x/002.png         label "bees" (nested folders belong to their class)

or with the data set's own split, which training then uses instead of drawing one::

    photos/train/ants/001.jpg     split "train", label "ants"
    photos/val/bees/002.jpg       split "val" (``valid``, ``validation`` too), label "bees"
    photos/test/...               split "test"

Files are listed by suffix (JPEG, PNG, BMP, GIF, WebP, TIFF, any case); whether a listed file
really is an image is found out when it is decoded (``image_decode``), where a bad one is counted
and skipped, not fatal. Nothing here reads image bytes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from deepspark.errors import DataError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
SPLIT_FOLDERS = {
    "train": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
}


def is_image_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder with at least one image file below a subfolder."""
    root = Path(path)
    if not root.is_dir():
        return False
    return any(next(_image_files(child), None) is not None for child in _subfolders(root))


def list_image_folder(path: str | Path) -> pd.DataFrame:
    """Rows ``path`` (absolute), ``label`` and ``split`` (``None`` without split folders), sorted
    by split, label and path.

    Raises:
        DataError: The folder is missing, or holds no class subfolder with images.
    """
    root = Path(path)
    if not root.is_dir():
        raise DataError(
            f"Image folder not found; give a folder with one subfolder per class. "
            f"Received: data={str(path)!r}"
        )
    split_folders = {
        child: SPLIT_FOLDERS[child.name.lower()]
        for child in _subfolders(root)
        if child.name.lower() in SPLIT_FOLDERS
    }
    rows: list[tuple[str, str, str | None]] = []
    if split_folders and "train" in split_folders.values():
        for folder, split in split_folders.items():
            rows += _class_rows(folder, split)
    else:
        rows += _class_rows(root, None)
    if not rows:
        raise DataError(
            "No images found in class subfolders; lay the folder out as <folder>/<class>/<image> "
            f"(JPEG, PNG, BMP, GIF, WebP or TIFF). Received: data={str(path)!r}"
        )
    frame = pd.DataFrame(rows, columns=["path", "label", "split"])
    order = frame["split"].fillna("").map({"train": 0, "val": 1, "test": 2, "": 3})
    frame = frame.assign(_order=order).sort_values(["_order", "label", "path"], kind="stable")
    return frame.drop(columns="_order").reset_index(drop=True)


def is_image_glob(pattern: str | Path) -> bool:
    """Whether ``pattern`` is a glob (``photos/*/*.jpg``) rather than a path."""
    return any(character in str(pattern) for character in "*?[")


def list_image_glob(pattern: str | Path) -> pd.DataFrame:
    """Rows ``path``, ``label`` (each file's folder name) and ``split`` (``None``) for the image
    files matching a glob; ``**`` matches any depth.

    Raises:
        DataError: Nothing matches, or nothing that matches is an image file.
    """
    import glob

    matches = sorted(Path(name) for name in glob.glob(str(pattern), recursive=True))
    images = [path for path in matches if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()]
    if not images:
        raise DataError(
            f"No image files match the pattern ({len(matches)} other files do); give a glob of "
            f"JPEG, PNG, BMP, GIF, WebP or TIFF files. Received: data={str(pattern)!r}"
        )
    rows = [(str(path.resolve()), path.parent.name, None) for path in images]
    return pd.DataFrame(rows, columns=["path", "label", "split"])


def _class_rows(folder: Path, split: str | None) -> list[tuple[str, str, str | None]]:
    rows = []
    for class_folder in _subfolders(folder):
        for image in _images_below(class_folder):
            rows.append((str(image.resolve()), class_folder.name, split))
    return rows


def _subfolders(folder: Path) -> list[Path]:
    return sorted(
        child for child in folder.iterdir() if child.is_dir() and not child.name.startswith(".")
    )


def _images_below(folder: Path) -> list[Path]:
    return sorted(_image_files(folder))


def _image_files(folder: Path) -> Iterator[Path]:
    """Image files at any depth below ``folder``, hidden files and folders left out (lazily)."""
    for path in folder.rglob("*"):
        hidden = any(part.startswith(".") for part in path.relative_to(folder).parts)
        if path.suffix.lower() in IMAGE_SUFFIXES and not hidden and path.is_file():
            yield path
