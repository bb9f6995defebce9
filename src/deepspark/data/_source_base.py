"""``TableSource``: what every kind of table source answers (schema, size, readers)."""

from __future__ import annotations

import abc
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa

from deepspark.errors import DataError, UserInputError

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow.fs as pafs

DEFAULT_BATCH_ROWS = 65_536


@dataclass(frozen=True, eq=False, repr=False)
class TableSource(abc.ABC):
    """A table resolved once from what the user gave; see ``resolve_source``.

    Attributes:
        description: What the source is, for messages and logs
            (``"Parquet dataset s3://b/x/ (12 files)"``).
        uri: A string ``resolve_source`` turns back into the same source (an absolute path or
            a URI), or None for in-memory frames.
    """

    description: str
    uri: str | None

    @property
    @abc.abstractmethod
    def schema(self) -> pa.Schema:
        """The columns and their Arrow types, unified over all files."""

    @property
    def estimated_rows(self) -> int | None:
        """The row count when known without reading the data (Parquet, Delta, frames)."""
        return None

    @property
    def estimated_bytes(self) -> int | None:
        """Total size of the data files on disk, or a pandas frame's memory."""
        return None

    @property
    def files(self) -> list[str]:
        """The data files (paths in ``filesystem``); ``[]`` for frames."""
        return []

    @property
    def filesystem(self) -> pafs.FileSystem | None:
        """The file system ``files`` belong to; None for frames."""
        return None

    @abc.abstractmethod
    def read_pandas(self, columns: list[str] | None = None) -> pd.DataFrame:
        """Read the whole table (or ``columns``) into pandas: for data that fits in memory."""

    @abc.abstractmethod
    def iter_batches(
        self, *, columns: list[str] | None = None, batch_rows: int = DEFAULT_BATCH_ROWS
    ) -> Iterator[pa.RecordBatch]:
        """Stream the table in file order as Arrow batches of at most ``batch_rows`` rows,
        in bounded memory; empty batches are skipped."""

    @abc.abstractmethod
    def to_spark(self, spark):
        """The same table as a Spark DataFrame read by ``spark`` (a SparkSession)."""

    def select(self, columns: list[str]) -> TableSource:
        """The same source with only ``columns``, in that order.

        Raises:
            DataError: A column the source does not have.
        """
        columns = self.check_columns(columns)
        schema = pa.schema(
            [self.schema.field(name) for name in columns], metadata=self.schema.metadata
        )
        return self._with_schema(schema)

    @abc.abstractmethod
    def _with_schema(self, schema: pa.Schema) -> TableSource:
        """A copy narrowed to ``schema`` (a checked subset of this source's columns)."""

    def head(self, rows: int) -> pd.DataFrame:
        """The first ``rows`` rows, reading as little as the source allows."""
        wanted = check_count(rows, "rows", minimum=0)
        if wanted == 0:
            return self.schema.empty_table().to_pandas()
        batches = []
        taken = 0
        for batch in self.iter_batches(batch_rows=wanted):
            if taken >= wanted:
                break
            batches.append(batch.slice(0, wanted - taken))
            taken += batches[-1].num_rows
        return pa.Table.from_batches(batches, schema=self.schema).to_pandas()

    def check_columns(self, columns: list[str] | None) -> list[str] | None:
        """``columns`` as a list after checking each is in ``schema`` (None stays None).

        Raises:
            DataError: A column the source does not have; the message lists those it has.
        """
        if columns is None:
            return None
        if isinstance(columns, str):
            columns = [columns]
        columns = list(columns)
        names = self.schema.names
        missing = [name for name in columns if name not in names]
        if missing:
            available = ", ".join(names[:20]) + (" ..." if len(names) > 20 else "")
            raise DataError(
                f"Column(s) {missing} not in {self.description}; choose from: {available}. "
                f"Received: columns={columns!r}"
            )
        return columns

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.description!r})"


def check_count(value: int, name: str, *, minimum: int) -> int:
    """A whole number of at least ``minimum``, or ``UserInputError``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserInputError(
            f"{name} must be a whole number >= {minimum}. Received: {name}={value!r}"
        )
    return value
