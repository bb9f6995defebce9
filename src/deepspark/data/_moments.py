"""Mergeable per-column moments and reservoir samples for ``data.statistics``.

Both pieces can be built apart (one per chunk, or one per Spark partition) and merged later into
what one pass over all the rows gives: the moments to rounding, the sample as a uniform sample.
"""

from __future__ import annotations

import numpy as np

# A spread below this counts as no spread (the same rule as models.preprocessing).
TINY_SPREAD = 1e-12
# numpy's hypergeometric sampler takes populations below this size.
_HYPERGEOMETRIC_LIMIT = 10**9


class Moments:
    """Count, mean and central sums of squares and cubes per column, merged chunk by chunk with
    the pairwise update of Chan, Golub and LeVeque (stable, unlike raw power sums).

    Args:
        width: Number of columns.
    """

    def __init__(self, width: int):
        self.count = np.zeros(width)
        self.mean = np.zeros(width)
        self.m2 = np.zeros(width)
        self.m3 = np.zeros(width)

    def add(self, values: np.ndarray, columns: np.ndarray, missing: np.ndarray) -> None:
        """Merge the values (rows, len(columns)) into ``columns``, leaving out ``missing`` ones."""
        count_b = (len(values) - missing.sum(axis=0)).astype(np.float64)
        has = count_b > 0
        if not has.all():
            columns, values, missing, count_b = (
                columns[has],
                values[:, has],
                missing[:, has],
                count_b[has],
            )
        gaps = missing.any()
        deviation = np.where(missing, 0.0, values) if gaps else values.copy()
        mean_b = deviation.sum(axis=0) / count_b
        deviation -= mean_b
        if gaps:
            deviation[missing] = 0.0
        powers = deviation * deviation
        m2_b = powers.sum(axis=0)
        powers *= deviation
        m3_b = powers.sum(axis=0)
        self._merge(columns, count_b, mean_b, m2_b, m3_b)

    def merge(self, other: Moments) -> None:
        """Fold the moments of other rows (same width) into these, column by column."""
        columns = np.flatnonzero(other.count > 0)
        self._merge(
            columns,
            other.count[columns],
            other.mean[columns],
            other.m2[columns],
            other.m3[columns],
        )

    def _merge(self, columns, count_b, mean_b, m2_b, m3_b) -> None:
        count_a, mean_a = self.count[columns], self.mean[columns]
        m2_a, m3_a = self.m2[columns], self.m3[columns]
        count = count_a + count_b
        delta = mean_b - mean_a
        self.m3[columns] = (
            m3_a
            + m3_b
            + delta**3 * count_a * count_b * (count_a - count_b) / count**2
            + 3.0 * delta * (count_a * m2_b - count_b * m2_a) / count
        )
        self.m2[columns] = m2_a + m2_b + delta**2 * count_a * count_b / count
        self.mean[columns] = np.where(count_a == 0, mean_b, mean_a + delta * count_b / count)
        self.count[columns] = count

    def means(self) -> np.ndarray:
        return np.where(self.count > 0, self.mean, np.nan)

    def deviations(self) -> np.ndarray:
        """Population standard deviation (``np.std``), NaN for an empty column."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.sqrt(self.m2 / self.count)

    def skewness(self) -> np.ndarray:
        spread = self.deviations()
        with np.errstate(invalid="ignore", divide="ignore"):
            skew = (self.m3 / self.count) / spread**3
        return np.where(spread >= TINY_SPREAD, skew, 0.0)


def merge_samples(
    first: np.ndarray,
    first_rows: int,
    second: np.ndarray,
    second_rows: int,
    *,
    capacity: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """A uniform sample of the union of two row sets, from a uniform sample of each.

    ``first`` is a uniform sample of ``min(capacity, first_rows)`` of the ``first_rows`` rows
    (likewise ``second``). The union's sample takes ``min(capacity, first_rows + second_rows)``
    rows: how many come from each side follows the hypergeometric law (each side weighted by
    the rows it stands for), then that many are drawn uniformly from the side's sample. A
    uniform subset of a uniform sample is uniform, so every row of the union is kept with the
    same probability. Rows keep their order within each side, the first side's rows first.

    Returns:
        The merged sample (same dtype), at most ``capacity`` rows.
    """
    size = min(capacity, first_rows + second_rows)
    if max(first_rows, second_rows) < _HYPERGEOMETRIC_LIMIT:
        from_first = int(rng.hypergeometric(first_rows, second_rows, size))
    else:
        # Past numpy's limit the binomial law differs by a factor (N - size) / (N - 1) ~ 1.
        share = first_rows / (first_rows + second_rows)
        from_first = int(np.clip(rng.binomial(size, share), size - len(second), len(first)))
    keep_first = np.sort(rng.choice(len(first), from_first, replace=False))
    keep_second = np.sort(rng.choice(len(second), size - from_first, replace=False))
    return np.concatenate([first[keep_first], second[keep_second]])
