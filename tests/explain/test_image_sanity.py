"""Image attribution maps mean something: they find the evidence, depend on the learned weights,
and integrated gradients add up.

- Quadrant test: the label of the synthetic images depends only on their top-left quadrant; for
  a CNN that learned the task, >= 80 % of the attribution mass of Grad-CAM and integrated
  gradients falls there (a quarter of the pixels).
- Randomisation test (Adebayo et al. 2018, "Sanity checks for saliency maps"): the maps of the
  same architecture with re-initialised weights must not look like the trained model's: the
  mean Spearman rank correlation of |map| over an image's pixels stays below 0.5, while a second
  CNN trained from another seed agrees with the first above 0.6 (the metric can see agreement).
- Completeness: integrated gradients' attributions sum to p(image) - p(baseline) within 1 % of
  the spread of the explained probability over the background images.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from deepspark.explain import explainer_class
from tests.explain.quadrants import (
    fresh_quadrant_cnn,
    image_frame,
    quadrant_images,
    quadrant_mass,
)

MASS_GOAL = 0.8
RANK_CORRELATION_LIMIT = 0.5
TRAINED_AGREEMENT = 0.6
ADDITIVITY_GOAL = 0.01


@pytest.fixture(scope="module")
def held_out():
    images, labels = quadrant_images(8, seed=99)
    return images, labels, image_frame(images)


def _explain(model, method, frame, background, **settings):
    explainer = explainer_class(method, "image")(model, background, seed=0, **settings)
    explainer.validate()
    return explainer.explain(frame)


@pytest.mark.parametrize("method", ["gradcam", "gradient"])
def test_attribution_mass_falls_in_the_quadrant_the_label_depends_on(
    quadrant_cnn, held_out, method
):
    model, training_images = quadrant_cnn
    images, labels, frame = held_out
    explanation = _explain(model, method, frame, training_images[:30])
    predicted = [model.schema.class_labels.index(label) for label in explanation.predicted_class]
    assert predicted == list(labels)  # the network learned the task
    heatmaps = explanation.heatmaps()
    assert quadrant_mass(np.abs(heatmaps).sum(axis=0, keepdims=True))[0] >= MASS_GOAL
    assert quadrant_mass(heatmaps).min() > 0.5, quadrant_mass(heatmaps)  # on every image


def _rank_correlations(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    # Ranks of |attribution| per image; a constant map has no ranks to agree with: 0.
    values = [
        spearmanr(np.abs(a).ravel(), np.abs(b).ravel())[0]
        for a, b in zip(first, second, strict=True)
    ]
    return np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0)


@pytest.fixture(scope="module")
def retrained():
    """The same task learned from another seed: the randomisation test's positive control."""
    from tests.explain.quadrants import trained_quadrant_cnn

    return trained_quadrant_cnn(seed=1)[0]


@pytest.mark.parametrize("method", ["gradcam", "gradient"])
def test_maps_of_a_model_with_reinitialised_weights_differ(
    quadrant_cnn, retrained, held_out, method
):
    model, training_images = quadrant_cnn
    _, _, frame = held_out
    # Completeness is not the point here: a randomised network needs many steps to converge.
    options = {"max_steps": 64} if method == "gradient" else None
    trained, again, randomised = (
        _explain(
            network, method, frame, training_images[:30], explained_class="vertical",
            options=options,
        ).heatmaps()
        for network in (model, retrained, fresh_quadrant_cnn(seed=123))
    )  # fmt: skip
    random_agreement = _rank_correlations(trained, randomised).mean()
    assert abs(random_agreement) < RANK_CORRELATION_LIMIT, random_agreement
    assert _rank_correlations(trained, again).mean() > TRAINED_AGREEMENT


@pytest.mark.parametrize("baseline", ["mean", "black", "blur"])
def test_integrated_gradients_add_up_within_one_percent_of_the_spread(
    quadrant_cnn, held_out, baseline
):
    model, training_images = quadrant_cnn
    _, _, frame = held_out
    explanation = _explain(
        model, "gradient", frame.head(4), training_images[:40], options={"baseline": baseline}
    )
    assert explanation.max_additivity_error <= ADDITIVITY_GOAL
    gaps = explanation.attribution_sums() - (explanation.prediction - explanation.baseline)
    assert np.max(np.abs(gaps) / explanation.additivity_scale) <= ADDITIVITY_GOAL
    assert explanation.attributions.shape == (4, 32, 32, 3)
    assert (explanation.per_image["integration_steps"] >= 16).all()
