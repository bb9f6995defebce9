"""Raw columns -> the arrays a deepspark Keras model takes.

Strings cannot enter torch tensors, so categorical levels become integer codes here, from the
vocabulary stored with the model: 0 = missing, 1 = unseen level, 2.. = vocabulary order. All
numeric preprocessing (imputation, log scaling, normalization, missing indicators) and the
one-hot / embedding of those codes happen inside the Keras model.

A number that is not finite as float32 (``inf``, ``-inf``, or a magnitude beyond about 3.4e38)
is encoded as missing, so the model imputes it like an empty cell: one such cell would otherwise
turn the whole row's prediction (and, in training, the loss) into NaN.
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd

from deepspark.data.schema import FeatureSchema, numeric_values, require_columns
from deepspark.errors import DataError

MISSING_CODE = 0
UNSEEN_CODE = 1
FIRST_LEVEL_CODE = 2
NUMERIC_INPUT = "numeric"
CATEGORICAL_INPUT = "categorical"


def encode_features(frame: pd.DataFrame, schema: FeatureSchema) -> dict[str, np.ndarray]:
    """Encode the model's columns of ``frame`` (by name; extra columns are ignored).

    Returns:
        ``{"numeric": float32 (rows, n_numeric) with NaN for missing,
        "categorical": int32 (rows, n_categorical)}``; a key is absent when the model has no
        column of that kind.

    Raises:
        UserInputError: Missing columns (all named) or text in a numeric column.
    """
    require_columns(frame, schema)
    inputs: dict[str, np.ndarray] = {}
    if schema.numeric_names:
        columns = [_numeric_column(frame[name], name) for name in schema.numeric_names]
        inputs[NUMERIC_INPUT] = _finite_or_nan(np.stack(columns, axis=1))
    if schema.categorical_names:
        codes = [
            _category_codes(frame[spec.name], spec.vocabulary) for spec in schema.categorical_specs
        ]
        inputs[CATEGORICAL_INPUT] = np.stack(codes, axis=1).astype(np.int32, copy=False)
    return inputs


def _numeric_column(column: pd.Series, name: str) -> np.ndarray:
    with np.errstate(over="ignore"):  # beyond float32's range: inf, then missing
        return numeric_values(column, name, training=False).astype(np.float32, copy=False)


def _finite_or_nan(numeric: np.ndarray) -> np.ndarray:
    """``numeric`` (a fresh float32 array, changed in place) with non-finite values as NaN."""
    numeric[~np.isfinite(numeric)] = np.nan
    return numeric


def _category_codes(column: pd.Series, vocabulary: tuple[str, ...]) -> np.ndarray:
    """Levels -> codes with one dictionary lookup per value (a few microseconds for a
    serving-sized request; ``pandas.Categorical`` costs about a millisecond per call); values
    are matched as their text (``str(value)``), as the vocabulary was learned."""
    values = column.to_numpy(dtype=object)
    present = ~pd.isna(values)
    if pd.api.types.infer_dtype(values, skipna=True) not in ("string", "empty"):
        values = _as_text(values, present)
    positions = _vocabulary_positions(vocabulary)
    found = np.fromiter(
        (positions.get(value, -1) for value in values),  # missing values are never levels
        dtype=np.int64,
        count=len(values),
    )
    return _split_missing(found, present)


def _as_text(values: np.ndarray, present: np.ndarray) -> np.ndarray:
    """The present values as text, the rest ``None`` (only for columns that are not all text)."""
    text = np.full(len(values), None, dtype=object)
    text[present] = [str(value) for value in values[present]]
    return text


@functools.lru_cache(maxsize=64)
def _vocabulary_positions(vocabulary: tuple[str, ...]) -> dict[str, int]:
    return {level: position for position, level in enumerate(vocabulary)}


def _split_missing(found: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Vocabulary positions (-1 where not found) -> codes: missing, unseen, then levels."""
    return np.where(
        found >= 0, found + FIRST_LEVEL_CODE, np.where(present, UNSEEN_CODE, MISSING_CODE)
    ).astype(np.int32)


def encode_arrow_features(features, schema: FeatureSchema) -> dict[str, np.ndarray]:
    """Arrow feature columns -> the model's inputs, exactly as ``encode_features`` builds them
    from pandas (float32 numerics with NaN for nulls, int32 vocabulary codes), without pandas.

    Args:
        features: One Arrow array per feature in schema order (``double`` for numeric features,
            ``string`` for categorical ones, as ``spark.columns.feature_columns`` casts them),
            or a ``pyarrow.Table`` / ``RecordBatch`` holding them by name.
        schema: The model's feature schema (a table model).

    Returns:
        The same dictionary as ``encode_features``.
    """
    if hasattr(features, "column_names"):
        features = [features.column(name) for name in schema.feature_names]
    by_name = dict(zip(schema.feature_names, features, strict=True))
    rows = len(features[0]) if len(features) else 0
    inputs: dict[str, np.ndarray] = {}
    if schema.numeric_names:
        numeric = np.empty((rows, len(schema.numeric_names)), dtype=np.float32)
        with np.errstate(over="ignore"):
            for position, name in enumerate(schema.numeric_names):
                numeric[:, position] = _arrow_numeric_values(by_name[name])
        inputs[NUMERIC_INPUT] = _finite_or_nan(numeric)
    if schema.categorical_names:
        codes = np.empty((rows, len(schema.categorical_names)), dtype=np.int32)
        for position, spec in enumerate(schema.categorical_specs):
            codes[:, position] = _arrow_category_codes(by_name[spec.name], spec.vocabulary)
        inputs[CATEGORICAL_INPUT] = codes
    return inputs


def _arrow_numeric_values(array) -> np.ndarray:
    """A double Arrow array as floats, nulls as NaN (no copy when it has no nulls)."""
    import pyarrow as pa

    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    return array.to_numpy(zero_copy_only=False)


def _arrow_category_codes(array, vocabulary: tuple[str, ...]) -> np.ndarray:
    """Text levels -> codes with one hash lookup (``pyarrow.compute.index_in``)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    levels = pa.array(list(vocabulary), type=array.type)
    found = pc.fill_null(pc.index_in(array, value_set=levels), -1).to_numpy()
    return _split_missing(found, array.is_valid().to_numpy(zero_copy_only=False))


def encode_target(target: pd.Series, schema: FeatureSchema) -> np.ndarray:
    """Regression: float32 (rows, 1). Classification: int32 class index (rows,) by label order."""
    if schema.task == "regression":
        return target.to_numpy(dtype=np.float32).reshape(-1, 1)
    index = {label: position for position, label in enumerate(schema.class_labels)}
    codes = target.map(index)
    if codes.isna().any():
        unknown = sorted(set(target[codes.isna()].astype(str)))[:5]
        raise DataError(
            f"Target has labels the model does not know: {', '.join(unknown)}; "
            f"known labels are {list(schema.class_labels)}."
        )
    return codes.to_numpy(dtype=np.int32)
