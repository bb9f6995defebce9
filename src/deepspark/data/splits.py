"""Seeded train / validation / test splits: a stratified permutation of an in-memory table
(``split_frame``), or a per-row hash that streams (``split_codes``, ``hash_split``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from deepspark.errors import DataError, UserInputError

MIN_TRAIN_ROWS = 10
MIN_EVAL_ROWS = 2


@dataclasses.dataclass(frozen=True)
class DataSplit:
    """The three splits of one table. The test split is scored once, at the end."""

    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def split_frame(
    frame: pd.DataFrame,
    *,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    stratify: pd.Series | None = None,
) -> DataSplit:
    """Split rows at random (per class when ``stratify`` is given), reproducibly for a seed.

    Raises:
        DataError: When a split would be too small to train or evaluate on.
    """
    rng = np.random.default_rng(seed)
    if stratify is None:
        groups = [np.arange(len(frame))]
    else:
        codes = pd.factorize(stratify.to_numpy(), sort=True)[0]
        groups = [np.flatnonzero(codes == code) for code in range(codes.max() + 1)]
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for group in groups:
        shuffled = rng.permutation(group)
        n_val = int(round(len(shuffled) * val_fraction))
        n_test = int(round(len(shuffled) * test_fraction))
        parts["val"].append(shuffled[:n_val])
        parts["test"].append(shuffled[n_val : n_val + n_test])
        parts["train"].append(shuffled[n_val + n_test :])
    indices = {name: np.sort(np.concatenate(chunks)) for name, chunks in parts.items()}
    sizes = {name: len(rows) for name, rows in indices.items()}
    check_split_sizes(len(frame), sizes, test_fraction)
    return DataSplit(
        **{name: frame.iloc[rows].reset_index(drop=True) for name, rows in indices.items()}
    )


def check_split_sizes(total: int, sizes: dict[str, int], test_fraction: float) -> None:
    """Raise ``DataError`` when a split would be too small to train or evaluate on."""
    too_small = (
        sizes["train"] < MIN_TRAIN_ROWS
        or sizes["val"] < MIN_EVAL_ROWS
        or (test_fraction > 0 and sizes["test"] < MIN_EVAL_ROWS)
    )
    if too_small:
        raise DataError(
            f"Too few rows for the split: {total} rows give {sizes['train']} train / "
            f"{sizes['val']} validation / {sizes['test']} test; need at least {MIN_TRAIN_ROWS} "
            f"train and {MIN_EVAL_ROWS} validation and test rows. Use more data or change "
            f"--val-fraction / --test-fraction. Received: rows={total}"
        )


# --- Per-row hash splits -------------------------------------------------------------------------
#
# A row's split is a function of its values and the seed only, so a streaming pass, every batch
# size, every reader (pandas, Arrow CSV, Parquet) and every world size give each row the same
# split, and duplicated rows always share one (no leakage of a duplicate between train and test).

TRAIN_CODE, VAL_CODE, TEST_CODE = 0, 1, 2
_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = np.uint64(0x94D049BB133111EB)
_NULL_WORD = np.uint64(0x7FF8_DEAD_BEEF_0001)  # never a canonical number: NaN is mapped here
_TEXT_WORD = np.uint64(0x5EED_7E57_0BAD_F00D)
# pandas' and Arrow's default CSV null markers: Arrow keeps them as text in string columns.
_NULL_TEXT = sorted(
    ["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN"]
    + ["<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"]
)
_BOOL_TEXT = {"True": 1.0, "TRUE": 1.0, "true": 1.0, "False": 0.0, "FALSE": 0.0, "false": 0.0}
_UNIT = 2.0**-53
_DISTINCT_PROBE = 4096
# A superset of what pandas.to_numeric parses, to skip the slow failing parse of plain text.
_NUMBER_PREFIX = r"^\s*[+-]?(\d|\.\d|[iI][nN][fF]|[nN][aA][nN])"


def split_codes(
    rows: Any,
    *,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    columns: Sequence[str] | None = None,
) -> np.ndarray:
    """The split of each row from a seeded 64-bit hash of its values: 0 train, 1 val, 2 test.

    The hash maps a row to ``u`` in [0, 1): ``u < val_fraction`` is validation,
    ``u < val_fraction + test_fraction`` test, the rest training. It depends on nothing but the
    row's values in ``columns`` and the seed, so any batching of the same rows, any reader and
    any number of workers agree, and duplicated rows always land in the same split (a
    duplicated row never sits in train and test at once).

    Values are canonicalised first, so that the dtypes a reader chooses do not matter: every
    number (int, float, bool, nullable, decimal) hashes as its float64 value with -0.0 == 0.0;
    every missing value (NaN, None, ``pd.NA``, Arrow null) and the CSV null markers that Arrow
    keeps as text in string columns (``""``, ``"NA"``, ``"NaN"``, ``"None"``, ...) as one null
    token; text that reads as a number or a boolean (``"12"``, ``"True"``) as that number, since
    a chunked CSV reader gives the same cell as a number in one chunk and as text in another;
    other text as its UTF-8 string, whatever its dtype (object, string, categorical, Arrow
    string or dictionary); datetimes as their ``YYYY-MM-DD HH:MM:SS`` text.

    Args:
        rows: A pandas DataFrame or a pyarrow RecordBatch or Table.
        seed: Different seeds give independent splits.
        val_fraction: Expected share of validation rows.
        test_fraction: Expected share of test rows.
        columns: The columns that identify a row (default: all). They are hashed in sorted
            name order, so the column order in the file does not matter.

    Returns:
        ``int8`` codes, one per row.

    Raises:
        UserInputError: Fractions outside [0, 1) or summing to 1 or more, unknown or repeated
            columns, or rows of another type.

    Example:
        >>> codes = split_codes(frame, seed=0, val_fraction=0.15, test_fraction=0.15)
        >>> train = frame[codes == TRAIN_CODE]
    """
    _check_fractions(val_fraction, test_fraction)
    position = _row_positions(rows, seed=seed, columns=columns)
    codes = np.full(len(position), TRAIN_CODE, dtype=np.int8)
    codes[position < val_fraction + test_fraction] = TEST_CODE
    codes[position < val_fraction] = VAL_CODE
    return codes


def hash_split(
    frame: pd.DataFrame,
    *,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    columns: Sequence[str] | None = None,
) -> DataSplit:
    """Split an in-memory table with ``split_codes``, keeping the row order within each split.

    Raises:
        UserInputError: Bad fractions or unknown columns (see ``split_codes``).
        DataError: When a split would be too small to train or evaluate on.
    """
    codes = split_codes(
        frame, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction, columns=columns
    )
    parts = {"train": TRAIN_CODE, "val": VAL_CODE, "test": TEST_CODE}
    sizes = {name: int(np.count_nonzero(codes == code)) for name, code in parts.items()}
    check_split_sizes(len(frame), sizes, test_fraction)
    return DataSplit(
        **{name: frame[codes == code].reset_index(drop=True) for name, code in parts.items()}
    )


def content_digest(rows: Any, *, seed: int = 0) -> int:
    """An order-independent 64-bit digest of the rows' values (the sum of their row hashes,
    modulo 2**64): parts of a table (batches, Spark partitions) add up to the table's digest."""
    position = _row_positions(rows, seed=seed, columns=None)
    return int(np.sum((position * 2.0**53).astype(np.uint64), dtype=np.uint64))


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    valid = 0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1
    if not valid:
        raise UserInputError(
            "Invalid split fractions; each must be in [0, 1) and together below 1. "
            f"Received: val_fraction={val_fraction}, test_fraction={test_fraction}"
        )


