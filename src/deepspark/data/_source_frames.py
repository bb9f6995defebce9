"""In-memory tables as sources: a pandas DataFrame (or a built-in dataset loaded into one) and a
Spark DataFrame."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa

from deepspark.data._source_base import DEFAULT_BATCH_ROWS, TableSource, check_count
from deepspark.data._source_files import first_line
from deepspark.errors import DataError


@dataclass(frozen=True, eq=False, repr=False)
class PandasSource(TableSource):
    """A pandas DataFrame, kept as given (not copied: pandas' copy-on-write keeps what readers
    return independent of it).

    Attributes:
        frame: The frame.
        arrow_schema: Its Arrow schema (``pyarrow.Schema.from_pandas``, index left out).
    """

    frame: pd.DataFrame
    arrow_schema: pa.Schema

    @classmethod
    def from_frame(
        cls, frame: pd.DataFrame, *, description: str | None = None, uri: str | None = None
    ) -> PandasSource:
        """Wrap a frame after checking it has rows and Arrow-typeable columns.

        Raises:
            DataError: No rows or columns, or a column pyarrow cannot type (mixed objects).
        """
        if frame.empty or len(frame.columns) == 0:
            raise DataError(
                f"DataFrame has no rows or no columns; give a frame with data. "
                f"Received: shape={frame.shape}"
            )
        try:
            schema = pa.Schema.from_pandas(frame, preserve_index=False)
        except (pa.ArrowException, TypeError, ValueError) as error:
            raise DataError(
                f"DataFrame column cannot be typed ({first_line(error)}); give each column one "
                f"type (numbers, text, booleans or dates). Received: columns={list(frame.columns)}"
            ) from error
        rows, width = frame.shape
        description = description or "pandas DataFrame"
        return cls(f"{description} ({rows} rows x {width} columns)", uri, frame, schema)

    @property
    def schema(self) -> pa.Schema:
        return self.arrow_schema

    @property
    def estimated_rows(self) -> int:
        return len(self.frame)

    @property
    def estimated_bytes(self) -> int:
        return int(self.frame.memory_usage(deep=True, index=False).sum())

    def read_pandas(self, columns: list[str] | None = None) -> pd.DataFrame:
        columns = self.check_columns(columns)
        return self.frame.copy(deep=False) if columns is None else self.frame[columns]

    def head(self, rows: int) -> pd.DataFrame:
        return self.frame.head(check_count(rows, "rows", minimum=0))

    def iter_batches(
        self, *, columns: list[str] | None = None, batch_rows: int = DEFAULT_BATCH_ROWS
    ) -> Iterator[pa.RecordBatch]:
        columns = self.check_columns(columns)
        step = check_count(batch_rows, "batch_rows", minimum=1)
        frame = self.frame if columns is None else self.frame[columns]
        schema = (
            self.schema if columns is None else pa.schema([self.schema.field(c) for c in columns])
        )
        for start in range(0, len(frame), step):
            chunk = frame.iloc[start : start + step]
            yield pa.RecordBatch.from_pandas(chunk, schema=schema, preserve_index=False)

    def to_spark(self, spark):
        """``spark.createDataFrame`` of the frame (Arrow-accelerated when the session allows)."""
        return spark.createDataFrame(self.frame)

    def _with_schema(self, schema: pa.Schema) -> PandasSource:
        return dataclasses.replace(self, frame=self.frame[schema.names], arrow_schema=schema)


@dataclass(frozen=True, eq=False, repr=False)
class SparkSource(TableSource):
    """A Spark DataFrame. Nothing is counted or collected when it is resolved; ``read_pandas``
    collects it, ``iter_batches`` streams it partition by partition through the driver (slow
    but bounded; distributed training writes shards from the executors instead).

    Attributes:
        frame: The Spark DataFrame.
        arrow_schema: Its schema in Arrow types.
    """

    frame: object
    arrow_schema: pa.Schema

    @classmethod
    def from_frame(cls, frame) -> SparkSource:
        """Wrap a Spark DataFrame (reads only its schema).

        Raises:
            DataError: A column type Arrow has no equivalent for.
        """
        from deepspark.data._source_spark import spark_arrow_schema

        try:
            schema = spark_arrow_schema(frame)
        except (TypeError, pa.ArrowException) as error:  # PySparkTypeError is a TypeError
            raise DataError(
                f"Spark DataFrame has a column type Arrow cannot hold ({first_line(error)}); "
                f"cast or drop that column first. Received: schema={frame.schema.simpleString()}"
            ) from error
        return cls(f"Spark DataFrame ({len(schema)} columns)", None, frame, schema)

    @property
    def schema(self) -> pa.Schema:
        return self.arrow_schema

    def read_pandas(self, columns: list[str] | None = None) -> pd.DataFrame:
        columns = self.check_columns(columns)
        frame = self.frame if columns is None else self.frame.select(*columns)
        return frame.toPandas()

    def head(self, rows: int) -> pd.DataFrame:
        return self.frame.limit(check_count(rows, "rows", minimum=0)).toPandas()

    def iter_batches(
        self, *, columns: list[str] | None = None, batch_rows: int = DEFAULT_BATCH_ROWS
    ) -> Iterator[pa.RecordBatch]:
        from deepspark.data._source_spark import iter_spark_batches

        return iter_spark_batches(
            self.frame,
            self.schema,
            columns=self.check_columns(columns),
            batch_rows=check_count(batch_rows, "batch_rows", minimum=1),
        )

    def to_spark(self, spark):
        """The frame itself (``spark`` is not used: a DataFrame belongs to its own session)."""
        return self.frame

    def _with_schema(self, schema: pa.Schema) -> SparkSource:
        frame = self.frame.select(*schema.names)
        return dataclasses.replace(self, frame=frame, arrow_schema=schema)
