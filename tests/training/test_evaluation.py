import numpy as np
import pytest
from sklearn import metrics

from deepspark.training.evaluation import evaluate_predictions


def test_regression_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    truth = rng.normal(size=200)
    output = (truth + rng.normal(scale=0.3, size=200)).reshape(-1, 1)
    scores = evaluate_predictions("regression", truth, output)
    assert scores["mse"] == pytest.approx(metrics.mean_squared_error(truth, output))
    assert scores["rmse"] == pytest.approx(np.sqrt(metrics.mean_squared_error(truth, output)))
    assert scores["mae"] == pytest.approx(metrics.mean_absolute_error(truth, output))
    assert scores["sse"] == pytest.approx(np.sum((truth - output[:, 0]) ** 2))
    assert scores["r2"] == pytest.approx(metrics.r2_score(truth, output))


def test_binary_metrics_match_sklearn():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 300)
    positive = np.clip(labels * 0.6 + rng.uniform(0, 0.4, 300), 0.01, 0.99)
    scores = evaluate_predictions("binary", labels, positive.reshape(-1, 1))
    assert scores["accuracy"] == pytest.approx(np.mean((positive > 0.5) == labels))
    assert scores["auc"] == pytest.approx(metrics.roc_auc_score(labels, positive))
    assert scores["log_loss"] == pytest.approx(metrics.log_loss(labels, positive))


def test_multiclass_metrics_match_sklearn():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 3, 300)
    logits = rng.normal(size=(300, 3)) + np.eye(3)[labels] * 1.5
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    scores = evaluate_predictions("multiclass", labels, probabilities)
    assert scores["accuracy"] == pytest.approx(np.mean(probabilities.argmax(1) == labels))
    assert scores["log_loss"] == pytest.approx(metrics.log_loss(labels, probabilities))
    assert scores["auc"] == pytest.approx(
        metrics.roc_auc_score(labels, probabilities, multi_class="ovr")
    )
