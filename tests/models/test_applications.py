"""The ImageNet zoo: every keras.applications network by name, its preprocess_input inside the
model, local weight files, the shipped class names, real top-5 labels, and backend parity."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from deepspark.data.image_decode import decode_images
from deepspark.errors import UserInputError
from deepspark.models.applications import (
    build_pretrained,
    find_application,
    imagenet_class_names,
)
from deepspark.models.loader import load_keras_model
from deepspark.runtime import forward
from tests.conftest import SHARED_DATA

WEIGHTS = SHARED_DATA / "images" / "weights"
TOP_1_0 = WEIGHTS / "mobilenet_v2_1.0_224_imagenet_top_dequant.weights.h5"
BASE_0_35 = WEIGHTS / "mobilenet_v2_0.35_224_imagenet_no_top.weights.h5"
PHOTOS = SHARED_DATA / "images" / "photos"


@pytest.mark.parametrize(
    ("spelling", "name", "mode"),
    [
        ("MobileNetV2", "mobilenet_v2", "tf"),
        ("mobilenet-v2", "mobilenet_v2", "tf"),
        ("resnet50", "resnet50", "caffe"),
        ("ResNet50V2", "resnet50_v2", "tf"),
        ("EfficientNetB0", "efficientnet_b0", "none"),
        ("vgg16", "vgg16", "caffe"),
        ("densenet121", "densenet121", "torch"),
        ("convnext_tiny", "convnext_tiny", "none"),
        ("InceptionV3", "inception_v3", "tf"),
    ],
)
def test_networks_are_found_in_any_spelling_with_their_preprocessing(spelling, name, mode):
    application = find_application(spelling)
    assert (application.name, application.preprocess) == (name, mode)


def test_unknown_network_lists_the_valid_ones():
    with pytest.raises(UserInputError, match=r"Unknown pretrained network.*mobilenet_v2.*vgg16"):
        find_application("alexnet")


@pytest.mark.parity
@pytest.mark.parametrize("module", ["mobilenet_v2", "resnet50", "densenet", "vgg16"])
def test_the_built_in_preprocessing_equals_keras_preprocess_input(module):
    from deepspark.models.preprocessing import ImagenetPreprocess

    pixels = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3)).astype(np.uint8)
    expected = getattr(keras.applications, module).preprocess_input(pixels.astype("float32"))
    mode = {"mobilenet_v2": "tf", "resnet50": "caffe", "densenet": "torch", "vgg16": "caffe"}
    got = keras.ops.convert_to_numpy(ImagenetPreprocess(mode[module])(pixels))
    np.testing.assert_allclose(got, keras.ops.convert_to_numpy(expected), rtol=1e-5, atol=1e-4)


def test_imagenet_class_names_ship_with_deepspark():
    names = imagenet_class_names()
    assert len(names) == 1000 and names[0] == "tench" and names[88] == "macaw"
    assert names[934] == "hotdog" and names[319] == "dragonfly"


@pytest.mark.slow
def test_top_5_of_real_photos_with_mobilenet_v2():
    model = build_pretrained("mobilenet_v2", weights=TOP_1_0, include_top=True)
    names = imagenet_class_names()
    photos = ["cat.bmp", "parrot.jpg", "hot_dog.jpg", "dragonfly.bmp"]
    pixels = decode_images([PHOTOS / photo for photo in photos], size=(224, 224)).images
    top5 = [[names[i] for i in np.argsort(row)[::-1][:5]] for row in forward(model, pixels)]
    assert {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat"} & set(top5[0])
    assert top5[1][0] == "macaw" and "hotdog" in top5[2] and top5[3][0] == "dragonfly"


def test_a_base_without_top_loads_local_weights_and_survives_safe_loading(tmp_path):
    model = build_pretrained(
        "mobilenet_v2", weights=BASE_0_35, image_size=(96, 96), base_options={"alpha": 0.35}
    )
    assert model.input.dtype == "uint8" and model.output.shape[1:] == (3, 3, 1280)
    model.save(tmp_path / "base.keras")
    reloaded = load_keras_model(tmp_path / "base.keras", compile=False)
    pixels = decode_images([PHOTOS / "owl.jpg"], size=(96, 96)).images
    np.testing.assert_allclose(forward(reloaded, pixels), forward(model, pixels), rtol=1e-5)


@pytest.mark.parametrize("name", ["efficientnet_b0", "resnet50"])
def test_other_networks_build_structurally_without_weights(name):
    model = build_pretrained(name, weights=None, image_size=(64, 64))
    assert model.input.shape[1:] == (64, 64, 3) and len(model.output.shape) == 4


def test_bad_weights_and_options_are_one_clear_error(tmp_path):
    with pytest.raises(UserInputError, match=r"Weights file not found"):
        build_pretrained("mobilenet_v2", weights=tmp_path / "missing.h5")
    with pytest.raises(UserInputError, match=r"MobileNetV2 cannot be built.*--base-option"):
        build_pretrained("mobilenet_v2", weights=None, base_options={"width": 3})


_OTHER_SIDE = """
import json, sys
import numpy as np
from deepspark.data.image_decode import decode_images
from deepspark.models.applications import build_pretrained
from deepspark.runtime import forward
weights, photos = json.loads(sys.argv[1])
model = build_pretrained("mobilenet_v2", weights=weights, image_size=(128, 128),
                         base_options={"alpha": 0.35})
np.save(sys.argv[2], forward(model, decode_images(photos, size=(128, 128)).images))
"""


# Symmetric (one backend here, the other in a subprocess): not repeated in the torch parity set.
def test_the_same_weights_give_the_same_features_on_both_backends(tmp_path):
    other = {"jax": "torch", "torch": "jax"}[keras.backend.backend()]
    photos = [str(PHOTOS / name) for name in ("cat.bmp", "parrot.jpg", "owl.jpg")]
    output = tmp_path / "other.npy"
    done = subprocess.run(
        [sys.executable, "-c", _OTHER_SIDE, json.dumps([str(BASE_0_35), photos]), str(output)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "KERAS_BACKEND": other},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    model = build_pretrained(
        "mobilenet_v2", weights=BASE_0_35, image_size=(128, 128), base_options={"alpha": 0.35}
    )
    here = forward(model, decode_images(photos, size=(128, 128)).images)
    np.testing.assert_allclose(np.load(output), here, rtol=1e-4, atol=1e-4)
