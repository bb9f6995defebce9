"""A deepspark model seen as a function of a raw-feature matrix, for model-agnostic explainers.

The matrix has one float column per raw feature, in schema order: numeric columns hold their
values (NaN = missing), categorical columns hold the model's integer codes (0 missing, 1 unseen,
2.. vocabulary). Codes and levels map one to one, so perturbing a code is perturbing the raw
column, and attributions land on raw columns without decoding strings on every model call.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from deepspark.data.encoding import (
    CATEGORICAL_INPUT,
    FIRST_LEVEL_CODE,
    NUMERIC_INPUT,
    encode_features,
)
from deepspark.data.schema import CATEGORICAL
from deepspark.explain.base import Explanation
from deepspark.models.inference import class_probabilities, predict_arrays

MISSING_LEVEL = "(missing)"
UNSEEN_LEVEL = "(unseen)"
_TINY_SPREAD = 1e-12


class TabularView:
    """Raw-feature matrices in, explained outputs out.

    Args:
        model: A loaded ``DeepsparkModel``.
    """

    def __init__(self, model):
        self.model = model
        self.schema = model.schema
        self.names = self.schema.feature_names
        kinds = [spec.kind for spec in self.schema.features]
        self.categorical_positions = [i for i, kind in enumerate(kinds) if kind == CATEGORICAL]
        self.numeric_positions = [i for i, kind in enumerate(kinds) if kind != CATEGORICAL]

    def to_matrix(self, frame: pd.DataFrame) -> np.ndarray:
        """Raw rows -> (rows, features) float64 matrix (validates columns, like scoring)."""
        inputs = encode_features(frame, self.schema)
        matrix = np.empty((len(frame), len(self.names)), dtype=np.float64)
        if NUMERIC_INPUT in inputs:
            matrix[:, self.numeric_positions] = inputs[NUMERIC_INPUT]
        if CATEGORICAL_INPUT in inputs:
            matrix[:, self.categorical_positions] = inputs[CATEGORICAL_INPUT]
        return matrix

    def model_inputs(self, matrix: np.ndarray) -> dict[str, np.ndarray]:
        """Matrix -> the Keras model's input arrays."""
        matrix = np.asarray(matrix, dtype=np.float64)
        inputs = {}
        if self.numeric_positions:
            inputs[NUMERIC_INPUT] = matrix[:, self.numeric_positions].astype(np.float32)
        if self.categorical_positions:
            codes = np.nan_to_num(matrix[:, self.categorical_positions], nan=0.0)
            inputs[CATEGORICAL_INPUT] = np.rint(codes).astype(np.int32)
        return inputs

    def outputs(self, matrix: np.ndarray) -> np.ndarray:
        """(rows, outputs): the prediction (regression) or one probability per class."""
        raw = predict_arrays(self.model.keras_model, self.model_inputs(matrix))
        if self.schema.task == "regression":
            return raw.reshape(-1, 1).astype(np.float64)
        return class_probabilities(raw, self.schema.task)

    def explained_columns(self, outputs: np.ndarray, chosen: int | None = None) -> np.ndarray:
        """Which output each row explains.

        ``chosen`` (a class position): that class's probability on every row. Otherwise:
        regression, the prediction; binary, the probability of the second (positive) label, so
        signs read the same way on every row; multiclass, the probability of the predicted class.
        """
        if chosen is not None:
            return np.full(len(outputs), int(chosen), dtype=np.int64)
        if self.schema.task == "regression":
            return np.zeros(len(outputs), dtype=np.int64)
        if self.schema.task == "binary":
            return np.ones(len(outputs), dtype=np.int64)
        return np.argmax(outputs, axis=1).astype(np.int64)

    def class_labels(self, columns: np.ndarray) -> list | None:
        """Labels of the explained classes (``None`` for regression)."""
        if self.schema.task == "regression":
            return None
        return [self.schema.class_labels[int(column)] for column in columns]

    def spread(self, background_outputs: np.ndarray, columns: np.ndarray) -> np.ndarray:
        """Per row: the standard deviation of its explained output over the background."""
        per_output = background_outputs.std(axis=0)
        per_output = np.where(per_output > _TINY_SPREAD, per_output, 1.0)
        return per_output[columns]

    def level_names(self) -> dict[int, list[str]]:
        """For each categorical position: the level name of every code."""
        return {
            position: [MISSING_LEVEL, UNSEEN_LEVEL, *self.schema.features[position].vocabulary]
            for position in self.categorical_positions
        }

    def decode(self, matrix: np.ndarray) -> pd.DataFrame:
        """Matrix -> raw-looking rows (codes back to levels), for tables and plots."""
        frame = pd.DataFrame(matrix, columns=self.names)
        for position, levels in self.level_names().items():
            codes = np.rint(np.nan_to_num(matrix[:, position])).astype(int)
            known = (codes >= FIRST_LEVEL_CODE) & (codes < len(levels))
            values = [levels[code] if ok else None for code, ok in zip(codes, known, strict=True)]
            frame[self.names[position]] = pd.Series(values, dtype=object)
        return frame


@dataclasses.dataclass(frozen=True)
class TabularBatch:
    """Rows to explain and the background, as matrices, with the model's outputs on both."""

    view: TabularView
    row_ids: np.ndarray
    matrix: np.ndarray
    background: np.ndarray
    row_outputs: np.ndarray
    background_outputs: np.ndarray
    columns: np.ndarray  # the explained output of each row

    @property
    def prediction(self) -> np.ndarray:
        return self.row_outputs[np.arange(len(self.matrix)), self.columns]

    @property
    def spread(self) -> np.ndarray:
        return self.view.spread(self.background_outputs, self.columns)

    def explanation(self, method: str, attributions, baseline, *, additive: bool, details=None):
        """The ``Explanation`` of these rows for attributions on the matrix's columns."""
        return Explanation(
            method=method,
            row_ids=self.row_ids,
            attributions=pd.DataFrame(attributions, columns=self.view.names),
            prediction=self.prediction,
            baseline=np.asarray(baseline, dtype=np.float64),
            explained_class=self.view.class_labels(self.columns),
            features=self.view.decode(self.matrix),
            additive=additive,
            additivity_scale=self.spread,
            details=details or {},
        )


def tabular_batch(
    model, frame: pd.DataFrame, background: pd.DataFrame, row_ids=None, explained_class=None
):
    """Encode rows and background, run the model on both, choose each row's explained output
    (``explained_class``: that class on every row, see ``Explainer``)."""
    from deepspark.explain.base import class_index

    chosen = None if explained_class is None else class_index(model.schema, explained_class)
    view = TabularView(model)
    rows = frame[view.names].reset_index(drop=True)
    matrix, background_matrix = view.to_matrix(rows), view.to_matrix(background)
    row_outputs = view.outputs(matrix)
    return TabularBatch(
        view=view,
        row_ids=np.arange(len(rows)) if row_ids is None else np.asarray(row_ids),
        matrix=matrix,
        background=background_matrix,
        row_outputs=row_outputs,
        background_outputs=view.outputs(background_matrix),
        columns=view.explained_columns(row_outputs, chosen),
    )
