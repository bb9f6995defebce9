"""Small image folders for tests: generated (learnable in a few epochs) or real (CIFAR-10 JPEGs
from ../shared), with the mess real folders have (a non-image file, a space in a name)."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from tests.conftest import SHARED_DATA

CIFAR_ARCHIVE = SHARED_DATA / "images" / "cifar10_test_jpg.tar.gz"
HYMENOPTERA = SHARED_DATA / "images" / "hymenoptera"
PHOTOS = SHARED_DATA / "images" / "photos"


def pattern(kind: str, rng: np.random.Generator, size: int = 16) -> np.ndarray:
    """A noisy RGB image of horizontal stripes, vertical stripes or a bright centre."""
    image = rng.integers(0, 60, size=(size, size, 3)).astype(np.int32)
    if kind == "horizontal":
        image[::4] += 180
    elif kind == "vertical":
        image[:, ::4] += 180
    else:
        quarter = size // 4
        image[quarter:-quarter, quarter:-quarter] += 180
    return np.clip(image, 0, 255).astype(np.uint8)


def pattern_folder(
    root: Path,
    *,
    classes=("horizontal", "vertical"),
    per_class: int = 30,
    size: int = 16,
    mess: bool = True,
    seed: int = 0,
) -> Path:
    """``root/<class>/<n>.png`` (some JPEG, some grayscale); with ``mess``, a text file named
    ``.jpg`` and a file name with a space."""
    rng = np.random.default_rng(seed)
    for kind in classes:
        folder = root / kind
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            image = Image.fromarray(pattern(kind, rng, size))
            if index % 5 == 0:
                image.save(folder / f"{index:03d}.jpg", quality=95)
            else:
                image.save(folder / f"{index:03d}.png")
    if mess:
        (root / classes[0] / "notes.jpg").write_text("not an image")
        Image.fromarray(pattern(classes[1], rng, size)).save(root / classes[1] / "with space.png")
    return root


def cifar_folder(root: Path, *, classes=None, per_class: int | None = None) -> Path:
    """The CIFAR-10 test JPEGs (``root/test/<class>/NNNN.jpg``), optionally a subset."""
    with tarfile.open(CIFAR_ARCHIVE) as archive:
        members = []
        for member in archive.getmembers():
            parts = Path(member.name).parts
            if not member.isfile() or len(parts) < 3:
                continue
            label, name = parts[-2], parts[-1]
            if classes is not None and label not in classes:
                continue
            if per_class is not None and int(Path(name).stem) >= per_class:
                continue
            members.append(member)
        archive.extractall(root, members=members, filter="data")
    return root / "cifar10_test_jpg" / "test"
