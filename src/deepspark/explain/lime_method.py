"""``lime``: LIME tabular explanations (regression and classification) over the raw columns.

LIME fits a weighted linear model around each row on perturbed samples drawn with the statistics
of the background. Categorical columns are given to LIME as categorical features with their level
names, so a condition reads ``color=red``. LIME does not promise additivity: the table's
``baseline`` is the local model's intercept and no additivity error is reported.

LIME's sampling statistics need finite values, so missing numbers in the background and in the
explained rows are filled with the background median before LIME sees them (the model itself is
still given the rows as they are for the ``prediction`` column).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from deepspark._optional import require
from deepspark.explain.base import Explainer, Explanation
from deepspark.explain.tabular import TabularView, tabular_batch

DEFAULT_SAMPLES = 5000
# LIME conditions kept for the bar charts of the first rows.
_CONDITION_ROWS = 3


class LimeExplainer(Explainer):
    """``lime.lime_tabular.LimeTabularExplainer`` with per-row seeds.

    Options:
        num_samples: Perturbed samples per row (default 5000).
    """

    method = "lime"
    additive = False

    def explain(self, frame: pd.DataFrame, *, row_ids=None) -> Explanation:
        lime_tabular = require("lime.lime_tabular", feature="'lime' explanations")
        batch = tabular_batch(self.model, frame, self.background, row_ids, self.explained_class)
        view, matrix = batch.view, batch.matrix
        fill = _medians(batch.background)
        explainer = lime_tabular.LimeTabularExplainer(
            _filled(batch.background, fill),
            mode="regression" if self.model.task == "regression" else "classification",
            feature_names=view.names,
            categorical_features=view.categorical_positions,
            categorical_names=view.level_names(),
            discretize_continuous=True,
            random_state=self.seed,
        )
        attributions = np.zeros_like(matrix)
        intercepts = np.zeros(len(matrix))
        conditions = {}
        for position, (row_id, column) in enumerate(zip(batch.row_ids, batch.columns, strict=True)):
            # LIME's sampler and its discretizer share one RandomState; one per row makes a
            # row's explanation independent of the rows explained before it.
            random_state = np.random.RandomState(self.row_seed(row_id) % 2**32)
            explainer.random_state = random_state
            explainer.discretizer.random_state = random_state
            label = 1 if self.model.task == "regression" else int(column)
            result = explainer.explain_instance(
                _filled(matrix[position], fill),
                _lime_function(view),
                labels=(label,),
                num_features=len(view.names),
                num_samples=int(self.options.get("num_samples", DEFAULT_SAMPLES)),
            )
            for feature, weight in result.as_map()[label]:
                attributions[position, feature] = weight
            intercepts[position] = float(result.intercept[label])
            if int(row_id) < _CONDITION_ROWS:
                conditions[int(row_id)] = [(text, float(w)) for text, w in result.as_list(label)]
        details = {"lime_conditions": conditions}
        return batch.explanation(
            self.method, attributions, intercepts, additive=False, details=details
        )


def _lime_function(view: TabularView):
    def predict(matrix: np.ndarray) -> np.ndarray:
        outputs = view.outputs(matrix)
        return outputs[:, 0] if view.schema.task == "regression" else outputs

    return predict


def _medians(matrix: np.ndarray) -> np.ndarray:
    medians = np.nanmedian(np.where(np.isnan(matrix).all(axis=0), 0.0, matrix), axis=0)
    return np.nan_to_num(medians)


def _filled(matrix: np.ndarray, fill: np.ndarray) -> np.ndarray:
    return np.where(np.isnan(matrix), fill, matrix)
