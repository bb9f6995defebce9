"""Image explainers on tiny networks: the float view of a uint8 model, Grad-CAM against CAM's
closed form inside a nested pretrained base, layer and class choices, SHAP's additivity, LIME's
seeding, bad images, and the errors users get."""

from __future__ import annotations

import types

import keras
import numpy as np
import pytest

from deepspark.errors import UserInputError
from deepspark.explain import explainer_class
from deepspark.explain.base import class_index
from deepspark.explain.images.gradcam import resize_maps
from deepspark.explain.images.network import pixel_network, split_at_layer
from deepspark.models.cnn import build_cnn
from deepspark.runtime import forward
from deepspark.tracking.model import DeepsparkModel
from tests.explain.quadrants import image_frame, image_schema, quadrant_images

CLASSES3 = ("ant", "bee", "wasp")


def _explainer(model, method, background=None, **settings):
    explainer = explainer_class(method, "image")(model, background, seed=4, **settings)
    explainer.validate()
    return explainer


@pytest.fixture(scope="module")
def transfer_model():
    """MobileNetV2 (alpha 0.35, random weights) + a 3-class head, 64 px: a nested base."""
    from deepspark.models.transfer import build_transfer

    schema = image_schema(64, CLASSES3)
    config = types.SimpleNamespace(
        base="mobilenet_v2", weights=None, base_options={"alpha": 0.35}, augment=True, dropout=0
    )
    keras.utils.set_random_seed(2)
    return DeepsparkModel(build_transfer(schema, config), schema, {})


@pytest.fixture(scope="module")
def small_cnn():
    """An untrained binary CNN with augmentation and dropout (inference must skip both)."""
    keras.utils.set_random_seed(1)
    network = build_cnn((32, 32), classes=2, filters=(4, 8), augment=True, dropout=0.2)
    return DeepsparkModel(network, image_schema(), {})


@pytest.mark.parity
@pytest.mark.parametrize("fixture", ["small_cnn", "transfer_model"])
def test_the_float_view_of_a_uint8_model_predicts_the_same(fixture, request):
    model = request.getfixturevalue(fixture)
    size = model.schema.image.height
    images = np.random.default_rng(0).integers(0, 256, (3, size, size, 3)).astype(np.uint8)
    expected = forward(model.keras_model, images)
    if expected.shape[1] == 1:
        expected = np.concatenate([1 - expected, expected], axis=1)
    floats = pixel_network(model.keras_model, binary=model.schema.task == "binary")
    np.testing.assert_allclose(forward(floats, images.astype(np.float32)), expected, atol=1e-5)
    assert floats.trainable_variables or floats.non_trainable_variables  # weights shared


@pytest.fixture(scope="module")
def zoo_model():
    """An ImageNet-style zoo network with its own top (MobileNetV2 alpha 0.35, random weights,
    64 px, 1000 classes): the softmax Dense sits inside the nested network."""
    from deepspark.models.applications import build_pretrained

    keras.utils.set_random_seed(3)
    network = build_pretrained(
        "mobilenet_v2", weights=None, include_top=True, image_size=(64, 64),
        base_options={"alpha": 0.35},
    )  # fmt: skip
    labels = tuple(f"class{index}" for index in range(1000))
    return DeepsparkModel(network, image_schema(64, labels), {})


def _pooled_dense_parts(model):
    """The last block's activations (computed without deepspark) and the final Dense kernel."""
    network = model.keras_model
    nested = [layer for layer in network.layers if isinstance(layer, keras.Model)][-1]
    features = keras.Model(nested.inputs, nested.get_layer("out_relu").output)
    dense = [layer for layer in (*nested.layers, *network.layers) if layer.name in
             ("predictions", "probability")][0]  # fmt: skip
    return nested.name, features, network.get_layer("preprocess"), dense


