"""The explanation methods on tiny models: additivity, agreement, raw columns, LIME, SHAP."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import deepspark
from deepspark.errors import UserInputError
from deepspark.explain import explainer_class
from deepspark.explain.encoded import EncodedNetwork

FEATURES = ["x1", "x2", "count", "color"]


def _explain(trained, method, *, rows=20, background=40, options=None):
    return deepspark.explain(
        trained.model_uri,
        str(trained.data),
        method=method,
        rows=rows,
        background=background,
        seed=7,
        options=options,
        log_to_mlflow=False,
        tracking_uri=trained.tracking_uri,
    )


@pytest.mark.parity
@pytest.mark.parametrize("baseline", ["mean", "background"])
@pytest.mark.parametrize("fixture", ["regression_model", "binary_model"])
def test_gradient_is_additive_within_one_percent_of_the_spread(fixture, baseline, request):
    trained = request.getfixturevalue(fixture)
    result = _explain(trained, "gradient", rows=40, options={"baseline": baseline})
    explanation = result.explanation
    assert result.summary["max_additivity_error"] <= 0.01
    assert result.summary["background_source"] == "the model's training split"
    # The check is real: the sums match prediction - baseline row by row.
    gaps = explanation.attributions.sum(axis=1) - (explanation.prediction - explanation.baseline)
    assert np.max(np.abs(gaps) / explanation.additivity_scale) <= 0.01
    assert np.ptp(explanation.prediction) > 0


def _importance(explanation) -> pd.Series:
    return explanation.attributions.abs().mean().sort_values(ascending=False)


def _correlation(first, second) -> float:
    pair = first.attributions.to_numpy().ravel(), second.attributions.to_numpy().ravel()
    return float(np.corrcoef(*pair)[0, 1])


def test_gradient_agrees_with_kernel_shap_on_strong_features(regression_model):
    kernel = _explain(regression_model, "kernel", rows=25).explanation
    assert kernel.max_additivity_error < 1e-6
    # Averaged over every background row, the baseline is SHAP's (the mean background output),
    # so row-level signs are comparable.
    same_reference = _explain(
        regression_model, "gradient", rows=25, options={"baseline": "background"}
    ).explanation
    np.testing.assert_allclose(same_reference.baseline, kernel.baseline, rtol=1e-5)
    assert _correlation(same_reference, kernel) > 0.9
    strongest = list(_importance(kernel).index[:2])
    for name in strongest:
        signs = np.sign(same_reference.attributions[name]) == np.sign(kernel.attributions[name])
        assert signs.mean() >= 0.9, name
    # The default path starts at the background mean: another reference point, same story.
    default = _explain(regression_model, "gradient", rows=25).explanation
    assert _correlation(default, kernel) > 0.9
    for explanation in (same_reference, default):
        importance = _importance(explanation)
        assert importance.index[0] == strongest[0]
        ranks = importance[FEATURES].rank(), _importance(kernel)[FEATURES].rank()
        assert np.corrcoef(*ranks)[0, 1] >= 0.8 - 1e-9  # at most one swap of neighbours


def test_attributions_are_per_raw_column_with_the_categorical_summed_back(regression_model):
    model = deepspark.load_model(regression_model.model_uri)
    groups = EncodedNetwork(model).groups
    # x1, x2, count, x2's missing indicator, then the one-hot block of color (3 levels + 2).
    assert groups.shape == (9, 4)
    assert groups[:, FEATURES.index("color")].sum() == 5
    assert groups[:, FEATURES.index("x2")].sum() == 2
    table = _explain(regression_model, "gradient").explanation.table()
    assert list(table.columns) == ["row_id", "prediction", "baseline", *FEATURES]
    data = pd.read_csv(regression_model.data).head(20)
    missing = data["x2"].isna() | data["color"].isna()
    assert missing.any()
    assert np.isfinite(table[FEATURES].to_numpy()).all()


def test_multiclass_explains_the_predicted_class_additively(untrained_multiclass):
    model, data = untrained_multiclass
    explainer = explainer_class("gradient")(model, data.sample(30, random_state=1), seed=2)
    explanation = explainer.explain(data.head(15))
    predicted = model.predict(data.head(15))
    assert explanation.explained_class == list(predicted["prediction"])
    probabilities = [
        predicted.loc[row, f"probability_{label}"]
        for row, label in enumerate(predicted["prediction"])
    ]
    np.testing.assert_allclose(explanation.prediction, probabilities, rtol=1e-5)
    assert explanation.max_additivity_error <= 0.01


@pytest.mark.parametrize("fixture", ["regression_model", "binary_model"])
def test_lime_runs_for_regression_and_classification(fixture, request):
    result = _explain(
        request.getfixturevalue(fixture), "lime", rows=4, options={"num_samples": 500}
    )
    explanation = result.explanation
    assert result.summary["max_additivity_error"] is None
    assert explanation.feature_names == FEATURES
    assert np.isfinite(explanation.attributions.to_numpy()).all()
    assert (explanation.attributions.abs().sum(axis=1) > 0).all()
    conditions = explanation.details["lime_conditions"]
    assert sorted(conditions) == [0, 1, 2]
    assert any(text.startswith("color=") for text, _ in conditions[0])


def test_permutation_is_additive(binary_model):
    result = _explain(binary_model, "permutation", rows=2, options={"max_evals": 40})
    assert result.summary["max_additivity_error"] < 1e-6
    assert result.explanation.explained_class == ["yes"] * 2  # the second label, every row


def test_results_do_not_depend_on_batching(regression_model):
    model = deepspark.load_model(regression_model.model_uri)
    data = pd.read_csv(regression_model.data)
    background = data.sample(30, random_state=0)
    for method, options in [("lime", {"num_samples": 300}), ("gradient", None)]:
        explainer = explainer_class(method)(model, background, seed=5, options=options)
        whole = explainer.explain(data.head(6))
        part = explainer.explain(data.iloc[3:6], row_ids=np.arange(3, 6))
        np.testing.assert_allclose(
            whole.attributions.iloc[3:].to_numpy(), part.attributions.to_numpy(), rtol=1e-5,
            atol=1e-6,
        )  # fmt: skip


def test_unknown_gradient_baseline_is_a_user_error(regression_model):
    with pytest.raises(UserInputError, match=r"use one of mean, background\. Received: baseline="):
        _explain(regression_model, "gradient", rows=2, options={"baseline": "zero"})


def test_deepspark_explain_is_callable_after_importing_the_package():
    import deepspark.explain.gradient  # noqa: F401  the attribute is now the package

    assert callable(deepspark.explain)
    assert deepspark.explain.explainer_methods() == ["gradient", "kernel", "lime", "permutation"]
    assert deepspark.explain.explainer_methods("image") == [
        "gradcam", "gradcam++", "gradient", "lime", "shap",
    ]  # fmt: skip


def test_a_chosen_class_is_explained_on_every_row(binary_model, regression_model):
    default = _explain(binary_model, "gradient", rows=10).explanation
    first = deepspark.explain(
        binary_model.model_uri, str(binary_model.data), method="gradient", rows=10,
        background=40, seed=7, explained_class="no", log_to_mlflow=False,
        tracking_uri=binary_model.tracking_uri,
    ).explanation  # fmt: skip
    assert default.explained_class == ["yes"] * 10 and first.explained_class == ["no"] * 10
    np.testing.assert_allclose(first.prediction, 1 - default.prediction, atol=1e-6)
    np.testing.assert_allclose(first.baseline, 1 - default.baseline, atol=1e-6)
    np.testing.assert_allclose(
        first.attributions.to_numpy(), -default.attributions.to_numpy(), atol=1e-6
    )
    assert first.max_additivity_error <= 0.01
    with pytest.raises(UserInputError, match=r"a regression model has none\. Received: class="):
        deepspark.explain(
            regression_model.model_uri, str(regression_model.data), explained_class="yes",
            log_to_mlflow=False, tracking_uri=regression_model.tracking_uri,
        )  # fmt: skip
