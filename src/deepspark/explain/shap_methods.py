"""``kernel`` and ``permutation``: SHAP's model-agnostic explainers over the raw columns.

Both see the model as a function of the raw-feature matrix (``TabularView``): a categorical
column is one feature whose values are the model's codes, so each raw column gets one Shapley
value. Rows are explained one at a time with a per-row seed, so a row's attributions do not
depend on which other rows were explained with it (the Spark job relies on this).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from deepspark._optional import require
from deepspark.explain.base import Explainer, Explanation
from deepspark.explain.tabular import TabularView, tabular_batch


class _ShapExplainer(Explainer):
    """Shared flow: matrices, explained outputs, one SHAP explainer per explained output."""

    additive = True

    def explain(self, frame: pd.DataFrame, *, row_ids=None) -> Explanation:
        shap = require("shap", feature=f"'{self.method}' explanations")
        batch = tabular_batch(self.model, frame, self.background, row_ids, self.explained_class)
        explainers: dict[int, object] = {}
        attributions = np.zeros_like(batch.matrix)
        baseline = np.zeros(len(batch.matrix))
        for position, (row_id, column) in enumerate(zip(batch.row_ids, batch.columns, strict=True)):
            if column not in explainers:
                function = _output_function(batch.view, column)
                explainers[column] = self._make(shap, function, batch.background)
            np.random.seed(self.row_seed(row_id) % 2**32)
            attributions[position], baseline[position] = self._explain_row(
                explainers[column], batch.matrix[position : position + 1]
            )
        return batch.explanation(self.method, attributions, baseline, additive=True)

    def _make(self, shap, function, background: np.ndarray):
        raise NotImplementedError

    def _explain_row(self, explainer, row: np.ndarray) -> tuple[np.ndarray, float]:
        raise NotImplementedError


def _output_function(view: TabularView, column: int):
    def explained_output(matrix: np.ndarray) -> np.ndarray:
        return view.outputs(matrix)[:, column]

    return explained_output


class KernelShapExplainer(_ShapExplainer):
    """``shap.KernelExplainer`` with the whole background as the masking distribution.

    Options:
        nsamples: Coalitions per row (default SHAP's ``2 * features + 2048``; all of them when
            there are few features, which makes the values exact Shapley values).
    """

    method = "kernel"

    def _make(self, shap, function, background):
        return shap.KernelExplainer(function, background, link="identity")

    def _explain_row(self, explainer, row):
        nsamples = self.options.get("nsamples", "auto")
        values = explainer.shap_values(row, nsamples=nsamples, l1_reg=False, silent=True)
        return np.asarray(values, dtype=np.float64).reshape(-1), float(explainer.expected_value)


class PermutationShapExplainer(_ShapExplainer):
    """``shap.PermutationExplainer`` with an independent masker over the whole background.

    Options:
        max_evals: Model evaluations per row (default 500, at least ``2 * features + 1``).
    """

    method = "permutation"

    def _make(self, shap, function, background):
        masker = shap.maskers.Independent(background, max_samples=len(background))
        return shap.PermutationExplainer(function, masker)

    def _explain_row(self, explainer, row):
        max_evals = max(int(self.options.get("max_evals", 500)), 2 * row.shape[1] + 1)
        result = explainer(row, max_evals=max_evals, silent=True)
        return np.asarray(result.values[0], dtype=np.float64), float(result.base_values[0])