def _row_positions(rows: Any, *, seed: int, columns: Sequence[str] | None) -> np.ndarray:
    """Each row's seeded hash as a float64 in [0, 1)."""
    is_frame = isinstance(rows, pd.DataFrame)
    if not is_frame and not hasattr(rows, "column_names"):
        raise UserInputError(
            "Rows to split must be a pandas DataFrame or a pyarrow RecordBatch or Table. "
            f"Received: type={type(rows).__name__}"
        )
    available = [str(name) for name in rows.columns] if is_frame else list(rows.column_names)
    names = sorted(available if columns is None else {str(name) for name in columns})
    if len(set(available)) < len(available):
        raise UserInputError(
            "Split columns must have distinct names; rename the repeated columns. "
            f"Received: columns={available}"
        )
    missing = [name for name in names if name not in available]
    if missing:
        raise UserInputError(
            f"Split column(s) not found: {', '.join(missing)}; choose from: "
            f"{', '.join(available)}. Received: columns={list(columns or ())}"
        )
    seed_key = _mix_int(seed & _MASK64)
    total = np.zeros(rows.num_rows if not is_frame else len(rows), dtype=np.uint64)
    lookup = dict(zip(available, rows.columns, strict=True)) if is_frame else None
    for position, name in enumerate(names):
        if is_frame:
            words = _series_words(rows[lookup[name]])
        else:
            words = _arrow_words(rows.column(name))
        words ^= np.uint64(_mix_int(seed_key ^ ((position + 1) * _GOLDEN & _MASK64)))
        total += _mix(words)
    total += np.uint64(seed_key)
    return (_mix(total) >> np.uint64(11)).astype(np.float64) * _UNIT


