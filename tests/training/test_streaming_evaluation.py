"""Final metrics of a streamed table: computed batch by batch, equal to the whole-split values."""

from __future__ import annotations

import numpy as np
import pytest

from deepspark.training.evaluation import StreamingEvaluation, evaluate_predictions


def _streamed(task, targets, output, batch=997):
    totals = StreamingEvaluation(task)
    for start in range(0, len(targets), batch):
        totals.update(targets[start : start + batch], output[start : start + batch])
    return totals.result()


def test_regression_metrics_equal_the_whole_split_values():
    rng = np.random.default_rng(0)
    targets = (rng.normal(size=(20_000, 1)) * 50 + 1e6).astype(np.float32)  # a large offset
    output = targets + rng.normal(size=(20_000, 1)).astype(np.float32) * 3
    whole, streamed = (
        evaluate_predictions("regression", targets, output),
        _streamed("regression", targets, output),
    )
    assert whole.keys() == streamed.keys()
    for key in whole:
        assert streamed[key] == pytest.approx(whole[key], rel=1e-9), key


@pytest.mark.parametrize("task,classes", [("binary", 2), ("multiclass", 4)])
def test_classification_metrics_equal_the_whole_split_values(task, classes):
    rng = np.random.default_rng(1)
    labels = rng.integers(0, classes, size=30_000)
    # What the models output: P(class 1) (binary), a softmax row (multiclass).
    if task == "binary":
        logits = labels + rng.normal(size=30_000) * 1.5
        output = (1 / (1 + np.exp(-logits))).reshape(-1, 1).astype(np.float32)
    else:
        logits = np.eye(classes)[labels] * 1.5 + rng.normal(size=(30_000, classes))
        output = (np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)).astype(np.float32)
    whole, streamed = evaluate_predictions(task, labels, output), _streamed(task, labels, output)
    assert whole.keys() == streamed.keys() == {"accuracy", "log_loss", "auc"}
    assert streamed["accuracy"] == pytest.approx(whole["accuracy"], rel=1e-12)
    assert streamed["log_loss"] == pytest.approx(whole["log_loss"], rel=1e-9)
    assert streamed["auc"] == pytest.approx(whole["auc"], abs=1e-4)
    assert 0.6 < whole["auc"] < 0.99  # neither trivial nor perfect


def test_auc_is_left_out_when_a_class_is_missing():
    labels = np.zeros(100, dtype=int)
    output = np.linspace(0, 1, 100).reshape(-1, 1)
    assert "auc" not in _streamed("binary", labels, output, batch=7)
    assert "auc" not in evaluate_predictions("binary", labels, output)
