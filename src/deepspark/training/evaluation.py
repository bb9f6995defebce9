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


class StreamingEvaluation:
    """``evaluate_predictions`` over batches, in memory that does not grow with the rows.

    Regression and accuracy / log loss are exact (sums, and the target's mean and spread merged
    batch by batch as in Chan et al.); AUC comes from per-class histograms of the predicted
    probability (``bins`` equal-width bins, pairs within one bin counted as ties), which differs
    from the exact value only by pairs whose probabilities fall within 1/``bins`` of each other.

    Example:
        >>> totals = StreamingEvaluation("regression")
        >>> for targets, output in batches:
        ...     totals.update(targets, output)
        >>> totals.result()["rmse"]
    """

    def __init__(self, task: str, *, bins: int = 1 << 16):
        self.task, self.bins = task, bins
        self.rows = 0
        self.sse = self.sae = 0.0
        self.mean = self.spread = 0.0  # of the target (regression)
        self.correct = 0
        self.log_loss_sum = 0.0
        self.positives: np.ndarray | None = None  # (classes, bins): rows of that class
        self.negatives: np.ndarray | None = None  # (classes, bins): rows of the others

    def update(self, y_true: np.ndarray, output: np.ndarray) -> None:
        """Add a batch: targets (class indices for classification) and the raw model output."""
        if len(y_true) == 0:
            return
        if self.task == "regression":
            self._update_regression(y_true, output)
        else:
            self._update_classification(y_true, output)

    def _update_regression(self, y_true, output) -> None:
        truth = y_true.reshape(-1).astype(np.float64)
        errors = output.reshape(-1).astype(np.float64) - truth
        self.sse += float(np.sum(errors**2))
        self.sae += float(np.sum(np.abs(errors)))
        count, mean = len(truth), float(truth.mean())
        spread = float(np.sum((truth - mean) ** 2))
        total = self.rows + count
        delta = mean - self.mean
        self.spread += spread + delta**2 * self.rows * count / total
        self.mean += delta * count / total
        self.rows = total

    def _update_classification(self, y_true, output) -> None:
        probabilities = class_probabilities(output, self.task)
        labels = y_true.reshape(-1).astype(int)
        n_classes = probabilities.shape[1]
        clipped = np.clip(probabilities, _EPSILON, 1.0)
        self.correct += int(np.sum(np.argmax(probabilities, axis=1) == labels))
        self.log_loss_sum += float(-np.sum(np.log(clipped[np.arange(len(labels)), labels])))
        self.rows += len(labels)
        if self.positives is None:
            self.positives = np.zeros((n_classes, self.bins), dtype=np.int64)
            self.negatives = np.zeros((n_classes, self.bins), dtype=np.int64)
        if self.task == "binary":
            scores = probabilities[:, 1:2]
            classes = [1]
        else:
            scores = probabilities / probabilities.sum(axis=1, keepdims=True)
            classes = range(n_classes)
        for column, klass in enumerate(classes):
            cells = np.clip((scores[:, column] * self.bins).astype(np.int64), 0, self.bins - 1)
            is_class = labels == klass
            self.positives[klass] += np.bincount(cells[is_class], minlength=self.bins)
            self.negatives[klass] += np.bincount(cells[~is_class], minlength=self.bins)

    def result(self) -> dict[str, float]:
        """The metrics ``evaluate_predictions`` gives for all rows added."""
        if self.task == "regression":
            rows = max(self.rows, 1)
            return {
                "mse": self.sse / rows,
                "rmse": float(np.sqrt(self.sse / rows)),
                "mae": self.sae / rows,
                "sse": self.sse,
                "r2": 1.0 - self.sse / self.spread if self.spread > 0 else float("nan"),
            }
        rows = max(self.rows, 1)
        result = {"accuracy": self.correct / rows, "log_loss": self.log_loss_sum / rows}
        if self.positives is None:
            return result
        if self.task == "binary":
            present = self.positives[1].sum() > 0 and self.negatives[1].sum() > 0
            if present:
                result["auc"] = _histogram_auc(self.positives[1], self.negatives[1])
        elif (self.positives.sum(axis=1) > 0).all():
            result["auc"] = float(
                np.mean(
                    [
                        _histogram_auc(p, n)
                        for p, n in zip(self.positives, self.negatives, strict=True)
                    ]
                )
            )
        return result


def _histogram_auc(positives: np.ndarray, negatives: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties (same bin) counted half."""
    below = np.cumsum(negatives) - negatives  # negatives in lower bins
    wins = np.sum(positives * below) + 0.5 * np.sum(positives * negatives)
    return float(wins / (positives.sum() * negatives.sum()))
