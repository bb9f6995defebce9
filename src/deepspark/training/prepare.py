"""From a data source to encoded train / validation / test arrays (no Keras, no MLflow)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from deepspark.config import TrainConfig, with_data_defaults
from deepspark.data.encoding import NUMERIC_INPUT, encode_features, encode_target
from deepspark.data.image_inputs import PATH_COLUMN, find_image_column
from deepspark.data.image_sources import (
    is_image_folder,
    is_image_glob,
    list_image_folder,
    list_image_glob,
)
from deepspark.data.readers import BUILTIN_DATASETS, read_table
from deepspark.data.schema import FeatureSchema, infer_schema, learn_vocabularies
from deepspark.data.splits import DataSplit, hash_split
from deepspark.errors import UserInputError

# A text file (CSV, JSON lines) takes about this many times its size in memory once read.
SMALL_FILE_FACTOR = 4
# Bytes a table cell takes in memory while it is used: the pandas frame and the encoded copy,
# 8 bytes each.
BYTES_PER_CELL = 16

logger = logging.getLogger("deepspark.training")


@dataclasses.dataclass(frozen=True)
class PreparedData:
    """Everything training needs from the data, derived from the training split only."""

    config: TrainConfig
    schema: FeatureSchema
    split: DataSplit
    inputs: dict[str, Any]  # split name -> model inputs (by name; images: pixels or ImageFiles)
    targets: dict[str, np.ndarray]  # split name -> encoded target
    target_center: float
    target_scale: float
    fingerprint: str
    builder: Any = None  # how the network is built (deepspark.models.builders.build_model)
    bad_images: tuple[tuple[str, str], ...] = ()  # (source, reason) left out of training
    # A table streamed into the store (training.prepare_stream.StreamedSplits): then ``split``
    # is None and ``inputs`` / ``targets`` are empty; the rows are in its shards.
    streamed: Any = None

    @property
    def numeric_train(self) -> np.ndarray | None:
        """The training split's numeric columns (streamed: all of them, or a uniform sample)."""
        if self.streamed is not None:
            return self.streamed.statistics.numeric_sample
        train = self.inputs["train"]
        return train.get(NUMERIC_INPUT) if isinstance(train, dict) else None

    @property
    def rows(self) -> dict[str, int]:
        """Rows per split."""
        return dict(self.streamed.rows) if self.streamed is not None else self.split.sizes()

    @property
    def train_rows(self) -> int:
        return self.rows["train"]

    def numeric_stats(self):
        """The numeric columns' ``NumericStats`` (streamed: from the streaming pass)."""
        from deepspark.models.preprocessing import NumericStats, fit_numeric_stats

        if self.streamed is not None:
            summary = self.streamed.statistics.numeric
            return None if summary is None else NumericStats(**dataclasses.asdict(summary))
        numeric = self.numeric_train
        return fit_numeric_stats(numeric) if numeric is not None else None

    def example_rows(self) -> pd.DataFrame:
        """A few raw training rows (the logged model's input example)."""
        if self.streamed is not None:
            return self.streamed.example
        return self.split.train[self.schema.feature_names].head(5)


def resolve_target(config: TrainConfig, frame: pd.DataFrame) -> TrainConfig:
    """Fill in a built-in dataset's target, or ask for ``--target`` listing the columns."""
    if config.target:
        return config
    default = BUILTIN_DATASETS.get(config.data)
    if default is None or Path(config.data).exists():
        columns = ", ".join(map(str, frame.columns))
        raise UserInputError(
            f"No target given; pass --target with one of: {columns}. Received: target=None"
        )
    return dataclasses.replace(config, target=default)


