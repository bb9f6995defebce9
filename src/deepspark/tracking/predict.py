"""Scoring a table with pandas: input columns + prediction column(s).

The data is resolved once (``data.sources.resolve_source``): a local file, folder or glob, a URI
(``s3://...``), a Delta table, a built-in dataset name, or a pandas or Spark DataFrame. A table
that fits the memory budget is scored in memory and returned; a larger one is streamed: Arrow
batches in, ``model.predict`` per batch, each scored batch appended to ``output``, which appears
only when every batch has been written (``data.writers``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from deepspark.data.image_sources import is_image_folder, list_image_folder
from deepspark.data.readers import read_table
from deepspark.data.writers import OutputTarget, check_output_path, open_table_writer, write_table
from deepspark.errors import UserInputError
from deepspark.tracking.model import DeepsparkModel, load_model
from deepspark.training.prepare import (
    BYTES_PER_CELL,
    estimated_memory_bytes,
    memory_budget_bytes,
    path_table_source,
)

logger = logging.getLogger("deepspark.predict")

# How much of the memory budget one streamed batch (with its pandas copy, encoded inputs and
# scored output) may use.
_BATCH_SHARE = 8
_MIN_BATCH_ROWS, _MAX_BATCH_ROWS = 256, 65_536
_BAD_EXAMPLES = 3


@dataclasses.dataclass(frozen=True)
class PredictSummary:
    """What a streamed ``predict`` wrote, returned instead of a table that may not fit in memory.

    Attributes:
        output: The output file or URI (the predictions are there).
        rows: Rows scored and written.
        bad_rows: Rows with text in a numeric column: written with empty predictions.
        bad_examples: Up to three of them, as ``"row 12: x2='abc'"`` (row numbers from 0).
        columns: The output's columns.
        batches: Batches streamed.
    """

    output: str
    rows: int
    bad_rows: int
    bad_examples: tuple[str, ...]
    columns: tuple[str, ...]
    batches: int

    def to_dict(self) -> dict[str, Any]:
        document = dataclasses.asdict(self)
        document["bad_examples"] = list(self.bad_examples)
        document["columns"] = list(self.columns)
        return document


def predict(
    model_uri: str,
    data: Any,
    *,
    output: str | Path | None = None,
    overwrite: bool = False,
    max_memory_mb: float | None = None,
) -> pd.DataFrame | PredictSummary:
    """Score a table: the input columns (extras pass through) followed by the predictions.

    Data that fits the memory budget is scored in memory and the scored table returned (and
    written to ``output`` when given). Larger data is streamed batch by batch into ``output``
    and, as ``DataFrame.to_parquet(path)`` or ``mlflow.models.predict(output_path=...)`` do
    with what they write, the predictions are not returned: a small ``PredictSummary`` is
    (output, rows, bad rows, columns). There, a row with text in a numeric column does not stop
    the run: it is written with an empty prediction, counted in ``bad_rows`` and logged (in
    memory such a row is an error, as it always was).

    Args:
        model_uri: A deepspark model URI or folder.
        data: A file, folder or glob of CSV / Parquet / JSON-lines files, a URI
            (``s3://bucket/prefix/``, ``gs://``, ``hdfs://``, ``abfs://``), a Delta table, a
            built-in dataset name, or a pandas or Spark DataFrame; for an image model also an
            image folder (its rows: ``path``, ``label``, ``split``) or a table with an
            ``image`` (bytes) or ``path`` column.
        output: Optional CSV / Parquet / JSON-lines file (a path or a URI such as
            ``s3://bucket/scored.parquet``) to write the result to; required for data over the
            memory budget.
        overwrite: Replace an existing ``output``.
        max_memory_mb: The memory budget in MB (default: a quarter of the machine's memory, as
            for training). A Spark DataFrame is streamed whenever ``output`` is given (it is
            never collected whole), and collected with ``toPandas`` otherwise.

    Returns:
        The scored table, or for streamed data a ``PredictSummary``.

    Raises:
        UserInputError: Missing model columns (named), unreadable data, existing output, data
            over the memory budget without ``output``.
        ModelNotFoundError: The model URI does not resolve.

    Example:
        >>> deepspark.predict(uri, "s3://bucket/houses/", output="s3://bucket/scored.parquet")
        PredictSummary(output='s3://bucket/scored.parquet', rows=20640000, bad_rows=0, ...)
    """
    target = None if output is None else check_output_path(output, overwrite=overwrite)
    budget = _memory_budget(max_memory_mb)
    model = load_model(model_uri)
    table = data if isinstance(data, pd.DataFrame) else _open_data(data, model, budget)
    if not isinstance(table, pd.DataFrame):
        if _streams(table, budget, has_output=target is not None):
            if target is None:
                raise _needs_output(table, budget)
            return _score_stream(model, table, target, budget=budget)
        table = table.read_pandas()
    scored = _score_frame(model, table)
    if target is not None:
        write_table(scored, target)
    return scored


def _score_frame(model: DeepsparkModel, frame: pd.DataFrame) -> pd.DataFrame:
    predictions = model.predict(frame)
    clashes = [name for name in predictions.columns if name in frame.columns]
    return pd.concat([frame.drop(columns=clashes), predictions], axis=1)


def _memory_budget(max_memory_mb: float | None) -> int:
    if max_memory_mb is not None and (
        isinstance(max_memory_mb, bool)
        or not isinstance(max_memory_mb, int | float)
        or not max_memory_mb > 0
    ):
        raise UserInputError(
            f"max_memory_mb must be a positive number of MB. Received: "
            f"max_memory_mb={max_memory_mb!r}"
        )
    return memory_budget_bytes(max_memory_mb)


def _open_data(data: Any, model: DeepsparkModel, budget: int):
    """A pandas frame (image folders, and local files and built-in datasets read as before),
    or the table source of everything else."""
    from deepspark.data.sources import resolve_source

    if not isinstance(data, str | os.PathLike):
        return resolve_source(data)  # a Spark DataFrame, or a type it names as unsupported
    if is_image_folder(data):
        if not model.model_kind.reads_images:
            raise UserInputError(
                "This model takes tables, not images; give a CSV / Parquet / JSON-lines file, "
                f"or an image model. Received: data={str(data)!r}"
            )
        return list_image_folder(data)
    text = os.fspath(data)
    source = path_table_source(text, budget)  # the same rule as training's
    return read_table(text) if source is None else source


def _streams(source, budget: int, *, has_output: bool) -> bool:
    """Whether to stream: the table in memory would pass the budget (training's estimate); a
    pandas frame never streams, a Spark DataFrame does whenever there is an output."""
    from deepspark.data.sources import PandasSource, SparkSource

    if isinstance(source, PandasSource):
        return False
    if isinstance(source, SparkSource):
        return has_output
    return estimated_memory_bytes(source) > budget


def _needs_output(source, budget: int) -> UserInputError:
    needed = estimated_memory_bytes(source) / 2**20
    return UserInputError(
        f"{source.description} takes about {needed:.0f} MB in memory, "
        f"more than the memory budget of {budget / 2**20:.0f} MB; pass output= (--output) to "
        f"stream the predictions to a file, or raise max_memory_mb (--max-memory). "
        f"Received: output=None"
    )


def _score_stream(model: DeepsparkModel, source, target: OutputTarget, *, budget: int):
    from deepspark._progress import work_progress

    _check_columns(model, source)
    batch_rows = _batch_rows(source, budget)
    schema = _output_schema(model, source.schema)
    tally = _BadRows()
    batches = 0
    logger.info("streaming %s in batches of %d rows -> %s", source.description, batch_rows,
                target.text)  # fmt: skip
    total = source.estimated_rows or 0
    with (
        work_progress("scoring", total, unit="rows") as advance,
        open_table_writer(target, schema) as writer,
    ):
        for batch in source.iter_batches(batch_rows=batch_rows):
            writer.write(_score_batch(model, batch, schema, tally, start=writer.rows))
            batches += 1
            advance(batch.num_rows)
    if tally.count:
        logger.warning(
            "%d of %d rows have text in a numeric column (%s); they are written with empty "
            "predictions: fix those cells, or leave them empty (empty cells are imputed)",
            tally.count, writer.rows, "; ".join(tally.examples),
        )  # fmt: skip
    logger.info("scored %d rows in %d batches -> %s", writer.rows, batches, target.text)
    return PredictSummary(
        output=target.text,
        rows=writer.rows,
        bad_rows=tally.count,
        bad_examples=tuple(tally.examples),
        columns=tuple(schema.names),
        batches=batches,
    )


def _check_columns(model: DeepsparkModel, source) -> None:
    """Missing model columns, named, before anything is read (image models look for their
    image column in the first batch)."""
    model.model_kind.check_columns(model.schema, source.schema.names)


def _batch_rows(source, budget: int) -> int:
    row_bytes = max(1, len(source.schema)) * BYTES_PER_CELL * 2  # + the scored copy
    rows = budget // (_BATCH_SHARE * row_bytes)
    return int(min(_MAX_BATCH_ROWS, max(_MIN_BATCH_ROWS, rows)))


def _output_schema(model: DeepsparkModel, input_schema: pa.Schema) -> pa.Schema:
    """The input columns (but those a prediction column replaces), then the model kind's
    output columns, typed as ``model.predict`` types them (a classifier's labels keep theirs)."""
    predicted = [
        pa.field(column.name, _ARROW_TYPES[column.type])
        for column in model.model_kind.output_columns(model.schema)
    ]
    names = {field.name for field in predicted}
    kept = [field for field in input_schema if field.name not in names]
    return pa.schema(kept + predicted)


_ARROW_TYPES = {
    "boolean": pa.bool_(),
    "long": pa.int64(),
    "double": pa.float64(),
    "string": pa.string(),
    "binary": pa.binary(),
}


class _BadRows:
    """Rows with text in a numeric column: how many, and the first few."""

    def __init__(self):
        self.count = 0
        self.examples: list[str] = []


def _score_batch(model, batch: pa.RecordBatch, schema: pa.Schema, tally: _BadRows, *, start):
    """One batch scored: its own columns as read, then the predictions (empty for bad rows)."""
    frame = batch.to_pandas()
    bad = _text_in_numeric(model, frame, tally, start=start)
    if bad is None:
        predictions = model.predict(frame)
    else:
        good = frame.loc[~bad]
        predictions = model.predict(good) if len(good) else pd.DataFrame(index=good.index)
        predictions = predictions.reindex(frame.index)
    columns = {}
    for field in schema:
        if field.name in predictions.columns:
            columns[field.name] = pa.Array.from_pandas(predictions[field.name], type=field.type)
        else:
            columns[field.name] = batch.column(field.name)
    return pa.table(columns, schema=schema)


def _text_in_numeric(model, frame: pd.DataFrame, tally: _BadRows, *, start: int):
    """Rows of ``frame`` the model's kind cannot score (text in a numeric column; ``None``
    when there are none), counted and remembered in ``tally``."""
    bad = model.model_kind.bad_rows(
        model.schema, frame, start=start, most=_BAD_EXAMPLES - len(tally.examples)
    )
    if bad is None:
        return None
    tally.count += bad.count
    tally.examples.extend(bad.examples)
    return bad.mask
