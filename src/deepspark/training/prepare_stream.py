"""Tables larger than memory: two streaming passes from the source into encoded shards in the
store, never the whole table in memory.

1. **Scan**: the schema (feature kinds, task) is inferred from the first rows; then every batch is
   cleaned the way ``infer_schema`` cleans a whole table, assigned its split by a hash of the row
   (``data.splits.split_codes``: the same split as an in-memory read), and its training rows feed
   ``data.statistics.StreamingStatistics`` (normalisation, vocabularies, target scale, class
   counts, a numeric sample). Class labels and row counts come from all rows.
2. **Encode**: every batch again, encoded with the learned schema and written round-robin to the
   ranks' shard files of its split (``store.shards``), manifest last.

A value that does not parse in a numeric column is a bad record: counted, reported, and read as
missing (imputed), not fatal. Memory is bounded by the batch size, the statistics' sample and the
writers' row groups.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np
import pandas as pd

from deepspark.config import TrainConfig
from deepspark.data.encoding import encode_features, encode_target
from deepspark.data.schema import (
    CATEGORICAL,
    FeatureSchema,
    find_class_labels,
    infer_schema,
)
from deepspark.data.splits import check_split_sizes, content_digest, split_codes
from deepspark.data.statistics import StreamingStatistics, TrainStatistics
from deepspark.distributed.shards import data_key, shard_cache_root
from deepspark.store.shard_writer import ShardSetWriter

logger = logging.getLogger("deepspark.training")

SCHEMA_SAMPLE_ROWS = 20_000
BATCH_ROWS = 65_536
SPLITS = ("train", "val", "test")
MOSTLY_NUMERIC = 0.9  # as data.schema's rule for "a numeric column with some text"


@dataclasses.dataclass(frozen=True)
class StreamedSplits:
    """Encoded splits in the store, and what was learned on the way.

    Attributes:
        shards: Per-rank shard files of ``train``, ``val`` and ``test``.
        rows: Rows per split (all ranks).
        statistics: What the training rows taught (``TrainStatistics``).
        example: The first raw rows (the model's input example and signature).
        bad_values: Values that did not parse in numeric columns (read as missing).
        dropped_target: Rows left out because their target was missing.
    """

    shards: Any
    rows: dict[str, int]
    statistics: TrainStatistics
    example: pd.DataFrame
    bad_values: int = 0
    dropped_target: int = 0


def stream_prepare(config: TrainConfig, source, *, world_size: int = 1):
    """``prepare_data`` for a table streamed from ``source`` (see the module docstring).

    Args:
        config: The run's settings, target resolved.
        source: A ``data.sources.TableSource``.
        world_size: Ranks the shards are cut for.

    Returns:
        A ``PreparedData`` whose ``streamed`` holds the shards; ``inputs`` and ``targets`` are
        empty.
    """
    from deepspark.training.prepare import PreparedData, check_loss, large_table_defaults

    head = _mostly_numeric_as_numbers(source.head(SCHEMA_SAMPLE_ROWS), config.target)
    schema, _ = infer_schema(head, config.target, task=config.task, exclude=config.exclude)
    check_loss(config, schema.task)
    columns = [*schema.feature_names, schema.target]
    scan = _scan(source, schema, config, columns)
    schema = _learned_schema(schema, scan)
    config = large_table_defaults(config, rows=sum(scan["rows"].values()))
    fingerprint = scan["fingerprint"]  # of the rows' values: any file layout, any partitioning
    key = data_key(fingerprint, schema.to_dict(), config.seed, config.val_fraction,
                   config.test_fraction, "streamed")  # fmt: skip
    writer = ShardSetWriter(shard_cache_root(config.store).child(f"{key}-w{world_size}"),
                            world_size=world_size)  # fmt: skip
    shards = (
        writer.finish()
        if writer.is_complete()
        else _encode(source, schema, config, columns, writer)
    )
    logger.info(
        "%s task, %d features; rows: %s (streamed from %s into %s)",
        schema.task,
        len(schema.features),
        " / ".join(f"{count} {name}" for name, count in scan["rows"].items()),
        source.description,
        shards.store.uri,
    )
    stats = scan["statistics"]
    streamed = StreamedSplits(
        shards=shards,
        rows=scan["rows"],
        statistics=stats,
        example=head[schema.feature_names].head(5),
        bad_values=scan["bad_values"],
        dropped_target=scan["dropped"],
    )
    return PreparedData(
        config=config,
        schema=schema,
        split=None,
        inputs={},
        targets={},
        target_center=stats.target_center,
        target_scale=stats.target_scale,
        fingerprint=fingerprint,
        streamed=streamed,
    )


def _mostly_numeric_as_numbers(head: pd.DataFrame, target: str) -> pd.DataFrame:
    """Text columns whose values are numbers in at least 90% of rows are numeric features (a
    few bad values in a large table are counted and read as missing, not fatal)."""
    head = head.copy()
    for name in head.columns:
        column = head[name]
        textual = pd.api.types.is_object_dtype(column) or pd.api.types.is_string_dtype(column)
        if name == target or not textual or not column.notna().any():
            continue
        parsed = pd.to_numeric(column, errors="coerce")
        if parsed.notna().sum() >= MOSTLY_NUMERIC * column.notna().sum():
            head[name] = parsed
    return head


def clean_rows(frame: pd.DataFrame, schema: FeatureSchema) -> tuple[pd.DataFrame, int, int]:
    """A batch cleaned like ``infer_schema`` cleans a table: rows without a target dropped,
    numeric columns as float64 (unparseable text read as missing), categorical ones as text.

    Returns:
        ``(frame, rows dropped for a missing target, unparseable numeric values)``.
    """
    kept = frame[frame[schema.target].notna()].reset_index(drop=True)
    dropped = len(frame) - len(kept)
    bad = 0
    columns = {}
    for spec in schema.features:
        column = kept[spec.name]
        if spec.kind == CATEGORICAL:
            present = column.notna()
            columns[spec.name] = column.astype("string").astype(object).where(present, None)
            continue
        numeric = pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column)
        parsed = column if numeric else pd.to_numeric(column, errors="coerce")
        parsed = parsed.astype("float64")
        bad += int((parsed.isna() & column.notna()).sum())
        columns[spec.name] = parsed
    columns[schema.target] = kept[schema.target]
    return pd.DataFrame(columns, index=kept.index), dropped, bad


def _batches(source, columns: list[str]):
    for batch in source.iter_batches(columns=columns, batch_rows=BATCH_ROWS):
        yield batch.to_pandas()


def _codes(frame: pd.DataFrame, config: TrainConfig) -> np.ndarray:
    return split_codes(
        frame, seed=config.seed, val_fraction=config.val_fraction,
        test_fraction=config.test_fraction,
    )  # fmt: skip


@dataclasses.dataclass
class ScanPart:
    """What a scan of some rows found; parts of one table merge (Spark partitions)."""

    statistics: StreamingStatistics
    rows: dict[str, int]
    labels: set
    dropped: int = 0
    bad_values: int = 0
    digest: int = 0  # data.splits.content_digest of the rows seen

    def merge(self, other: ScanPart) -> None:
        self.statistics.merge(other.statistics)
        self.digest = (self.digest + other.digest) % 2**64
        for name, count in other.rows.items():
            self.rows[name] += count
        self.labels |= other.labels
        self.dropped += other.dropped
        self.bad_values += other.bad_values


def scan_frames(frames, schema: FeatureSchema, config: TrainConfig, *, part: int = 0) -> ScanPart:
    """The first pass over some raw batches (all of a table, or one Spark partition's)."""
    scan = ScanPart(
        StreamingStatistics(schema, seed=config.seed + 7919 * part), dict.fromkeys(SPLITS, 0), set()
    )
    for raw in frames:
        frame, dropped_rows, bad = clean_rows(raw, schema)
        scan.dropped, scan.bad_values = scan.dropped + dropped_rows, scan.bad_values + bad
        codes = _codes(frame, config)
        scan.digest = (scan.digest + content_digest(frame)) % 2**64
        for code, name in enumerate(SPLITS):
            scan.rows[name] += int(np.count_nonzero(codes == code))
        if schema.task != "regression":
            scan.labels.update(frame[schema.target].unique().tolist())
        scan.statistics.add(frame[codes == 0])
    return scan


def encode_frames(frames, schema: FeatureSchema, config: TrainConfig, writer) -> None:
    """The second pass over some raw batches: encoded rows dealt to the ranks' shard files."""
    for raw in frames:
        frame, _, _ = clean_rows(raw, schema)
        codes = _codes(frame, config)
        for code, name in enumerate(SPLITS):
            part = frame[codes == code]
            if len(part):
                writer.add(name, encode_features(part, schema), _target(part, schema))


def _scan(source, schema: FeatureSchema, config: TrainConfig, columns: list[str]) -> dict:
    if uses_spark(config, source):
        from deepspark.training.prepare_spark import spark_scan

        scan = spark_scan(source, schema, config, columns)
    else:
        scan = scan_frames(_batches(source, columns), schema, config)
    if scan.dropped:
        logger.warning("Dropped %d rows whose target '%s' is missing", scan.dropped, schema.target)
    if scan.bad_values:
        logger.warning(
            "%d values in numeric columns were not numbers: read as missing", scan.bad_values
        )
    check_split_sizes(sum(scan.rows.values()), scan.rows, config.test_fraction)
    return {"statistics": scan.statistics.finish(), "rows": scan.rows, "labels": scan.labels,
            "dropped": scan.dropped, "bad_values": scan.bad_values,
            "fingerprint": f"{sum(scan.rows.values())}:{scan.digest}"}  # fmt: skip


def uses_spark(config: TrainConfig, source) -> bool:
    """Whether the passes run on Spark executors: for a Spark DataFrame, and for files when the
    run is on a cluster (the executors read the files; no row passes through the driver)."""
    from deepspark.data.sources import DatasetSource, SparkSource

    if isinstance(source, SparkSource):
        return True
    if config.launcher != "spark" or not isinstance(source, DatasetSource):
        return False
    from deepspark.spark.session import get_session
    from deepspark.store.probe import shares_driver_host

    return not shares_driver_host(get_session().sparkContext.master)


def _learned_schema(schema: FeatureSchema, scan: dict) -> FeatureSchema:
    stats: TrainStatistics = scan["statistics"]
    features = tuple(
        dataclasses.replace(spec, vocabulary=stats.vocabularies.get(spec.name, ()))
        if spec.kind == CATEGORICAL
        else spec
        for spec in schema.features
    )
    labels = schema.class_labels
    if schema.task != "regression":
        labels = find_class_labels(pd.Series(sorted(scan["labels"], key=str)), schema.task,
                                   schema.target)  # fmt: skip
    return dataclasses.replace(schema, features=features, class_labels=labels)


def _encode(source, schema, config, columns, writer: ShardSetWriter):
    """The shard set: written by the executors (Spark) or by this process."""
    if uses_spark(config, source):
        from deepspark.training.prepare_spark import spark_encode

        return spark_encode(source, schema, config, columns, writer)
    encode_frames(_batches(source, columns), schema, config, writer)
    return writer.finish()


def _target(frame: pd.DataFrame, schema: FeatureSchema) -> np.ndarray:
    from deepspark.training.prepare import shape_target

    return shape_target(encode_target(frame[schema.target], schema), schema.task)
