"""Running a deepspark Keras model on encoded inputs, without ``fit``/``predict`` overhead."""

from __future__ import annotations

import numpy as np
import pandas as pd

from deepspark._progress import work_progress
from deepspark.data.image_inputs import (
    ImageFiles,
    chunk_rows,
    chunks,
    decode_rows,
    image_sources,
)
from deepspark.data.schema import FeatureSchema, ImageSpec, label_type
from deepspark.models.kinds import ERROR_COLUMN, probability_column
from deepspark.runtime import DEFAULT_BATCH_ROWS

__all__ = ["ERROR_COLUMN", "format_predictions", "predict_arrays", "probability_column"]


def class_probabilities(output: np.ndarray, task: str) -> np.ndarray:
    """Model output -> (rows, classes) probabilities (a binary model outputs P(class 1))."""
    if task == "binary":
        positive = output.reshape(-1).astype(np.float64)
        return np.stack([1.0 - positive, positive], axis=1)
    return output.astype(np.float64)


def predict_arrays(model, inputs, *, batch_rows: int | None = None):
    """Forward pass in inference mode, in chunks (see ``deepspark.runtime``).

    Args:
        model: A deepspark Keras model.
        inputs: Encoded inputs by name; for an image model, uint8 pixels (NHWC) or
            ``ImageFiles`` (decoded a chunk at a time).
        batch_rows: Rows per forward pass; default 8,192 rows of a table, or as many images as
            hold about a million pixels (``data.image_inputs.chunk_rows``).

    Returns:
        A float array: (rows, 1) for regression and binary, (rows, classes) for multiclass.
    """
    from deepspark.runtime import forward

    spec = image_spec_of(inputs)
    if spec is not None:
        batch_rows = batch_rows or chunk_rows(spec)
    batch_rows = batch_rows or DEFAULT_BATCH_ROWS
    if not isinstance(inputs, ImageFiles):
        return forward(model, inputs, batch_rows=batch_rows)
    outputs = [
        forward(model, inputs.pixels(rows), batch_rows=batch_rows)
        for rows in chunks(len(inputs), batch_rows)
    ]
    return np.concatenate(outputs) if outputs else forward(model, _no_images(spec))


def image_spec_of(inputs) -> ImageSpec | None:
    """The image size of ``inputs`` (``None``: not images)."""
    if isinstance(inputs, ImageFiles):
        return inputs.spec
    if not isinstance(inputs, np.ndarray) or inputs.ndim != 4:
        return None
    return ImageSpec(*inputs.shape[1:])


def _no_images(spec: ImageSpec) -> np.ndarray:
    return np.zeros((0, spec.height, spec.width, spec.channels), dtype=np.uint8)


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


def predict_images(model, schema: FeatureSchema, frame: pd.DataFrame) -> pd.DataFrame:
    """Predictions of an image model for the images of ``frame`` (bytes or paths, see
    ``data.image_inputs.image_column``), decoded and scored a chunk at a time.

    A row whose image is missing, corrupt or not an image gets a null ``prediction``, NaN
    probabilities and the reason in ``error`` (``None`` for good rows): one bad file never
    fails a batch.
    """
    spec = schema.image
    sources = image_sources(frame, schema)
    rows = chunk_rows(spec)
    outputs, errors = [], [None] * len(sources)
    with work_progress("scoring images", len(sources)) as advance:
        for part in chunks(len(sources), rows):
            decoded = decode_rows(sources[part], spec)
            output = predict_arrays(model, decoded.images, batch_rows=rows)
            probabilities = np.full((len(decoded.ok), _classes(schema)), np.nan)
            probabilities[decoded.ok] = class_probabilities(output, schema.task)
            outputs.append(probabilities)
            for position, reason in decoded.errors:
                errors[part.start + position] = reason
            advance(part.stop - part.start)
    probabilities = np.concatenate(outputs) if outputs else np.zeros((0, _classes(schema)))
    return _image_frame(probabilities, errors, schema, frame.index)


def _classes(schema: FeatureSchema) -> int:
    return len(schema.class_labels)


def _image_frame(probabilities, errors, schema: FeatureSchema, index) -> pd.DataFrame:
    ok = ~np.isnan(probabilities).any(axis=1) if len(probabilities) else np.zeros(0, bool)
    labels = np.asarray(schema.class_labels, dtype=object)
    chosen = np.argmax(np.nan_to_num(probabilities, nan=-1.0), axis=1)
    prediction = pd.Series(labels[chosen] if len(chosen) else [], index=index, dtype=object)
    if ok.all():
        prediction = prediction.astype(_label_dtype(schema.class_labels))
    else:
        prediction[~ok] = None
    columns = {"prediction": prediction}
    for position, label in enumerate(schema.class_labels):
        columns[probability_column(label)] = pd.Series(probabilities[:, position], index=index)
    columns[ERROR_COLUMN] = pd.Series(errors, index=index, dtype=object)
    return pd.DataFrame(columns, index=index)
