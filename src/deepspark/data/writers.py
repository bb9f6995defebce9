"""Write a table to a file atomically: a failure never leaves a partial output behind."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from deepspark._atomic import atomic_path
from deepspark.errors import UserInputError

_WRITERS = {
    ".csv": lambda frame, path: frame.to_csv(path, index=False),
    ".parquet": lambda frame, path: frame.to_parquet(path, index=False),
    ".pq": lambda frame, path: frame.to_parquet(path, index=False),
    ".json": lambda frame, path: frame.to_json(path, orient="records", lines=True),
    ".jsonl": lambda frame, path: frame.to_json(path, orient="records", lines=True),
}


def check_output_path(path: str | Path, *, overwrite: bool) -> Path:
    """Validate an output path before any work is done.

    Raises:
        UserInputError: Existing output without ``overwrite``, unknown suffix, missing folder.
    """
    path = Path(path)
    if path.suffix.lower() not in _WRITERS:
        raise UserInputError(
            f"Unknown output format '{path.suffix}'; use one of "
            f"{', '.join(sorted(_WRITERS))}. Received: output={str(path)!r}"
        )
    if path.exists() and not overwrite:
        raise UserInputError(
            f"Output already exists; pass --overwrite to replace it. Received: output={str(path)!r}"
        )
    if not path.parent.exists():
        raise UserInputError(
            f"Output folder does not exist; create it first. Received: output={str(path)!r}"
        )
    return path


def write_table(frame: pd.DataFrame, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``frame`` by suffix (CSV, Parquet, JSON lines) through a temporary file + rename."""
    path = check_output_path(path, overwrite=overwrite)
    with atomic_path(path) as temporary:
        _WRITERS[path.suffix.lower()](frame, temporary)
    return path
