"""Running a deepspark Keras model on encoded inputs, without ``fit``/``predict`` overhead."""

from __future__ import annotations

import numpy as np
import pandas as pd

from deepspark.data.schema import FeatureSchema, label_type
from deepspark.runtime import DEFAULT_BATCH_ROWS


def class_probabilities(output: np.ndarray, task: str) -> np.ndarray:
    """Model output -> (rows, classes) probabilities (a binary model outputs P(class 1))."""
    if task == "binary":
        positive = output.reshape(-1).astype(np.float64)
        return np.stack([1.0 - positive, positive], axis=1)
    return output.astype(np.float64)


def predict_arrays(model, inputs: dict[str, np.ndarray], *, batch_rows: int = DEFAULT_BATCH_ROWS):
    """Forward pass in inference mode, in chunks of ``batch_rows`` (see ``deepspark.runtime``).

    Returns:
        A float array: (rows, 1) for regression and binary, (rows, classes) for multiclass.
    """
    from deepspark.runtime import forward

    return forward(model, inputs, batch_rows=batch_rows)


def probability_column(label) -> str:
    """Name of the probability column of one class."""
    return f"probability_{label}"


def format_predictions(output: np.ndarray, schema: FeatureSchema, index=None) -> pd.DataFrame:
    """Raw model output -> ``prediction`` (and ``probability_<label>`` per class) columns."""
    if schema.task == "regression":
        return pd.DataFrame({"prediction": output.reshape(-1).astype(np.float64)}, index=index)
    probabilities = class_probabilities(output, schema.task)
    labels = np.asarray(schema.class_labels, dtype=object)
    columns = {
        "prediction": labels[np.argmax(probabilities, axis=1)]
        if len(probabilities)
        else np.array([], dtype=object)
    }
    for position, label in enumerate(schema.class_labels):
        columns[probability_column(label)] = probabilities[:, position]
    frame = pd.DataFrame(columns, index=index)
    frame["prediction"] = frame["prediction"].astype(_label_dtype(schema.class_labels))
    return frame


_PANDAS_LABEL_DTYPES = {"boolean": "bool", "long": "int64", "double": "float64", "string": "object"}


def _label_dtype(labels) -> str:
    return _PANDAS_LABEL_DTYPES[label_type(labels)]
