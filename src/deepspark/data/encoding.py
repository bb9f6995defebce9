"""Raw columns -> the arrays a deepspark Keras model takes.

Strings cannot enter torch tensors, so categorical levels become integer codes here, from the
vocabulary stored with the model: 0 = missing, 1 = unseen level, 2.. = vocabulary order. All
numeric preprocessing (imputation, log scaling, normalization, missing indicators) and the
one-hot / embedding of those codes happen inside the Keras model.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from deepspark.data.schema import FeatureSchema, require_columns, text_in_numeric_error
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
        inputs[NUMERIC_INPUT] = np.stack(columns, axis=1).astype(np.float32, copy=False)
    if schema.categorical_names:
        codes = [
            _category_codes(frame[spec.name], spec.vocabulary) for spec in schema.categorical_specs
        ]
        inputs[CATEGORICAL_INPUT] = np.stack(codes, axis=1).astype(np.int32, copy=False)
    return inputs


def _numeric_column(column: pd.Series, name: str) -> np.ndarray:
    if pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
        return column.to_numpy(dtype=np.float32, na_value=np.nan)
    parsed = pd.to_numeric(column, errors="coerce")
    if (parsed.isna() & column.notna()).any():
        raise text_in_numeric_error(column, parsed, name, training=False)
    return parsed.to_numpy(dtype=np.float32, na_value=np.nan)


def _category_codes(column: pd.Series, vocabulary: tuple[str, ...]) -> np.ndarray:
    categories = pd.CategoricalDtype(list(vocabulary))
    present = column.notna().to_numpy()
    as_text = (
        column.astype(object)
        .where(column.notna(), None)
        .map(lambda value: None if value is None else str(value))
    )
    codes = as_text.astype(categories).cat.codes.to_numpy().astype(np.int32)
    # pandas gives -1 for both missing and unseen; split them.
    return np.where(
        codes >= 0, codes + FIRST_LEVEL_CODE, np.where(present, UNSEEN_CODE, MISSING_CODE)
    ).astype(np.int32)


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
