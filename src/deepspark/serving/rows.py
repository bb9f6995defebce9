"""A request's rows checked against the model's input signature, as NumPy columns.

Each request is conformed on its own before it joins a batch (so one bad request fails alone),
without pandas: per request, building a DataFrame costs more than the model call a batch
shares. The batcher concatenates the columns of many requests and builds one frame per batch.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from deepspark.data.image_inputs import PATH_COLUMN
from deepspark.data.schema import numeric_values
from deepspark.errors import DataError
from deepspark.serving.protocol import RequestError

NUMERIC_TYPES = ("double", "float", "long", "integer")


@dataclasses.dataclass(frozen=True)
class InputColumn:
    """One column of the model's input signature: its name, MLflow type and whether required."""

    name: str
    type: str
    required: bool


def input_columns(signature) -> tuple[InputColumn, ...]:
    """The input columns of an MLflow ``ModelSignature`` (a column-based schema)."""
    return tuple(
        InputColumn(str(spec.name), spec.type.name, bool(spec.required))
        for spec in signature.inputs.inputs
    )


@dataclasses.dataclass(frozen=True)
class Rows:
    """Conformed rows of one request: the model's columns present in it, typed.

    Attributes:
        columns: ``name -> 1-D array`` (float64 for numbers, object for text and bytes).
        count: Number of rows.
    """

    columns: dict[str, np.ndarray]
    count: int

    def __len__(self) -> int:
        return self.count

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.columns)

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.columns, copy=False)

    @classmethod
    def concat(cls, parts: Sequence[Rows]) -> Rows:
        """One ``Rows`` of ``parts`` in order (all with the same columns)."""
        if len(parts) == 1:
            return parts[0]
        columns = {
            name: np.concatenate([part.columns[name] for part in parts]) for name in parts[0].names
        }
        return cls(columns, sum(part.count for part in parts))


Table = Mapping[str, Sequence[Any]]


def conform(
    table: Table, columns: tuple[InputColumn, ...], *, allow_paths: Sequence[str] = ()
) -> Rows:
    """The model's columns of ``table`` (column name -> values), typed as its signature says.

    Raises:
        RequestError: Columns of different lengths, a missing required column, no input column
            at all, text in a numeric column, a binary value that is not base64, or a file path
            the server refuses (any, unless ``allow_paths`` names folders; then any outside
            them, after ``..`` and symbolic links are resolved).
    """
    names = [str(name) for name in table.keys()]
    lengths = {len(values) for values in table.values()}
    if len(lengths) > 1:
        raise RequestError(f"Columns must have one value per row. Received: lengths={lengths}")
    count = lengths.pop() if lengths else 0
    if count == 0:
        return Rows({}, 0)
    by_name = {str(name): values for name, values in table.items()}
    present = [column for column in columns if column.name in by_name]
    missing = [column.name for column in columns if column.required and column not in present]
    if missing or not present:
        wanted = [column.name for column in columns if column.required or not missing]
        raise RequestError(
            f"Missing input column(s) {', '.join(missing) or ' or '.join(wanted)}; the model "
            f"reads {', '.join(c.name for c in columns)}. Received: columns={names}"
        )
    typed = {column.name: _typed(by_name[column.name], column, allow_paths) for column in present}
    return Rows(typed, count)


def _typed(values: Sequence[Any], column: InputColumn, allow_paths: Sequence[str]) -> np.ndarray:
    if column.type in NUMERIC_TYPES:
        return _numeric(values, column.name)
    objects = _objects(values)
    if column.type == "binary":
        return _binary(objects, column.name)
    if column.name == PATH_COLUMN:
        for row, value in enumerate(objects):
            if value is not None:
                objects[row] = allowed_path(value, allow_paths, row)
    return objects


def allowed_path(value: Any, allow_paths: Sequence[str], row: int = 0) -> str:
    """``value`` as the absolute path it names when that lies inside a folder of
    ``allow_paths`` (``..`` and symbolic links resolved first); URIs (``s3://``, ``http://``)
    only under an allowed URI prefix.

    Raises:
        RequestError: No folder is allowed, or the path lies outside every allowed one.
    """
    import os
    import posixpath

    text = str(value)
    if not allow_paths:
        raise RequestError(
            f"Column '{PATH_COLUMN}' names files on the server, which it reads only from "
            "folders given with --allow-paths; send the image bytes as base64 in 'image' "
            f"instead. Received: {PATH_COLUMN}={text!r}"[:300]
        )
    if "://" in text:
        scheme, _, rest = text.partition("://")
        resolved = f"{scheme.lower()}://{posixpath.normpath(rest)}"
        inside = any(
            "://" in folder and (resolved + "/").startswith(folder.rstrip("/") + "/")
            for folder in allow_paths
        )
    else:
        resolved = os.path.realpath(text)
        inside = any(
            "://" not in folder
            and os.path.commonpath([resolved, os.path.realpath(folder)]) == os.path.realpath(folder)
            for folder in allow_paths
        )
    if not inside:
        raise RequestError(
            f"Column '{PATH_COLUMN}' row {row} names a file outside the folders this server "
            f"reads ({', '.join(allow_paths)}); send the image bytes as base64 in 'image', or "
            f"start the server with --allow-paths for its folder. Received: "
            f"{PATH_COLUMN}={text!r}"[:400]
        )
    return resolved


def _numeric(values: Sequence[Any], name: str) -> np.ndarray:
    # NumPy parses text too ("nan", " 1 "): text takes the one check pandas predict uses.
    if not isinstance(values, pd.Series) and not any(isinstance(v, str | bytes) for v in values):
        try:  # the common case, numbers and nulls, in one NumPy call
            parsed = np.asarray(values, dtype=np.float64)
            if parsed.ndim == 1:
                return parsed
        except (ValueError, TypeError):
            pass
    try:
        return numeric_values(values, name, training=False)
    except DataError as error:
        raise RequestError(str(error)) from None


def _objects(values: Sequence[Any]) -> np.ndarray:
    objects = np.empty(len(values), dtype=object)
    for row, value in enumerate(values):
        objects[row] = None if _missing(value) else value
    return objects


def _binary(objects: np.ndarray, name: str) -> np.ndarray:
    for row, value in enumerate(objects):
        if value is None or isinstance(value, bytes):
            continue
        if isinstance(value, bytearray | memoryview):
            objects[row] = bytes(value)
            continue
        objects[row] = _base64(value, row, name)
    return objects


def _base64(value: Any, row: int, name: str) -> bytes:
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            pass
    raise RequestError(
        f"Column '{name}' row {row} is not base64-encoded bytes; send the file's bytes "
        f"base64-encoded. Received: {name}={str(value)[:40]!r}"
    )


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA
