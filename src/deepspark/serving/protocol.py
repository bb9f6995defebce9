"""MLflow's scoring protocol: request bodies -> tables of columns, predictions -> responses.

Requests (``POST /invocations``), as MLflow's scoring server reads them:

- ``application/json`` with exactly one of ``dataframe_split`` (``{"columns", "data"}``),
  ``dataframe_records`` (a list of row objects), ``instances`` or ``inputs`` (row objects, an
  object of column lists, or rows as lists in the signature's column order); a ``params``
  field is accepted and ignored;
- ``text/csv`` with a header row;
- ``multipart/form-data``: each uploaded file is one row of the model's binary column.

A reader gives a table (column name -> values); ``rows.conform`` then checks it against the
model's signature. The response is ``{"predictions": [row objects]}``, as MLflow returns a
DataFrame result (NaN as ``null``). Errors are ``{"error_code", "message"}`` with one line.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

from deepspark.errors import UserInputError
from deepspark.models.inference import ERROR_COLUMN

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")

Table = dict[str, Sequence[Any]]


class RequestError(UserInputError):
    """A request the server refuses; ``status`` and ``error_code`` go into the response.

    Args:
        message: One line naming the field at fault.
        status: HTTP status (400 bad payload, 413 too large, 415 unknown content type,
            503 busy or not ready, 504 timed out).
        error_code: MLflow-style error code.
        headers: Extra response headers (``Retry-After``).
    """

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        error_code: str = "BAD_REQUEST",
        headers: dict[str, str] | None = None,
    ):
        super().__init__(" ".join(str(message).split()))
        self.status = status
        self.error_code = error_code
        self.headers = headers or {}

    def body(self) -> bytes:
        return json.dumps({"error_code": self.error_code, "message": str(self)}).encode()


def table_from_json(body: bytes, names: Sequence[str]) -> Table:
    """The table of a JSON request in any of MLflow's four formats; ``names`` (the
    signature's input columns) name the values of rows given as lists."""
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RequestError(f"The body is not valid JSON ({error}). Received: body=<json>") from None
    keys = sorted(document) if isinstance(document, dict) else []
    formats = [key for key in keys if key in FORMATS]
    if len(formats) != 1:
        raise RequestError(
            f"The JSON body must have exactly one of the fields {', '.join(FORMATS)}. "
            f"Received: fields={keys if isinstance(document, dict) else type(document).__name__}"
        )
    name = formats[0]
    value = document[name]
    if name == "dataframe_split":
        return _split_table(value)
    if name == "dataframe_records":
        return _records_table(value, name)
    return _instances_table(value, name, names)


def _split_table(value: Any) -> Table:
    if not isinstance(value, dict) or not isinstance(value.get("data"), list):
        raise RequestError(
            "Field 'dataframe_split' must be an object with 'columns' and 'data' (a list of "
            f"rows). Received: dataframe_split={str(value)[:80]}"
        )
    data = value["data"]
    if not data:
        return {}
    names = [str(name) for name in value.get("columns") or range(_width(data[0]))]
    return _rows_table(data, names, "dataframe_split")


def _width(row: Any) -> int:
    return len(row) if isinstance(row, list) else 1


def _rows_table(data: list, names: list[str], field: str) -> Table:
    widths = {_width(row) for row in data}
    if widths != {len(names)} or not all(isinstance(row, list) for row in data):
        raise RequestError(
            f"Rows of '{field}' must be lists with one value per column "
            f"({', '.join(names)}). Received: widths={sorted(widths)}"
        )
    return {name: list(values) for name, values in zip(names, zip(*data, strict=True), strict=True)}


def _records_table(value: Any, name: str) -> Table:
    if not isinstance(value, list) or not all(isinstance(row, dict) for row in value):
        raise RequestError(
            f"Field '{name}' must be a list of row objects. Received: {name}={str(value)[:80]}"
        )
    names = list(dict.fromkeys(key for row in value for key in row))
    return {key: [row.get(key) for row in value] for key in names}


def _instances_table(value: Any, name: str, names: Sequence[str]) -> Table:
    if isinstance(value, dict):
        if all(isinstance(item, list) for item in value.values()):
            return {str(key): item for key, item in value.items()}
        return {str(key): [item] for key, item in value.items()}
    if isinstance(value, list) and value and all(isinstance(row, list) for row in value):
        return _rows_table(value, list(names), name)
    return _records_table(value, name)


def table_from_csv(body: bytes, text_columns: Sequence[str]) -> Table:
    """The table of a ``text/csv`` request (header row first); ``text_columns`` stay text."""
    try:
        frame = pd.read_csv(io.BytesIO(body), dtype=dict.fromkeys(text_columns, object))
    except (ValueError, UnicodeDecodeError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else "empty"
        raise RequestError(
            f"The body is not a CSV table ({first_line}). Received: body=<csv>"
        ) from None
    return {str(name): frame[name] for name in frame.columns}


def table_from_files(
    files: list[bytes], fields: dict[str, str], binary_column: str | None
) -> Table:
    """The table of a multipart upload: one row per file in the model's binary column; other
    form fields are columns (one value for every row)."""
    if files and binary_column is None:
        raise RequestError(
            "This model takes no file uploads; send its columns as JSON or CSV. "
            f"Received: files={len(files)}"
        )
    if not files:
        return {name: [value] for name, value in fields.items()}
    table: Table = {binary_column: files}
    table.update({name: [value] * len(files) for name, value in fields.items()})
    return table


def prediction_columns(result: pd.DataFrame) -> dict[str, list[Any]]:
    """The prediction frame of a batch as plain Python column lists (NaN as ``None``)."""
    return {str(name): [_plain(item) for item in result[name].tolist()] for name in result.columns}


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def predictions_body(columns: dict[str, list[Any]]) -> bytes:
    """MLflow's response for a DataFrame result: ``{"predictions": [row objects]}``."""
    names = list(columns)
    records = [dict(zip(names, row, strict=True)) for row in zip(*columns.values(), strict=True)]
    return json.dumps({"predictions": records}).encode()


def row_error(columns: dict[str, list[Any]], fields: Sequence[str]) -> RequestError | None:
    """A 400 for a request some of whose rows the model could not score (its ``error``
    column, e.g. an image that does not decode), else ``None``."""
    reasons = columns.get(ERROR_COLUMN)
    failed = [(row, reason) for row, reason in enumerate(reasons or ()) if reason is not None]
    if not failed:
        return None
    row, reason = failed[0]
    return RequestError(
        f"Field '{', '.join(fields)}' row {row} could not be scored: {reason}. "
        f"Received: rows_failed={len(failed)}"
    )
