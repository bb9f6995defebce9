"""Read a table from a file path (CSV, Parquet, JSON lines) or a built-in dataset name."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from deepspark.errors import DataError

logger = logging.getLogger(__name__)

# name -> default target column
BUILTIN_DATASETS = {"diabetes": "disease_progression", "california": "MedHouseVal"}

_CSV_SUFFIXES = {".csv", ".tsv", ".txt"}
_PARQUET_SUFFIXES = {".parquet", ".pq"}
_JSON_SUFFIXES = {".json", ".jsonl", ".ndjson"}
_SNIFF_BYTES = 8192


def read_table(source: str | Path) -> pd.DataFrame:
    """Read a whole table into pandas.

    Args:
        source: A CSV, Parquet (file or folder) or JSON-lines path, or a built-in dataset name
            (``diabetes``, bundled with scikit-learn; ``california``, downloaded once by
            scikit-learn and cached).

    Returns:
        The table with at least one row.

    Raises:
        DataError: Missing, unreadable, empty or non-tabular input; the message says what to do.
    """
    path = Path(source)
    if not path.exists() and str(source) in BUILTIN_DATASETS:
        return load_builtin(str(source))
    if not path.exists():
        names = ", ".join(BUILTIN_DATASETS)
        raise DataError(
            f"Data not found: no such file, and not a built-in dataset ({names}); "
            f"check the path. Received: data={str(source)!r}"
        )
    frame = _read_path(path)
    if frame.empty or len(frame.columns) == 0:
        raise DataError(
            f"Data file has no rows; give a file with a header and data. Received: {path}"
        )
    return frame


def _read_path(path: Path) -> pd.DataFrame:
    if path.is_dir():
        return _read_with(pd.read_parquet, path, "a Parquet folder")
    try:
        with path.open("rb") as handle:
            head = handle.read(_SNIFF_BYTES)
    except OSError as error:
        raise DataError(
            f"Cannot read data file ({error.strerror}); check its permissions. Received: {path}"
        ) from error
    if not head:
        raise DataError(
            f"Data file is empty (0 bytes); give a file with a header and data. Received: {path}"
        )
    suffix = path.suffix.lower()
    if suffix in _PARQUET_SUFFIXES or head.startswith(b"PAR1"):
        return _read_with(pd.read_parquet, path, "Parquet")
    from deepspark.data._source_formats import check_text  # (it imports this module)

    check_text(head, str(path))
    if suffix in _JSON_SUFFIXES:
        return _read_with(lambda p: pd.read_json(p, lines=True), path, "JSON lines")
    if suffix not in _CSV_SUFFIXES:
        logger.info("Reading %s as CSV (unrecognised suffix %r)", path, suffix)
    separator = "\t" if suffix == ".tsv" else ","
    return _read_with(lambda p: pd.read_csv(p, sep=separator), path, "CSV")


def _read_with(reader, path: Path, kind: str) -> pd.DataFrame:
    try:
        return reader(path)
    except pd.errors.EmptyDataError as error:
        raise DataError(
            f"Data file has no columns or rows; give a file with a header and data. "
            f"Received: {path}"
        ) from error
    except (ValueError, OSError, UnicodeDecodeError, pd.errors.ParserError) as error:
        first_line = (
            str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        )
        raise DataError(
            f"Cannot parse data file as {kind} ({first_line}); check the file's "
            f"format. Received: {path}"
        ) from error
    except Exception as error:  # pyarrow raises its own error types for corrupt Parquet
        if type(error).__module__.startswith("pyarrow"):
            raise DataError(
                f"Cannot parse data file as {kind} ({error}); check the file. Received: {path}"
            ) from error
        raise


def load_builtin(name: str) -> pd.DataFrame:
    """Load a built-in dataset as one frame with its target column.

    Raises:
        DataError: When ``california`` is neither cached nor downloadable.
    """
    from sklearn import datasets

    if name == "diabetes":
        bunch = datasets.load_diabetes(as_frame=True, scaled=False)
    else:
        try:
            bunch = datasets.fetch_california_housing(as_frame=True)
        except OSError as error:
            raise DataError(
                "Dataset 'california' is not cached and cannot be downloaded (offline?); pass a "
                "file instead, e.g. --data california_housing.csv. "
                f"Received: {type(error).__name__}: {error}"
            ) from error
    frame = bunch.frame.rename(columns={"target": BUILTIN_DATASETS[name]})
    return frame
