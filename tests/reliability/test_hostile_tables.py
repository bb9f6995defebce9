"""Hostile tables (Hypothesis): NaN, +-inf, numbers beyond float32, subnormals, unicode, empty
strings, all-null and constant columns, unseen categories and text in numeric columns.

Training either fits (finite loss and metrics) or stops with one line naming the column and
the fix; prediction returns one row per input row, in the input's order and index, with finite
probabilities; text in a numeric column is one line in memory and a counted bad row (empty
prediction, same position) when streamed.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deepspark.errors import DataError
from tests.reliability.hostile import (
    FAST_SETTINGS,
    NUMERIC_COLUMNS,
    TEXT_COLUMN,
    is_number,
    one_line,
    scoring_tables,
    table_model,
    training_tables,
)

PROBABILITIES = ["probability_no", "probability_yes"]


@pytest.fixture(scope="module")
def model():
    import deepspark

    model_dir, _ = table_model()
    return deepspark.load_model(model_dir)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A tracking store and checkpoint folder for the fits of this module."""
    root = tmp_path_factory.mktemp("hostile-fits")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DEEPSPARK_CHECKPOINT_DIR", str(root / "checkpoints"))
        patch.chdir(root)
        yield f"sqlite:///{root / 'mlflow.db'}"


def _usable_target(frame: pd.DataFrame) -> pd.Series:
    """Rows training keeps: a target that is present and, if a number, finite in float32."""
    return frame["y"].notna() & ~frame["y"].isin([np.inf, -np.inf, 1e39])


def _expected_error(frame: pd.DataFrame) -> str | None:
    """The message a table must be refused with (``None``: it must train): the first feature
    column, in order, that is all missing, holds text among numbers, or has no finite float32."""
    frame = frame[_usable_target(frame)]
    for name in frame.columns.drop("y"):
        values = pd.to_numeric(frame[name], errors="coerce")
        if frame[name].isna().all():
            return "entirely missing"
        if name == "color":
            continue
        if values.isna().sum() > frame[name].isna().sum():
            return "has text in 1"
        with np.errstate(over="ignore"):
            finite = np.isfinite(values.dropna().to_numpy(dtype=float).astype(np.float32))
        if not finite.any():
            return "has no finite number"
    return None


@settings(FAST_SETTINGS, max_examples=25)
@given(training_tables())
def test_training_data_is_finite_or_refused_in_one_line(frame):
    """Every hostile table becomes finite (or NaN = imputed) model inputs and a finite target,
    or one line naming the column and the fix (cheap: no fit)."""
    from deepspark.config import make_config
    from deepspark.training.prepare import prepare_data

    config = make_config({"data": "hostile", "target": "y", "seed": 1})
    expected = _expected_error(frame)
    try:
        prepared = prepare_data(config, data=frame)
    except DataError as error:
        assert expected is not None and expected in str(error) and one_line(str(error)), error
        return
    assert expected is None
    for split in prepared.inputs.values():
        numeric = split["numeric"]
        assert not np.isinf(numeric).any()
    for target in prepared.targets.values():
        assert np.isfinite(target).all()
    stats = prepared.numeric_stats()
    assert np.isfinite(stats.mean).all() and np.isfinite(stats.scale).all()
    assert sum(prepared.rows.values()) == int(_usable_target(frame).sum())


@settings(FAST_SETTINGS, max_examples=2, suppress_health_check=list(HealthCheck))
@given(training_tables().filter(lambda frame: _expected_error(frame) is None))
def test_training_fits_hostile_tables(store, frame):
    """A handful of real one-epoch fits: finite metrics, never a crash or a NaN loss."""
    import deepspark

    result = deepspark.train(
        frame, "y", tracking_uri=store, hidden=(4,), epochs=1, batch_size=64, seed=1
    )
    assert result.epochs_completed == 1
    assert all(math.isfinite(value) for value in result.metrics.values()), result.metrics


def _within_training_range(frame: pd.DataFrame) -> np.ndarray:
    """Rows whose numbers are all ordinary (missing, non-finite or |x| <= 1e6): their
    probabilities must be finite. Finite float32 values like 3e38 may overflow the network."""
    ok = np.ones(len(frame), dtype=bool)
    for name in NUMERIC_COLUMNS:
        values = pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=float)
        ok &= ~(np.isfinite(values) & (np.abs(values) > 1e6))
    return ok


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _bad_rows(frame: pd.DataFrame) -> np.ndarray:
    """Rows with a value that is not a number in a numeric column (the reference count)."""
    bad = np.zeros(len(frame), dtype=bool)
    for name in NUMERIC_COLUMNS:
        bad |= ~np.array([is_number(value) for value in frame[name]], dtype=bool)
    return bad


@settings(FAST_SETTINGS, max_examples=150)
@given(scoring_tables())
def test_predict_keeps_rows_aligned(model, frame):
    """One output row per input row, same index and order; unseen categories, unicode, NaN and
    +-inf score; text in a numeric column is one line naming the column."""
    bad = _bad_rows(frame)
    try:
        predictions = model.predict(frame)
    except DataError as error:
        assert bad.any() and one_line(str(error)), error
        assert any(f"Column '{name}'" in str(error) for name in NUMERIC_COLUMNS)
        return
    assert not bad.any()
    assert predictions.index.equals(frame.index)
    assert set(predictions["prediction"]) <= {"no", "yes"}
    probabilities = predictions[PROBABILITIES].to_numpy()
    ordinary = _within_training_range(frame)
    assert np.isfinite(probabilities[ordinary]).all()
    np.testing.assert_allclose(probabilities[ordinary].sum(axis=1), 1.0, rtol=1e-5)


@settings(FAST_SETTINGS, max_examples=8, suppress_health_check=list(HealthCheck))
@given(scoring_tables(max_rows=40), st.integers(0, 2**16))
def test_streamed_predict_counts_bad_rows(tmp_path_factory, frame, seed):
    """Streamed to a file, rows with text in a numeric column are counted and written with an
    empty prediction at their own position; every other row is scored."""
    import deepspark

    folder = tmp_path_factory.mktemp("stream")
    text = frame.reset_index(drop=True).astype(object)
    for name in (*NUMERIC_COLUMNS, TEXT_COLUMN):  # as a CSV reader would give them: text
        text[name] = [None if _missing(value) else str(value) for value in text[name]]
    text["row"] = np.arange(len(text))
    source = folder / "hostile.parquet"
    text.to_parquet(source)
    summary = deepspark.predict(
        table_model()[0], str(source), output=str(folder / "scored.parquet"), max_memory_mb=1e-5
    )
    bad = _bad_rows(text)
    assert (summary.rows, summary.bad_rows) == (len(text), int(bad.sum()))
    assert len(summary.bad_examples) == min(3, int(bad.sum()))
    scored = pd.read_parquet(folder / "scored.parquet")
    assert scored["row"].tolist() == list(range(len(text)))
    assert scored["prediction"].isna().to_numpy().tolist() == bad.tolist()
    assert scored["extra"].tolist() == text["extra"].tolist()
