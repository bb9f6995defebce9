"""What training learns from its training rows, in one streaming pass with bounded memory.

``StreamingStatistics`` takes chunks of cleaned training rows (pandas chunks or converted Arrow
batches) and gives the same numbers as learning them from the whole training split in memory:
numeric imputation / log scaling / standardisation, categorical vocabularies, the regression
target's centre and scale, class counts, and a seeded uniform sample of numeric rows for the
statistics that need the data itself (quantiles).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

from deepspark.data._moments import TINY_SPREAD, Moments, merge_samples
from deepspark.data.encoding import NUMERIC_INPUT, encode_features
from deepspark.data.schema import NUMERIC, FeatureSchema, require_columns
from deepspark.errors import DataError, UserInputError

# The same rules as models.preprocessing.fit_numeric_stats and schema.learn_vocabularies.
_SKEW_FOR_LOG = 2.0
_MAX_VOCABULARY = 1000
# Past this many distinct levels in one column, the rarest half is dropped (memory bound): the
# vocabulary stays exact for columns with fewer distinct training levels.
_MAX_TRACKED_LEVELS = 200_000


@dataclasses.dataclass(frozen=True)
class NumericSummary:
    """Per-column numeric statistics; the fields of ``models.preprocessing.NumericStats``.

    Args:
        mean: Mean of each column after log scaling (NaN for a column with no value).
        scale: Standard deviation after log scaling (1.0 where it is ~0 or undefined).
        log_columns: Columns that get ``log1p``: non-negative with skewness above 2.
        missing_columns: Columns with at least one missing value.
    """

    mean: tuple[float, ...]
    scale: tuple[float, ...]
    log_columns: tuple[int, ...]
    missing_columns: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class TrainStatistics:
    """Everything training learns from the training rows (see ``StreamingStatistics``).

    Args:
        rows: Training rows seen.
        numeric: Numeric statistics, ``None`` without numeric features.
        vocabularies: Categorical levels per column, most frequent first (at most 1000).
        target_center: Mean of the regression target (0.0 for classification).
        target_scale: Standard deviation of the regression target, or 1.0.
        class_counts: Rows per label (classification), in label order.
        numeric_sample: float32 numeric rows: all of them in order when they fit in
            ``sample_rows``, else a seeded uniform sample of ``sample_rows`` rows.
    """

    rows: int
    numeric: NumericSummary | None
    vocabularies: dict[str, tuple[str, ...]]
    target_center: float
    target_scale: float
    class_counts: dict[Any, int]
    numeric_sample: np.ndarray | None


class StreamingStatistics:
    """Learn the training statistics from chunks of training rows, in one pass.

    Memory is bounded: per numeric column a count, a minimum and the moments of the raw and the
    ``log1p`` values; per categorical column the count of each level; a reservoir of at most
    ``sample_rows`` numeric rows. Every result equals what the in-memory path learns from the
    whole training split (floats to rounding), whatever the chunk sizes.

    Partial statistics merge: build one object per partition (on Spark executors, say), pickle
    them back, and ``merge`` them in partition order; the result is what one object fed all the
    rows in that order learns. Give each partition its own seed (for example
    ``seed=[seed, partition]``) so that the partitions' samples are drawn independently.

    Args:
        schema: The feature schema (``infer_schema``), vocabularies still empty.
        sample_rows: Size of the uniform sample of numeric rows kept for quantiles.
        seed: Seed of the sample (anything ``numpy.random.default_rng`` takes).

    Example:
        >>> statistics = StreamingStatistics(schema, sample_rows=100_000, seed=0)
        >>> for chunk in training_chunks:
        ...     statistics.add(chunk)
        >>> learned = statistics.finish()
        >>> statistics.merge(other_partition_statistics)  # same schema and sample_rows
    """

    def __init__(self, schema: FeatureSchema, *, sample_rows: int = 100_000, seed: Any = 0):
        if sample_rows < 1:
            raise UserInputError(
                "sample_rows must be a positive number of rows; pass 1 or more. "
                f"Received: sample_rows={sample_rows}"
            )
        self.schema = schema
        self.sample_rows = int(sample_rows)
        self.seed = seed
        self.rows_ = 0
        width = len(schema.numeric_names)
        self._numeric_schema = dataclasses.replace(
            schema, features=tuple(spec for spec in schema.features if spec.kind == NUMERIC)
        )
        self._raw = Moments(width)
        self._logged = Moments(width)
        self._minimum = np.full(width, np.inf)
        self._missing = np.zeros(width, dtype=bool)
        self._sample_parts: list[np.ndarray] = []
        self._reservoir: np.ndarray | None = None
        self._rng = np.random.default_rng(seed)
        self._level_counts: dict[str, Counter] = {
            name: Counter() for name in schema.categorical_names
        }
        self._target = Moments(1)
        self._class_counts: Counter = Counter()

    def add(self, train_rows: pd.DataFrame) -> None:
        """Add a chunk of cleaned training rows (features converted as ``infer_schema`` does,
        target present).

        Raises:
            UserInputError: A feature or the target column is missing.
        """
        require_columns(train_rows, self.schema)
        if self.schema.target not in train_rows.columns:
            raise UserInputError(
                f"Training rows lack the target column '{self.schema.target}'; pass the "
                f"cleaned rows with their target. Received: columns={list(train_rows.columns)}"
            )
        if len(train_rows) == 0:
            return
        if self.schema.numeric_names:
            numeric = encode_features(train_rows, self._numeric_schema)[NUMERIC_INPUT]
            self._add_numeric(numeric.astype(np.float64))
            self._add_sample(numeric)
        for name, counter in self._level_counts.items():
            _count_levels(counter, train_rows[name])
        self._add_target(train_rows[self.schema.target])
        self.rows_ += len(train_rows)

    def finish(self) -> TrainStatistics:
        """The statistics of all rows added so far (``add`` may continue afterwards).

        Raises:
            DataError: When no training row was added.
        """
        if self.rows_ == 0:
            raise DataError(
                "No training rows to learn statistics from; check the data and the split "
                f"fractions. Received: rows={self.rows_}"
            )
        regression = self.schema.task == "regression"
        return TrainStatistics(
            rows=self.rows_,
            numeric=self._numeric_summary() if self.schema.numeric_names else None,
            vocabularies={
                name: _top_levels(counter, _MAX_VOCABULARY)
                for name, counter in self._level_counts.items()
            },
            target_center=float(self._target.means()[0]) if regression else 0.0,
            target_scale=(float(self._target.deviations()[0]) or 1.0) if regression else 1.0,
            class_counts=dict(sorted(self._class_counts.items(), key=_label_order)),
            numeric_sample=self._sample() if self.schema.numeric_names else None,
        )

    def merge(self, other: StreamingStatistics) -> None:
        """Fold the statistics of other rows into these, in place.

        The result equals one object that saw these rows, then ``other``'s: counts,
        vocabularies, log and missing columns and class counts exactly, the float statistics to
        rounding. The numeric sample is all rows in order (these, then ``other``'s) while the
        union fits in ``sample_rows``, else a seeded uniform sample of the union. Merging an
        object without rows changes nothing; ``add`` and ``merge`` may continue afterwards.

        Args:
            other: Statistics of other rows, built with the same schema and ``sample_rows``;
                it is left unchanged.

        Raises:
            UserInputError: ``other`` is not a ``StreamingStatistics``, is this object, or has
                another schema or ``sample_rows``.
        """
        self._check_mergeable(other)
        if other.rows_ == 0:
            return
        if self.schema.numeric_names:
            self._raw.merge(other._raw)
            # Log moments of a column count only while its minimum stays >= 0, which then
            # holds on both sides: each side logged all its rows.
            self._logged.merge(other._logged)
            self._minimum = np.fmin(self._minimum, other._minimum)
            self._missing |= other._missing
            self._merge_sample(other)
        for name, counter in self._level_counts.items():
            counter.update(other._level_counts[name])
            _bound_levels(counter)
        self._target.merge(other._target)
        self._class_counts.update(other._class_counts)
        self.rows_ += other.rows_

    def _check_mergeable(self, other: object) -> None:
        if not isinstance(other, StreamingStatistics) or other is self:
            raise UserInputError(
                "Can only merge the StreamingStatistics of other rows into these; pass another "
                f"partition's statistics. Received: other={type(other).__name__}"
                + (" (this object itself)" if other is self else "")
            )
        if other.schema != self.schema:
            raise UserInputError(
                "Cannot merge statistics learned with another feature schema; build every "
                "partition's StreamingStatistics from the same schema. Received: "
                f"schema={_describe(other.schema)}, expected {_describe(self.schema)}"
            )
        if other.sample_rows != self.sample_rows:
            raise UserInputError(
                "Cannot merge statistics with another sample size; build every partition's "
                "StreamingStatistics with the same sample_rows. Received: "
                f"sample_rows={other.sample_rows}, expected {self.sample_rows}"
            )

    def _merge_sample(self, other: StreamingStatistics) -> None:
        if self.rows_ == 0:  # take other's sample as it is (copied: other stays unchanged)
            self._sample_parts = [part.copy() for part in other._sample_parts]
            self._reservoir = None if other._reservoir is None else other._reservoir.copy()
            return
        mine, theirs = self._sample(), other._sample()
        if self.rows_ + other.rows_ <= self.sample_rows:  # both samples hold all their rows
            self._sample_parts = [mine, theirs]
            return
        self._reservoir = merge_samples(
            mine, self.rows_, theirs, other.rows_, capacity=self.sample_rows, rng=self._rng
        )
        self._sample_parts = []

    def _add_numeric(self, values: np.ndarray) -> None:
        columns = np.arange(values.shape[1])
        missing = np.isnan(values)
        self._missing |= missing.any(axis=0)
        self._minimum = np.fmin(self._minimum, np.fmin.reduce(values, axis=0))  # NaN skipped
        self._raw.add(values, columns, missing)
        # Log moments only matter for columns that stay non-negative (the log1p candidates).
        candidates = np.flatnonzero(self._minimum >= 0)
        if candidates.size:
            logged = np.log1p(values[:, candidates])
            self._logged.add(logged, candidates, missing[:, candidates])

    def _add_sample(self, numeric: np.ndarray) -> None:
        """Reservoir sampling (Algorithm R), vectorised per chunk. Row ``i`` past the first
        ``sample_rows`` replaces slot ``floor(u_i * (i + 1))`` when below ``sample_rows``; the
        ``u_i`` come from one seeded stream, one draw per such row, so the sample does not
        depend on the chunk sizes."""
        capacity, start = self.sample_rows, self.rows_
        fill = max(0, min(len(numeric), capacity - start))
        if fill:
            self._sample_parts.append(numeric[:fill].copy())
        rest = numeric[fill:]
        if not len(rest):
            return
        if self._reservoir is None:
            self._reservoir = np.concatenate(self._sample_parts)
            self._sample_parts = []
        index = np.arange(start + fill, start + len(numeric), dtype=np.float64)
        slots = np.floor(self._rng.random(len(rest)) * (index + 1)).astype(np.int64)
        chosen = np.flatnonzero(slots < capacity)
        # The last row written to a slot wins, as in the one-row-at-a-time algorithm.
        _, last = np.unique(slots[chosen][::-1], return_index=True)
        chosen = chosen[len(chosen) - 1 - last]
        self._reservoir[slots[chosen]] = rest[chosen]

    def _add_target(self, target: pd.Series) -> None:
        if self.schema.task == "regression":
            values = target.to_numpy(dtype=np.float32).astype(np.float64).reshape(-1, 1)
            self._target.add(values, np.zeros(1, dtype=np.int64), np.isnan(values))
            return
        for label, count in target.value_counts(dropna=True, sort=False).items():
            key = label.item() if hasattr(label, "item") else label
            self._class_counts[key] += int(count)

    def _numeric_summary(self) -> NumericSummary:
        raw, logged = self._raw, self._logged
        log_mask = (raw.count > 2) & (self._minimum >= 0) & (raw.skewness() > _SKEW_FOR_LOG)
        mean = np.where(log_mask, logged.means(), raw.means())
        spread = np.where(log_mask, logged.deviations(), raw.deviations())
        with np.errstate(invalid="ignore"):
            scale = np.where(spread > TINY_SPREAD, spread, 1.0)
        return NumericSummary(
            mean=tuple(float(value) for value in mean),
            scale=tuple(float(value) for value in scale),
            log_columns=tuple(int(column) for column in np.flatnonzero(log_mask)),
            missing_columns=tuple(int(column) for column in np.flatnonzero(self._missing)),
        )

    def _sample(self) -> np.ndarray:
        if self._reservoir is not None:
            return self._reservoir.copy()
        if not self._sample_parts:
            return np.zeros((0, len(self.schema.numeric_names)), dtype=np.float32)
        return np.concatenate(self._sample_parts)


def _count_levels(counter: Counter, column: pd.Series) -> None:
    """Add a chunk's level counts, as ``learn_vocabularies`` counts them (text, no missing)."""
    counts = column.value_counts(dropna=True, sort=False)
    for level, count in zip(counts.index.astype(str), counts.to_numpy(), strict=True):
        counter[level] += int(count)
    _bound_levels(counter)


def _bound_levels(counter: Counter) -> None:
    """Past ``_MAX_TRACKED_LEVELS`` levels, keep the more frequent half (memory bound)."""
    if len(counter) > _MAX_TRACKED_LEVELS:
        kept = _top_levels(counter, _MAX_TRACKED_LEVELS // 2)
        for level in set(counter) - set(kept):
            del counter[level]


def _top_levels(counter: Counter, limit: int) -> tuple[str, ...]:
    """Most frequent first, ties by level: the order ``learn_vocabularies`` uses."""
    ordered = sorted(counter.items(), key=lambda item: (-item[1], item[0]))
    return tuple(level for level, _ in ordered[:limit])


def _label_order(item: tuple[Any, int]) -> tuple[str, Any]:
    return (str(type(item[0])), item[0])


def _describe(schema: FeatureSchema) -> str:
    features = ", ".join(f"{spec.name}:{spec.kind}" for spec in schema.features)
    return (
        f"(features=[{features}], target={schema.target!r}, task={schema.task!r}, "
        f"class_labels={list(schema.class_labels)})"
    )