@pytest.mark.parity
@pytest.mark.parametrize(
    ("fixture", "label"), [("transfer_model", "wasp"), ("zoo_model", "class7")]
)
def test_gradcam_inside_a_pretrained_network_equals_cam_of_its_pooled_dense_head(
    fixture, label, request
):
    """Pooling + dense after the last convolution: d logit_c / dA = W[:, c] / (h * w), so
    Grad-CAM is ReLU(A . W[:, c]) / (h * w) (Zhou et al.'s CAM), computed here independently."""
    model = request.getfixturevalue(fixture)
    images = np.random.default_rng(1).integers(0, 256, (2, 64, 64, 3)).astype(np.uint8)
    explainer = _explainer(model, "gradcam", explained_class=label)
    explanation = explainer.explain(image_frame(images))
    nested, features, preprocess, dense = _pooled_dense_parts(model)
    assert explanation.details["layer"] == "out_relu"
    assert explanation.details["layer_inside"] == nested
    assert explanation.details["score"] == "logit"
    scaled = preprocess(images.astype("float32"))
    activations = keras.ops.convert_to_numpy(features(scaled, training=False))
    kernel = keras.ops.convert_to_numpy(dense.kernel)
    height, width = activations.shape[1:3]
    column = model.schema.class_labels.index(label)
    cam = np.maximum(activations @ kernel[:, column], 0) / (height * width)
    expected = resize_maps(cam, (64, 64))
    assert np.abs(expected).max() > 0
    np.testing.assert_allclose(explanation.attributions, expected, rtol=1e-4, atol=1e-6)
    assert explanation.explained_class == [label, label]


def test_layers_can_be_chosen_and_bad_ones_are_named(small_cnn):
    default = split_at_layer(small_cnn.keras_model, None, binary=True)
    assert default.layer == "conv2_2_relu" and default.path == ()
    images, _ = quadrant_images(2, seed=3)
    explanation = _explainer(small_cnn, "gradcam", options={"layer": "conv1_2_relu"}).explain(
        image_frame(images)
    )
    assert explanation.details["layer_shape"] == [32, 32, 4]
    assert explanation.attributions.shape == (2, 32, 32)
    with pytest.raises(UserInputError, match=r"Layer 'nope' is not in the model; .*conv2_2\b"):
        _explainer(small_cnn, "gradcam", options={"layer": "nope"})
    with pytest.raises(UserInputError, match=r"needs a layer with a spatial .* 'pool' outputs"):
        _explainer(small_cnn, "gradcam", options={"layer": "pool"})
    with pytest.raises(UserInputError, match=r"options are layer\. Received: size=3"):
        _explainer(small_cnn, "gradcam", options={"size": 3})


def test_gradcam_needs_a_convolution():
    inputs = keras.Input((8, 8, 3), dtype="uint8")
    flat = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    mlp = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(flat))
    model = DeepsparkModel(mlp, image_schema(8, CLASSES3), {})
    with pytest.raises(UserInputError, match=r"convolution layer and this model has none"):
        _explainer(model, "gradcam")


def test_a_chosen_class_is_explained_on_every_image(quadrant_cnn):
    model, training_images = quadrant_cnn
    images, labels = quadrant_images(6, seed=8)
    explanation = _explainer(
        model, "gradient", training_images[:20], explained_class="horizontal"
    ).explain(image_frame(images))
    assert explanation.explained_class == ["horizontal"] * 6
    predicted = model.predict(image_frame(images))
    np.testing.assert_allclose(
        explanation.prediction, predicted["probability_horizontal"], rtol=1e-5
    )
    assert explanation.predicted_class == list(predicted["prediction"])
    assert set(explanation.predicted_class) == {"horizontal", "vertical"}
    assert explanation.max_additivity_error <= 0.01
    with pytest.raises(UserInputError, match=r"not one of the model's 2 classes \(horizontal, v"):
        _explainer(model, "gradcam", explained_class="diagonal")


