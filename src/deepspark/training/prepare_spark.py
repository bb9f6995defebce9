"""The two streaming passes of ``prepare_stream`` on Spark executors: no row passes through the
driver.

- A **Spark DataFrame** is processed where it lives: ``mapInArrow`` hands each partition's Arrow
  batches to the same scan and encode functions the driver uses for local files.
- **Files on a cluster** (``s3://``, ``hdfs://``, ... with ``--launcher spark`` on a master that
  is not local) are read by the executors themselves with pyarrow, one file per task: Spark's own
  readers are not needed (no hadoop-aws jars for ``s3a://``).

Each task returns a small pickled result (partial statistics, or the records of the shard files
it wrote into the store); the driver merges the statistics and writes the shard set's manifest.
"""

from __future__ import annotations

import logging
import pickle

from deepspark.config import TrainConfig
from deepspark.data.schema import FeatureSchema
from deepspark.store.shard_writer import ShardSetWriter, write_manifest
from deepspark.training.prepare_stream import (
    BATCH_ROWS,
    ScanPart,
    encode_frames,
    scan_frames,
)

logger = logging.getLogger("deepspark.training")


def spark_scan(source, schema: FeatureSchema, config: TrainConfig, columns: list[str]) -> ScanPart:
    """The first pass, one partial scan per partition, merged in partition order."""

    def scan(part: int, frames):
        return scan_frames(frames, schema, config, part=part)

    parts = _run_on_partitions(source, columns, scan, job="statistics")
    merged = parts[0]
    for part in parts[1:]:
        merged.merge(part)
    return merged


def spark_encode(source, schema, config: TrainConfig, columns: list[str], writer: ShardSetWriter):
    """The second pass: every partition writes its rows' shard files into the store; the
    driver writes the manifest from their records (last)."""
    store, world_size = writer.store, writer.world_size

    def encode(part: int, frames):
        partition_writer = ShardSetWriter(store, world_size=world_size, partition=part)
        encode_frames(frames, schema, config, partition_writer)
        return partition_writer.close()

    records = [record for part in _run_on_partitions(source, columns, encode, job="encoding")
               for record in part]  # fmt: skip
    logger.info("executors wrote %d shard files into %s", len(records), store.uri)
    return write_manifest(store, world_size, records)


def _run_on_partitions(source, columns: list[str], work, *, job: str) -> list:
    """``work(partition, frames)`` on every partition of the source, results in order."""
    from deepspark.data.sources import SparkSource

    if isinstance(source, SparkSource):
        results = _frame_partitions(source.frame.select(*columns), work)
    else:
        results = _file_partitions(source, columns, work)
    logger.info("%s pass: %d Spark tasks", job, len(results))
    return [result for _, result in sorted(results, key=lambda item: item[0])]


def _frame_partitions(frame, work) -> list:
    def run(batches):
        import pyarrow as pa
        from pyspark import TaskContext

        part = TaskContext.get().partitionId()
        result = work(part, (batch.to_pandas() for batch in batches if batch.num_rows))
        payload = pickle.dumps((part, result))
        yield pa.RecordBatch.from_pydict({"payload": [payload]})

    rows = frame.mapInArrow(run, "payload binary").collect()
    return [pickle.loads(row["payload"]) for row in rows]


def _file_partitions(source, columns: list[str], work) -> list:
    from deepspark.data._source_dataset import fragment_batches
    from deepspark.spark.session import get_session

    fragments = len(source.files)

    def run(index: int, _rows):
        batches = fragment_batches(source, index, columns=columns, batch_rows=BATCH_ROWS)
        frames = (batch.to_pandas() for batch in batches if batch.num_rows)
        yield index, work(index, frames)

    context = get_session().sparkContext
    return context.parallelize(range(fragments), fragments).mapPartitionsWithIndex(run).collect()