def prepare_data(
    config: TrainConfig,
    *,
    model: Any = None,
    data: Any = None,
    stream: bool = True,
    auto_bagging: bool = False,
) -> PreparedData:
    """Read, infer the schema, split (by a hash of each row) and encode.

    A table whose encoded rows would pass the memory budget (``max_memory_mb``) is streamed
    into shards in the store instead (``training.prepare_stream``): the same schema,
    statistics and split, never the whole table in memory.

    Args:
        config: The run's settings.
        model: The ``model`` given to ``train``; checked against the kind of data (tables or
            images) as soon as that is known, before any work on the data.
        data: The data itself when it is not a path (a pandas or Spark DataFrame, a
            ``TableSource``); ``config.data`` then only describes it.
        stream: ``False`` reads the table into memory whatever its size (callers that need
            it there: tune, lr_find, explanation backgrounds).
        auto_bagging: ``bagging=None`` may resolve to a bagged ensemble for a small table held
            in memory (``config.default_bagging``); ``train`` passes it when the user gave no
            model and no callbacks. ``False``: ``None`` resolves to 1 (one network).

    Raises:
        DataError / UserInputError: For every problem with the data or the target.
    """
    from deepspark.models.builders import check_model

    if is_image_folder(config.data):
        from deepspark.training.prepare_images import prepare_images

        check_model(model, "image")
        return prepare_images(config, list_image_folder(config.data), PATH_COLUMN)
    if is_image_glob(config.data) and not Path(config.data).exists():
        from deepspark.training.prepare_images import prepare_images

        check_model(model, "image")
        return prepare_images(config, list_image_glob(config.data), PATH_COLUMN)
    source = _table_source(config, data)
    if stream and source is not None and _should_stream(config, source):
        from deepspark.training.prepare_stream import stream_prepare

        check_model(model, "tabular")
        config = resolve_target(config, source.head(5))
        return stream_prepare(config, source, world_size=max(1, config.workers))
    frame = read_table(config.data) if source is None else source.read_pandas()
    image_column = find_image_column(frame, exclude=[config.target] if config.target else [])
    check_model(model, "tabular" if image_column is None else "image")
    if image_column is not None:
        from deepspark.training.prepare_images import prepare_images

        return prepare_images(config, frame, image_column)
    config, rows = resolve_target(config, frame), len(frame)
    schema, frame = infer_schema(frame, config.target, task=config.task, exclude=config.exclude)
    check_loss(config, schema.task)
    split = hash_split(
        frame,
        val_fraction=config.val_fraction,
        test_fraction=config.test_fraction,
        seed=config.seed,
    )
    pooled = len(split.train) + len(split.val) if auto_bagging else None
    config = large_table_defaults(config, rows=rows, pooled_rows=pooled)
    schema = learn_vocabularies(schema, split.train)
    parts = {"train": split.train, "val": split.val, "test": split.test}
    inputs = {name: encode_features(part, schema) for name, part in parts.items()}
    targets = {
        name: shape_target(encode_target(part[config.target], schema), schema.task)
        for name, part in parts.items()
    }
    center, scale = 0.0, 1.0
    if schema.task == "regression":
        center = float(targets["train"].mean())
        scale = float(targets["train"].std()) or 1.0
    logger.info(
        "%s task, %d features; rows: %s",
        schema.task,
        len(schema.features),
        " / ".join(f"{count} {name}" for name, count in split.sizes().items()),
    )
    return PreparedData(
        config=config,
        schema=schema,
        split=split,
        inputs=inputs,
        targets=targets,
        target_center=center,
        target_scale=scale,
        fingerprint=fingerprint(frame),
    )


def _table_source(config: TrainConfig, data: Any):
    """The table source of ``data`` (or ``config.data``), or ``None`` for a small local file or
    a built-in dataset name, which ``read_table`` reads (and reports on) as before."""
    from deepspark.data.sources import resolve_source

    if data is not None:
        return resolve_source(data)
    return path_table_source(config.data, memory_budget_bytes(config.max_memory_mb))


def path_table_source(text: str, budget_bytes: int):
    """The table source a path or URI names, or ``None`` where ``read_table`` reads it whole
    (a local file that fits ``budget_bytes``, a built-in dataset name) or says what is missing
    (a plain local path that does not exist, with the built-in names): training and ``predict``
    read the same data the same way."""
    from deepspark.data.sources import resolve_source

    path = Path(text)
    if path.is_file():  # small files: read_table (and its messages); large ones stream
        large = SMALL_FILE_FACTOR * path.stat().st_size > budget_bytes
        return resolve_source(text) if large else None
    if not path.exists() and text in BUILTIN_DATASETS:
        return None
    plain = "://" not in text and not text.startswith("delta:")
    if not path.exists() and plain and not any(c in text for c in "*?["):
        return None  # read_table says it is missing, naming the built-in datasets
    return resolve_source(text)


