"""Scoring a table with pandas: input columns + prediction column(s)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from deepspark.data.image_sources import is_image_folder, list_image_folder
from deepspark.data.readers import read_table
from deepspark.data.writers import check_output_path, write_table
from deepspark.errors import UserInputError
from deepspark.tracking.model import load_model


def predict(
    model_uri: str,
    data: str | Path | pd.DataFrame,
    *,
    output: str | Path | None = None,
    overwrite: bool = False,
) -> pd.DataFrame:
    """Score a table: the input columns (extras pass through) followed by the predictions.

    Args:
        model_uri: A deepspark model URI or folder.
        data: A file path, a built-in dataset name, or a DataFrame; for an image model also
            an image folder (its rows: ``path``, ``label``, ``split``) or a table with an
            ``image`` (bytes) or ``path`` column.
        output: Optional CSV / Parquet / JSON-lines path to write the result to.
        overwrite: Replace an existing ``output``.

    Returns:
        The scored table.

    Raises:
        UserInputError: Missing model columns (named), unreadable data, existing output.
        ModelNotFoundError: The model URI does not resolve.
    """
    if output is not None:
        check_output_path(output, overwrite=overwrite)
    model = load_model(model_uri)
    frame = data if isinstance(data, pd.DataFrame) else _read_data(data, model)
    predictions = model.predict(frame)
    clashes = [name for name in predictions.columns if name in frame.columns]
    scored = pd.concat([frame.drop(columns=clashes), predictions], axis=1)
    if output is not None:
        write_table(scored, output, overwrite=overwrite)
    return scored


def _read_data(data: str | Path, model) -> pd.DataFrame:
    if is_image_folder(data):
        if model.kind != "image":
            raise UserInputError(
                "This model takes tables, not images; give a CSV / Parquet / JSON-lines file, "
                f"or an image model. Received: data={str(data)!r}"
            )
        return list_image_folder(data)
    return read_table(data)
