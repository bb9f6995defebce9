"""Image inputs: which column of a frame holds a model's images, and how rows become pixels.

An image model's raw input is one image per row, as encoded bytes (a binary column: ``image``,
or ``content`` as Spark's ``binaryFile`` source names it) or as a file path (``path``). The same
rules pick that column for training tables, ``predict``, MLflow pyfunc and Spark alike.
Everything numeric happens inside the model; here images are only decoded to uint8 pixels, in
chunks bounded by pixels, so that scoring a large frame never holds it all decoded.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deepspark.data.image_decode import DecodedImages, decode_images
from deepspark.data.image_sources import IMAGE_SUFFIXES
from deepspark.data.schema import IMAGE, FeatureSchema, FeatureSpec, ImageSpec
from deepspark.errors import UserInputError

IMAGE_COLUMN = "image"
PATH_COLUMN = "path"
BINARY_FILE_COLUMN = "content"  # Spark's binaryFile source
# Decoded pixels (height x width) per forward chunk: about 128 MB of float32 activations per
# 32-filter layer, whatever the image size (1,024 images of 32x32, 16 of 224x224).
PIXELS_PER_CHUNK = 2**20
MAX_CHUNK_ROWS = 4096
_IMAGE_SHARE = 0.9  # a text column is a path column when this share of values name images


def image_schema(
    spec: ImageSpec,
    *,
    target: str,
    task: str,
    class_labels: Sequence[Any],
    column: str = IMAGE_COLUMN,
) -> FeatureSchema:
    """The schema of an image model trained on ``column`` (bytes or paths)."""
    feature = FeatureSpec(name=column, kind=IMAGE, dtype="binary")
    return FeatureSchema(
        features=(feature,),
        target=target,
        task=task,
        class_labels=tuple(class_labels),
        image=spec,
    )


def chunk_rows(spec: ImageSpec) -> int:
    """Images per forward chunk: a power of two holding about ``PIXELS_PER_CHUNK`` pixels."""
    rows = max(1, PIXELS_PER_CHUNK // (spec.height * spec.width))
    return min(MAX_CHUNK_ROWS, 1 << (rows.bit_length() - 1))


def _is_binary(value: Any) -> bool:
    return isinstance(value, bytes | bytearray | memoryview)


def _first_value(column: pd.Series) -> Any:
    present = column.dropna()
    return present.iloc[0] if len(present) else None


def find_image_column(frame: pd.DataFrame, *, exclude: Sequence[str] = ()) -> str | None:
    """The column of a training table that holds images, or ``None`` (a plain table).

    A binary column (encoded images), else a text column whose values are image file names
    (``.jpg``, ``.png``...), ``image`` and ``path`` first.
    """
    names = [str(name) for name in frame.columns if str(name) not in exclude]
    preferred = [name for name in (IMAGE_COLUMN, BINARY_FILE_COLUMN, PATH_COLUMN) if name in names]
    ordered = preferred + [name for name in names if name not in preferred]
    for name in ordered:
        if _is_binary(_first_value(frame[name])):
            return name
    for name in ordered:
        values = frame[name].dropna()
        if len(values) and values.map(lambda value: isinstance(value, str)).all():
            suffixes = values.map(lambda value: Path(value).suffix.lower())
            if suffixes.isin(IMAGE_SUFFIXES).mean() >= _IMAGE_SHARE:
                return name
    return None


def image_column(frame: pd.DataFrame, schema: FeatureSchema) -> str:
    """The column of ``frame`` an image model reads: its training column's name, ``image`` or
    ``content`` (bytes), or ``path``.

    Raises:
        UserInputError: No such column, or one holding neither bytes nor paths.
    """
    names = [str(name) for name in frame.columns]
    candidates = dict.fromkeys(
        [schema.feature_names[0], IMAGE_COLUMN, BINARY_FILE_COLUMN, PATH_COLUMN]
    )
    present = [name for name in candidates if name in names]
    binary = [name for name in present if _is_binary(_first_value(frame[name]))]
    found = (binary or present or [None])[0]
    if found is None:
        raise UserInputError(
            "This model takes images: give a binary column 'image' (encoded image bytes) or a "
            f"text column 'path' (image files), or an image folder. Received: columns={names}"
        )
    value = _first_value(frame[found])
    if value is not None and not (_is_binary(value) or isinstance(value, str)):
        raise UserInputError(
            f"Column '{found}' must hold encoded image bytes or file paths, not "
            f"{type(value).__name__} values; give a binary or text column. "
            f"Received: {found}={value!r}"[:300]
        )
    return found


def image_sources(frame: pd.DataFrame, schema: FeatureSchema) -> list:
    """One source per row (bytes, a path, or ``None`` for a missing value)."""
    column = frame[image_column(frame, schema)]
    return [None if _missing(value) else value for value in column.tolist()]


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def decode_rows(sources: Sequence, spec: ImageSpec, *, on_bad: str = "skip") -> DecodedImages:
    """Decode ``sources`` to ``spec``'s size and channels (bad ones counted, see
    ``decode_images``)."""
    return decode_images(sources, size=spec.size, channels=spec.channels, on_bad=on_bad)


def chunks(count: int, rows: int) -> Iterator[slice]:
    """Consecutive slices of at most ``rows`` covering ``range(count)``."""
    for start in range(0, count, rows):
        yield slice(start, min(count, start + rows))


@dataclasses.dataclass(frozen=True)
class ImageFiles:
    """Images that stay encoded (too many to hold decoded): decoded a batch at a time.

    Attributes:
        sources: One path or bytes value per row, known to decode.
        spec: Size and channels to decode to.
    """

    sources: tuple
    spec: ImageSpec

    def __len__(self) -> int:
        return len(self.sources)

    def pixels(self, rows: slice | np.ndarray) -> np.ndarray:
        """The decoded images of ``rows`` (uint8, NHWC)."""
        indices = range(len(self))[rows] if isinstance(rows, slice) else rows
        selected = [self.sources[index] for index in indices]
        decoded = decode_rows(selected, self.spec, on_bad="fail")
        return decoded.images