def memory_budget_bytes(max_memory_mb: float | None) -> int:
    """``max_memory_mb`` in bytes, or a quarter of the machine's memory."""
    if max_memory_mb:
        return int(float(max_memory_mb) * 2**20)
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4


def _should_stream(config: TrainConfig, source) -> bool:
    """Stream when the table in memory (raw and encoded) would pass the budget; an in-memory
    frame never streams, a Spark DataFrame always does."""
    from deepspark.data.sources import PandasSource, SparkSource

    if isinstance(source, PandasSource):
        return False
    if isinstance(source, SparkSource):
        return True
    return estimated_memory_bytes(source) > memory_budget_bytes(config.max_memory_mb)


def estimated_memory_bytes(source) -> int:
    """About what a file source takes in memory once read: its cells at ``BYTES_PER_CELL``
    when the row count is known (Parquet footers), else ``SMALL_FILE_FACTOR`` x its size."""
    if source.estimated_rows is not None:
        return source.estimated_rows * max(1, len(source.schema)) * BYTES_PER_CELL
    return SMALL_FILE_FACTOR * (source.estimated_bytes or 0)


def large_table_defaults(
    config: TrainConfig, *, rows: int, pooled_rows: int | None = None
) -> TrainConfig:
    """``with_data_defaults`` for a table of ``rows`` rows; when the batch size was raised for
    a large table and no learning rate given, the optimizer's default rate grows by the square
    root of the batch growth (at most 4x). ``pooled_rows``: the training + validation rows of
    a table held in memory that may be bagged by default (``None``: not bagged by default)."""
    from deepspark.config import DEFAULT_BATCH_SIZE
    from deepspark.training.optimizers import DEFAULT_LEARNING_RATES

    resolved = with_data_defaults(config, "tabular", rows=rows, pooled_rows=pooled_rows)
    if config.bagging is None and resolved.bagging > 1:
        _log_default_bagging(resolved.bagging, pooled_rows)
    if config.batch_size is None and config.lr is None and resolved.batch_size > DEFAULT_BATCH_SIZE:
        factor = min(4.0, (resolved.batch_size / DEFAULT_BATCH_SIZE) ** 0.5 / 2)
        rate = DEFAULT_LEARNING_RATES[config.optimizer] * max(1.0, factor)
        resolved = dataclasses.replace(resolved, lr=rate)
        logger.info(
            "%d rows: batch size %d, learning rate %.2g (set --batch-size / --lr to choose)",
            rows,
            resolved.batch_size,
            rate,
        )
    return resolved


def _log_default_bagging(members: int, pooled_rows: int | None) -> None:
    from deepspark.config import auto_bagging_rows

    logger.info(
        "bagging %d members by default (a table of %s training + validation rows, at most "
        "%s); --bagging 1 trains one network",
        members,
        f"{pooled_rows:,}",
        f"{auto_bagging_rows():,}",
    )


def shape_target(encoded: np.ndarray, task: str) -> np.ndarray:
    if task == "binary":
        return encoded.reshape(-1, 1).astype(np.float32)
    return encoded


def check_loss(config: TrainConfig, task: str) -> None:
    if config.loss is None:
        return
    regression_loss = config.loss != "crossentropy"
    if regression_loss != (task == "regression"):
        valid = "mse, mae, huber" if task == "regression" else "crossentropy"
        raise UserInputError(
            f"Invalid --loss for a {task} task; valid losses are {valid}. "
            f"Received: loss={config.loss!r}"
        )


def fingerprint(frame: pd.DataFrame) -> str:
    hashed = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    return f"{len(frame)}:{int(hashed.sum(dtype=np.uint64))}"
