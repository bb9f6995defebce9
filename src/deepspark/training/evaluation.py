"""Metrics on whole splits, computed once from predictions (NumPy / scikit-learn)."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as sk_metrics

from deepspark.models.inference import class_probabilities

_EPSILON = 1e-7


def evaluate_predictions(task: str, y_true: np.ndarray, output: np.ndarray) -> dict[str, float]:
    """Regression: mse, rmse, mae, sse, r2. Classification: accuracy, log_loss, auc.

    Args:
        task: ``regression``, ``binary`` or ``multiclass``.
        y_true: Target values (regression) or class indices (classification).
        output: Raw model output for the same rows.
    """
    if task == "regression":
        truth = y_true.reshape(-1).astype(np.float64)
        errors = output.reshape(-1).astype(np.float64) - truth
        sse = float(np.sum(errors**2))
        spread = float(np.sum((truth - truth.mean()) ** 2))
        return {
            "mse": sse / len(truth),
            "rmse": float(np.sqrt(sse / len(truth))),
            "mae": float(np.mean(np.abs(errors))),
            "sse": sse,
            "r2": 1.0 - sse / spread if spread > 0 else float("nan"),
        }
    probabilities = class_probabilities(output, task)
    labels = y_true.reshape(-1).astype(int)
    n_classes = probabilities.shape[1]
    clipped = np.clip(probabilities, _EPSILON, 1.0)
    result = {
        "accuracy": float(np.mean(np.argmax(probabilities, axis=1) == labels)),
        "log_loss": float(-np.mean(np.log(clipped[np.arange(len(labels)), labels]))),
    }
    present = np.unique(labels)
    if len(present) == n_classes:
        if task == "binary":
            result["auc"] = float(sk_metrics.roc_auc_score(labels, probabilities[:, 1]))
        else:
            normalized = probabilities / probabilities.sum(axis=1, keepdims=True)
            result["auc"] = float(sk_metrics.roc_auc_score(labels, normalized, multi_class="ovr"))
    return result