def _mix_int(value: int) -> int:
    """splitmix64's finaliser on a Python integer."""
    value = (value ^ (value >> 30)) * int(_MIX_1) & _MASK64
    value = (value ^ (value >> 27)) * int(_MIX_2) & _MASK64
    return value ^ (value >> 31)


def _mix(words: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, in place on a uint64 array (multiplication wraps modulo 2**64)."""
    scratch = np.empty_like(words)
    for shift, multiplier in ((30, _MIX_1), (27, _MIX_2)):
        np.right_shift(words, np.uint64(shift), out=scratch)
        words ^= scratch
        words *= multiplier
    np.right_shift(words, np.uint64(31), out=scratch)
    words ^= scratch
    return words


def _number_words(values: np.ndarray) -> np.ndarray:
    """The canonical word of float64 values: their bits, -0.0 as 0.0, NaN as the null token."""
    values = np.array(values, dtype=np.float64)  # a copy we may change
    values += 0.0  # -0.0 + 0.0 == +0.0
    words = values.view(np.uint64)
    words[np.isnan(values)] = _NULL_WORD
    return words


def _series_words(column: pd.Series) -> np.ndarray:
    dtype = column.dtype
    if isinstance(dtype, pd.ArrowDtype | pd.StringDtype):
        return _arrow_words(_require_pyarrow().array(column.array))
    if pd.api.types.is_datetime64_any_dtype(dtype):
        # As the text pandas reads from a CSV in which Arrow finds timestamps.
        codes, uniques = pd.factorize(column, use_na_sentinel=True)
        text = np.asarray(pd.DatetimeIndex(uniques).strftime("%Y-%m-%d %H:%M:%S"), dtype=object)
        return _take_level_words(_level_words(text), codes)
    if pd.api.types.is_timedelta64_dtype(dtype):
        nanoseconds = column.astype("timedelta64[ns]").to_numpy().view(np.int64)
        values = nanoseconds.astype(np.float64)
        values[nanoseconds == np.iinfo(np.int64).min] = np.nan  # NaT
        return _number_words(values)
    if pd.api.types.is_numeric_dtype(dtype):  # bool, int, float, nullable Int64 / boolean
        return _number_words(column.to_numpy(dtype=np.float64, na_value=np.nan))
    if isinstance(dtype, pd.CategoricalDtype):
        levels = column.cat.categories
        return _take_level_words(_level_words(levels.array), column.cat.codes.to_numpy())
    codes, uniques = pd.factorize(column, use_na_sentinel=True)
    return _take_level_words(_level_words(uniques), codes)


def _take_level_words(level_words: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Words of coded values; code -1 (missing) takes the null token."""
    return np.take(np.append(level_words, _NULL_WORD), codes)


def _level_words(levels: Any) -> np.ndarray:
    """Canonical words of distinct values (an array of text, numbers or a mix)."""
    if isinstance(levels, pd.Index):
        levels = levels.array
    if isinstance(getattr(levels, "dtype", None), pd.StringDtype | pd.ArrowDtype):
        return _arrow_level_words(_require_pyarrow().array(levels))
    levels = np.asarray(levels)
    if levels.dtype != object:
        return _series_words(pd.Series(levels))
    words = np.full(len(levels), _NULL_WORD, dtype=np.uint64)
    missing = pd.isna(levels)
    if pd.api.types.infer_dtype(levels, skipna=True) in ("string", "empty"):
        is_text = ~missing
    else:
        levels = np.array([_as_text_or_number(value) for value in levels], dtype=object)
        is_text = np.array([isinstance(value, str) for value in levels], dtype=bool) & ~missing
    numbers = ~is_text & ~missing
    words[numbers] = _number_words(levels[numbers].astype(np.float64))
    if is_text.any():
        pyarrow = _require_pyarrow()
        words[is_text] = _text_words(pyarrow.array(levels[is_text], type=pyarrow.large_string()))
    return words


def _as_text_or_number(value: Any) -> Any:
    if isinstance(value, str) or value is None:
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    try:
        return float(value)  # bool, int, float, Decimal, NumPy scalars
    except (TypeError, ValueError):
        return str(value)


def _text_words(text: Any) -> np.ndarray:
    """Words of a pyarrow string array: null markers as missing, numeric or boolean text as the
    number it reads as (a CSV reader may give one cell as a number in one chunk and as text in
    another), any other text hashed from its UTF-8 bytes."""
    pyarrow = _require_pyarrow()
    compute = _require_pyarrow("pyarrow.compute")
    text = text.cast(pyarrow.large_string())
    words = np.full(len(text), _NULL_WORD, dtype=np.uint64)
    null = _flags(compute.is_in(text, value_set=pyarrow.array(_NULL_TEXT, pyarrow.large_string())))
    null |= _flags(compute.is_null(text))
    maybe_number = _flags(compute.match_substring_regex(text, _NUMBER_PREFIX)) & ~null
    maybe_number |= _flags(compute.is_in(text, value_set=pyarrow.array(list(_BOOL_TEXT))))
    numbers = np.flatnonzero(maybe_number)
    candidates = pd.Series(text.take(numbers).to_numpy(zero_copy_only=False), dtype=object)
    parsed = pd.to_numeric(candidates, errors="coerce").to_numpy(np.float64, na_value=np.nan)
    booleans = candidates.map(_BOOL_TEXT).to_numpy(np.float64, na_value=np.nan)
    parsed = np.where(np.isnan(booleans), parsed, booleans)
    numbers = numbers[~np.isnan(parsed)]
    words[numbers] = _number_words(parsed[~np.isnan(parsed)])
    plain = ~null
    plain[numbers] = False
    if plain.any():
        strings = text.filter(pyarrow.array(plain)).to_numpy(zero_copy_only=False)
        words[plain] = pd.util.hash_array(strings, categorize=False) ^ _TEXT_WORD
    return words


def _flags(mask: Any) -> np.ndarray:
    return mask.fill_null(False).to_numpy(zero_copy_only=False).astype(bool)


def _arrow_words(column: Any) -> np.ndarray:
    """Canonical words of a pyarrow Array or ChunkedArray, chunk by chunk."""
    chunks = column.chunks if hasattr(column, "chunks") else [column]
    if not chunks:
        return np.zeros(0, dtype=np.uint64)
    return np.concatenate([_arrow_array_words(chunk) for chunk in chunks])


def _arrow_array_words(array: Any) -> np.ndarray:
    pa = _require_pyarrow()
    kind = array.type
    if pa.types.is_null(kind):
        return np.full(len(array), _NULL_WORD, dtype=np.uint64)
    if pa.types.is_dictionary(kind):
        codes = array.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
        return _take_level_words(_arrow_level_words(array.dictionary), codes)
    numeric = pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)
    if numeric or pa.types.is_boolean(kind):
        return _number_words(array.cast(pa.float64()).to_numpy(zero_copy_only=False))
    if _is_text(kind):
        compute = _require_pyarrow("pyarrow.compute")
        head = array.slice(0, _DISTINCT_PROBE)
        if len(array) > _DISTINCT_PROBE and compute.count_distinct(head).as_py() > len(head) // 2:
            return _text_words(array)  # mostly distinct values: encoding them would not pay
        return _arrow_array_words(compute.dictionary_encode(array))
    return _series_words(array.to_pandas())  # temporal, nested: as pandas sees them


def _arrow_level_words(levels: Any) -> np.ndarray:
    """Words of the distinct values of a dictionary."""
    return _text_words(levels) if _is_text(levels.type) else _arrow_array_words(levels)


def _is_text(kind: Any) -> bool:
    types = _require_pyarrow().types
    checks = (types.is_string, types.is_large_string, types.is_binary, types.is_large_binary)
    return any(check(kind) for check in checks)


def _require_pyarrow(module_name: str = "pyarrow") -> Any:
    from deepspark._optional import require

    return require(module_name, feature="Hash splits")
