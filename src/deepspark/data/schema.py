"""The feature schema: which raw columns feed the model, their kinds, the target and the task."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np
import pandas as pd

from deepspark.errors import DataError, UserInputError

logger = logging.getLogger(__name__)

NUMERIC = "numeric"
CATEGORICAL = "categorical"
IMAGE = "image"
# Text columns parsing as numbers in at least this share of rows are treated as broken numerics.
_MOSTLY_NUMERIC = 0.9
_MAX_CLASSES_FROM_INTEGERS = 20
_MAX_VOCABULARY = 1000


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """One raw input column.

    Args:
        name: Column name.
        kind: ``numeric`` or ``categorical``.
        dtype: The pandas dtype seen at training, for information.
        vocabulary: Categorical levels learned on the training split, most frequent first.
    """

    name: str
    kind: str
    dtype: str
    vocabulary: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class ImageSpec:
    """How an image model's raw input becomes its pixel array (decoded on the host).

    Args:
        height: Rows of the decoded, resized image.
        width: Columns of the decoded, resized image.
        channels: 3 (RGB) or 1 (grayscale).
    """

    height: int
    width: int
    channels: int = 3

    @property
    def size(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def pixel_bytes(self) -> int:
        """Bytes of one decoded uint8 image."""
        return self.height * self.width * self.channels


@dataclasses.dataclass(frozen=True)
class FeatureSchema:
    """Features, target and task of a model; stored with the model as JSON.

    An image model has one feature of kind ``image`` (encoded bytes in an ``image`` column, or
    file paths in a ``path`` column) and an ``image`` spec saying how it is decoded.
    """

    features: tuple[FeatureSpec, ...]
    target: str
    task: str
    class_labels: tuple[Any, ...] = ()
    image: ImageSpec | None = None

    @property
    def kind(self) -> str:
        """``image`` or ``tabular``: what the model takes as raw input."""
        return IMAGE if self.image is not None else "tabular"

    @property
    def numeric_names(self) -> list[str]:
        return [spec.name for spec in self.features if spec.kind == NUMERIC]

    @property
    def categorical_names(self) -> list[str]:
        return [spec.name for spec in self.features if spec.kind == CATEGORICAL]

    @property
    def feature_names(self) -> list[str]:
        return [spec.name for spec in self.features]

    @property
    def categorical_specs(self) -> list[FeatureSpec]:
        return [spec for spec in self.features if spec.kind == CATEGORICAL]

    def to_dict(self) -> dict[str, Any]:
        document = {
            "target": self.target,
            "task": self.task,
            "class_labels": list(self.class_labels),
            "features": [
                {**dataclasses.asdict(spec), "vocabulary": list(spec.vocabulary)}
                for spec in self.features
            ],
        }
        if self.image is not None:
            document["image"] = dataclasses.asdict(self.image)
        return document

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> FeatureSchema:
        features = tuple(
            FeatureSpec(
                name=item["name"],
                kind=item["kind"],
                dtype=item.get("dtype", ""),
                vocabulary=tuple(item.get("vocabulary", ())),
            )
            for item in document["features"]
        )
        image = document.get("image")
        return cls(
            features=features,
            target=document["target"],
            task=document["task"],
            class_labels=tuple(document.get("class_labels", ())),
            image=ImageSpec(**image) if image else None,
        )


def label_type(labels) -> str:
    """The one type of a classifier's labels, for every output (pandas, MLflow, Spark):
    ``boolean``, ``long``, ``double`` (numbers, mixed int and float included) or ``string``."""
    labels = list(labels)
    if not labels:
        return "double"
    if all(isinstance(label, bool) for label in labels):
        return "boolean"
    if any(isinstance(label, bool) for label in labels):
        return "string"
    if all(isinstance(label, int) for label in labels):
        return "long"
    if all(isinstance(label, int | float) for label in labels):
        return "double"
    return "string"


def infer_schema(
    frame: pd.DataFrame,
    target: str,
    *,
    task: str | None = None,
    exclude: tuple[str, ...] = (),
) -> tuple[FeatureSchema, pd.DataFrame]:
    """Infer the feature kinds and task, and clean the frame for training.

    Rows whose target is missing are dropped (the count is logged as a warning). Numeric-looking
    text columns are converted; text in a mostly numeric column is an error that names examples.

    Args:
        frame: The raw table.
        target: Name of the target column.
        task: ``regression``, ``binary`` or ``multiclass``; ``None`` infers it.
        exclude: Columns to leave out of the features.

    Returns:
        The schema (vocabularies still empty: see ``learn_vocabularies``) and the cleaned frame.

    Raises:
        DataError: Target not found or all missing, an all-missing feature, text in a numeric
            column, a single class, and similar problems with the data.
    """
    columns = [str(column) for column in frame.columns]
    frame = frame.set_axis(columns, axis=1)
    if target not in frame.columns:
        raise DataError(
            f"Target column not found; choose one of: {', '.join(columns)}. "
            f"Received: target={target!r}"
        )
    unknown = [name for name in exclude if name not in frame.columns]
    if unknown:
        raise DataError(
            f"Excluded column(s) not found: {', '.join(unknown)}; choose from: "
            f"{', '.join(columns)}. Received: exclude={','.join(exclude)}"
        )
    frame = drop_missing_target(frame, target)
    task = task or infer_task(frame[target])
    class_labels = find_class_labels(frame[target], task, target)
    feature_names = [name for name in columns if name != target and name not in exclude]
    if not feature_names:
        raise DataError(
            f"No feature columns left besides the target; give a table with at least "
            f"one feature column. Received: columns={columns}"
        )
    specs = []
    for name in feature_names:
        kind, converted = _column_kind(frame[name], name)
        frame[name] = converted
        specs.append(FeatureSpec(name=name, kind=kind, dtype=str(converted.dtype)))
    schema = FeatureSchema(
        features=tuple(specs), target=target, task=task, class_labels=class_labels
    )
    return schema, frame[feature_names + [target]]


def drop_missing_target(frame: pd.DataFrame, target: str) -> pd.DataFrame:
    """``frame`` without the rows whose target is missing or, for a numeric target, not a
    finite float32 (``inf`` or beyond about 3.4e38: the loss would be infinite)."""
    missing = frame[target].isna() | _not_finite(frame[target])
    if missing.all():
        raise DataError(
            f"Target column '{target}' has no values (all {len(frame)} rows missing or not "
            f"finite); choose another target. Received: target={target!r}"
        )
    if missing.any():
        logger.warning(
            "Dropped %d of %d rows whose target '%s' is missing or not a finite number",
            int(missing.sum()),
            len(frame),
            target,
        )
        frame = frame.loc[~missing]
    return frame.reset_index(drop=True)


def _not_finite(column: pd.Series) -> pd.Series:
    if not pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
        return pd.Series(False, index=column.index)
    with np.errstate(over="ignore"):
        values = column.to_numpy(dtype=np.float64, na_value=np.nan).astype(np.float32)
    return pd.Series(np.isinf(values), index=column.index)


def infer_task(target: pd.Series) -> str:
    """``binary`` for two values, ``multiclass`` for text or few integer values, else regression."""
    distinct = target.nunique(dropna=True)
    if distinct == 2:
        return "binary"
    numeric = pd.api.types.is_numeric_dtype(target) and not pd.api.types.is_bool_dtype(target)
    if not numeric:
        return "multiclass"
    values = target.to_numpy(dtype=float)
    integer_valued = bool(np.all(np.equal(np.mod(values, 1), 0)))
    few = distinct <= _MAX_CLASSES_FROM_INTEGERS and distinct <= max(3, 0.05 * len(values))
    return "multiclass" if integer_valued and few and distinct > 2 else "regression"


def find_class_labels(target: pd.Series, task: str, name: str) -> tuple[Any, ...]:
    if task == "regression":
        if not pd.api.types.is_numeric_dtype(target) or pd.api.types.is_bool_dtype(target):
            raise DataError(
                f"Target '{name}' is not numeric, so it cannot be a regression target; "
                f"use --task binary or --task multiclass. Received: task=regression"
            )
        return ()
    labels = sorted(target.unique().tolist(), key=lambda value: (str(type(value)), value))
    if len(labels) < 2:
        raise DataError(
            f"Target '{name}' has a single class ({labels[0]!r}); classification "
            f"needs at least two. Received: task={task}"
        )
    if task == "binary" and len(labels) != 2:
        raise DataError(
            f"Target '{name}' has {len(labels)} classes, not 2; use --task multiclass. "
            f"Received: task=binary"
        )
    return tuple(value.item() if hasattr(value, "item") else value for value in labels)


def _column_kind(column: pd.Series, name: str) -> tuple[str, pd.Series]:
    present = column.notna()
    if not present.any():
        raise DataError(
            f"Feature column '{name}' is entirely missing ({len(column)} of "
            f"{len(column)} rows empty); drop it with --exclude {name} or fill it. "
            f"Received: column={name!r}"
        )
    if pd.api.types.is_bool_dtype(column) or pd.api.types.is_numeric_dtype(column):
        return NUMERIC, _finite_numbers(column.astype("float64"), name)
    if pd.api.types.is_datetime64_any_dtype(column):
        raise DataError(
            f"Feature column '{name}' holds dates, which deepspark does not encode "
            f"yet; derive numeric columns from it or --exclude {name}. "
            f"Received: dtype={column.dtype}"
        )
    parsed = pd.to_numeric(column.where(present), errors="coerce")
    parsed_share = parsed.notna().sum() / present.sum()
    if parsed_share == 1:
        return NUMERIC, _finite_numbers(parsed.astype("float64"), name)
    if parsed_share >= _MOSTLY_NUMERIC:
        raise text_in_numeric_error(column, parsed, name)
    text = column.astype("string").astype(object).where(present, None)
    return CATEGORICAL, text


def _finite_numbers(column: pd.Series, name: str) -> pd.Series:
    """``column`` as is; its values that are not finite float32 numbers (``inf``, beyond about
    3.4e38) are counted in a warning (encoding imputes them as missing), and a column with no
    other value is an error."""
    infinite = _not_finite(column)
    count = int(infinite.sum())
    if count and count == int(column.notna().sum()):
        raise DataError(
            f"Feature column '{name}' has no finite number (all {count} values are infinite "
            f"or beyond float32's range of about 3.4e38); rescale it or drop it with "
            f"--exclude {name}. Received: column={name!r}"
        )
    if count:
        logger.warning(
            "Column '%s' has %d values that are infinite or beyond float32's range (about "
            "3.4e38); they are treated as missing (imputed)",
            name,
            count,
        )
    return column


def numeric_values(values, name: str, *, training: bool = True) -> np.ndarray:
    """``values`` (a Series or a sequence) as float64, missing values as NaN; the one check of
    numeric input that training, scoring and serving share.

    Numbers, booleans and text that parses as a number are accepted; anything else (other
    text, lists, objects) raises ``text_in_numeric_error``, naming example rows.

    Raises:
        DataError: A value that is not a number.
    """
    column = values if isinstance(values, pd.Series) else pd.Series(values, dtype=object)
    if pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
        return column.to_numpy(dtype=np.float64, na_value=np.nan)
    parsed = parse_numbers(column)
    if (parsed.isna() & column.notna()).any():
        raise text_in_numeric_error(column, parsed, name, training=training)
    return parsed.to_numpy(dtype=np.float64, na_value=np.nan)


def parse_numbers(column: pd.Series) -> pd.Series:
    """``column`` parsed as numbers, NaN where a value is missing or not a number (text,
    lists, objects): compare with ``column.notna()`` to find the values that are not numbers."""
    try:
        return pd.to_numeric(column, errors="coerce")
    except (TypeError, ValueError):  # lists or mappings in cells: parse cell by cell
        return pd.Series([_number_or_nan(value) for value in column], index=column.index)


def _number_or_nan(value) -> float:
    if isinstance(value, str | int | float | bool | np.number):
        try:
            return float(value)
        except ValueError:
            pass
    return np.nan


def text_in_numeric_error(
    column: pd.Series, parsed: pd.Series, name: str, *, training: bool = True
) -> DataError:
    """The error for a numeric column with some non-numeric cells, naming example rows."""
    bad = column[column.notna() & parsed.isna()]
    examples = ", ".join(f"row {index}: {_short(value)}" for index, value in bad.head(3).items())
    share = 100 * (1 - len(bad) / column.notna().sum())
    return DataError(
        f"Column '{name}' is numeric in {share:.0f}% of rows but has text in {len(bad)} "
        f"({examples}); fix those cells or leave them empty (empty cells are imputed)"
        f"{f', or leave the column out with --exclude {name}' if training else ''}. "
        f"Received: column={name!r}"
    )


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def learn_vocabularies(schema: FeatureSchema, train: pd.DataFrame) -> FeatureSchema:
    """Learn each categorical column's levels on the training split, most frequent first."""
    specs = []
    for spec in schema.features:
        if spec.kind == CATEGORICAL:
            counts = train[spec.name].dropna().astype(str).value_counts(sort=False)
            ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
            vocabulary = tuple(level for level, _ in ordered[:_MAX_VOCABULARY])
            spec = dataclasses.replace(spec, vocabulary=vocabulary)
        specs.append(spec)
    return dataclasses.replace(schema, features=tuple(specs))


def require_columns(frame: pd.DataFrame, schema: FeatureSchema) -> None:
    """Raise a ``UserInputError`` naming every model column the frame lacks."""
    missing = [name for name in schema.feature_names if name not in frame.columns]
    if missing:
        given = list(map(str, frame.columns))
        raise UserInputError(
            f"Data is missing {len(missing)} column(s) the model needs: {', '.join(missing)}; "
            f"add them (empty values are allowed). Received: columns={given}"
        )