def test_class_labels_match_as_given_or_as_text():
    schema = image_schema(8, (1, 2, 3))
    assert class_index(schema, 3) == 2
    assert class_index(schema, "3") == 2
    with pytest.raises(UserInputError, match=r"Unknown --class.*Received: class='4'"):
        class_index(schema, "4")


def test_shap_partition_values_add_up_and_masks_can_be_chosen(quadrant_cnn):
    model, training_images = quadrant_cnn
    images, _ = quadrant_images(1, seed=9)
    frame = image_frame(images)
    results = {}
    for masker in ("mean", "blur", "black"):
        explainer = _explainer(
            model, "shap", training_images[:20], options={"masker": masker, "max_evals": 32}
        )
        results[masker] = explainer.explain(frame)
        assert results[masker].max_additivity_error < 1e-5
        assert results[masker].attributions.shape == (1, 32, 32, 3)
    assert not np.allclose(results["mean"].baseline, results["black"].baseline)
    again = _explainer(model, "shap", training_images[:20], options={"max_evals": 32})
    np.testing.assert_array_equal(again.explain(frame).attributions, results["mean"].attributions)


def test_lime_is_seeded_per_image_and_does_not_depend_on_batching(quadrant_cnn):
    model, _ = quadrant_cnn
    images, _ = quadrant_images(3, seed=10)
    frame = image_frame(images)
    explainer = _explainer(model, "lime", options={"num_samples": 80})
    whole = explainer.explain(frame)
    alone = explainer.explain(frame.iloc[2:], row_ids=[2])
    np.testing.assert_allclose(whole.attributions[2:], alone.attributions)
    assert (whole.per_image["superpixels"] > 1).all()
    assert whole.max_additivity_error is None
    quickshift = _explainer(
        model, "lime", options={"num_samples": 40, "segmentation": "quickshift"}
    )
    assert np.isfinite(quickshift.explain(frame.head(1)).attributions).all()


def test_bad_images_are_left_out_and_listed(small_cnn):
    images, _ = quadrant_images(3, seed=11)
    frame = image_frame(images)
    frame.loc[1, "image"] = b"not an image"
    explanation = _explainer(small_cnn, "gradcam++").explain(frame, row_ids=[10, 11, 12])
    assert list(explanation.row_ids) == [10, 12]
    (bad,) = explanation.details["bad_images"]
    assert bad["row_id"] == 11 and bad["error"]
    assert (explanation.attributions >= 0).all()


@pytest.mark.parametrize(
    ("method", "options"),
    [
        pytest.param("gradcam", None, marks=pytest.mark.parity),
        pytest.param("gradient", {"max_steps": 32}, marks=pytest.mark.parity),
        ("shap", {"max_evals": 40}),  # not in the parity set: SHAP compiles numba for 10 s
        pytest.param("lime", {"num_samples": 40}, marks=pytest.mark.parity),
    ],
)
def test_every_method_explains_a_grayscale_multiclass_model(method, options):
    keras.utils.set_random_seed(5)
    network = build_cnn((16, 16), classes=3, channels=1, filters=(4,))
    model = DeepsparkModel(network, image_schema(16, CLASSES3, channels=1), {})
    images = np.random.default_rng(2).integers(0, 256, (2, 16, 16, 1)).astype(np.uint8)
    frame = image_frame(images[..., 0])
    explanation = _explainer(model, method, images, options=options).explain(frame)
    assert explanation.images.shape == (2, 16, 16, 1)
    assert explanation.attributions.shape[:3] == (2, 16, 16)
    assert np.isfinite(explanation.attributions).all()
    assert set(explanation.explained_class) <= set(CLASSES3)


@pytest.mark.parity
def test_integrated_gradients_on_pixels_add_up_on_either_backend(small_cnn):
    images, _ = quadrant_images(12, seed=12)
    explainer = _explainer(small_cnn, "gradient", images[:10])
    explanation = explainer.explain(image_frame(images[10:]))
    assert explanation.max_additivity_error <= 0.01
    assert np.abs(explanation.attributions).sum() > 0
