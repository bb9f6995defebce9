"""NumPy convolution and pooling match Keras' layers to 1e-5 (on JAX and torch), the output-size
and parameter arithmetic matches what Keras builds, and the lesson draws a real photo."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest

from deepspark.errors import UserInputError
from deepspark.fundamentals import (
    CLASSIC_KERNELS,
    average_pool2d,
    conv2d,
    conv_output_size,
    conv_parameter_count,
    dense_parameter_count,
    max_pool2d,
    run_lesson,
)
from deepspark.fundamentals._lesson_convolutions import run as run_convolutions_lesson
from tests.conftest import SHARED_DATA

PHOTO = SHARED_DATA / "images" / "photos" / "grace_hopper.bmp"
needs_photo = pytest.mark.skipif(not PHOTO.exists(), reason="../shared/data/images is not there")
TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}


def keras_conv(images, kernels, bias, *, stride, padding) -> np.ndarray:
    layer = keras.layers.Conv2D(kernels.shape[-1], kernels.shape[:2], strides=stride,
                                padding=padding)  # fmt: skip
    layer.build(images.shape)
    layer.set_weights([kernels.astype(np.float32), bias.astype(np.float32)])
    return keras.ops.convert_to_numpy(layer(images.astype(np.float32)))


def photo(size=(40, 34)) -> np.ndarray:
    from deepspark.data.image_decode import decode_image

    return decode_image(PHOTO, size=size, channels=3)[None].astype(np.float64) / 255.0


@pytest.mark.parity
@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("stride", [1, 2, (2, 1)])
@pytest.mark.parametrize("kernel", [(3, 3), (4, 2)])
def test_conv2d_matches_keras_on_random_images(padding, stride, kernel):
    rng = np.random.default_rng(0)
    images = rng.normal(size=(2, 9, 8, 3))
    kernels = rng.normal(size=(*kernel, 3, 5))
    bias = rng.normal(size=5)
    expected = keras_conv(images, kernels, bias, stride=stride, padding=padding)
    result = conv2d(images, kernels, bias=bias, stride=stride, padding=padding)
    assert result.shape == expected.shape
    np.testing.assert_allclose(result, expected, **TOLERANCE)


@pytest.mark.parity
@needs_photo
@pytest.mark.parametrize(("padding", "stride"), [("valid", 1), ("same", 1), ("same", 2)])
def test_conv2d_matches_keras_on_a_photo(padding, stride):
    images = photo()
    kernels = np.stack([CLASSIC_KERNELS["sobel_x"], CLASSIC_KERNELS["gaussian_blur"]], axis=-1)
    kernels = np.repeat(kernels[:, :, None, :], 3, axis=2) / 3.0  # RGB in, 2 filters out
    bias = np.array([0.1, -0.2])
    expected = keras_conv(images, kernels, bias, stride=stride, padding=padding)
    result = conv2d(images, kernels, bias=bias, stride=stride, padding=padding)
    np.testing.assert_allclose(result, expected, **TOLERANCE)
    # "same" keeps ceil(size / stride); Keras puts the odd padding pixel at the bottom / right.
    if padding == "same":
        assert result.shape[1:3] == (-(-40 // stride), -(-34 // stride))


POOL_LAYERS = {"max": (keras.layers.MaxPooling2D, max_pool2d),
               "average": (keras.layers.AveragePooling2D, average_pool2d)}  # fmt: skip
# Keras 3.15 on torch pads an uneven "same" border by replicating edge pixels, which changes an
# average whose window takes more than one of them (keras-team/keras#18452, fixed upstream by
# keras-team/keras#23233); JAX, TensorFlow and this reference leave padding out of the mean.
TORCH_UNEVEN_AVERAGE = {((2, 3), (1, 2))}


@pytest.mark.parity
@pytest.mark.parametrize("kind", list(POOL_LAYERS))
@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize(("pool_size", "strides"), [(2, None), (3, 2), ((2, 3), (1, 2))])
def test_pooling_matches_keras(request, kind, padding, pool_size, strides):
    if (
        keras.backend.backend() == "torch"
        and (kind, padding) == ("average", "same")
        and (pool_size, strides) in TORCH_UNEVEN_AVERAGE
    ):
        request.applymarker(pytest.mark.xfail(strict=True, reason="keras-team/keras#18452"))
    images = np.random.default_rng(1).normal(size=(2, 7, 9, 3))
    layer_class, pool = POOL_LAYERS[kind]
    layer = layer_class(pool_size, strides=strides, padding=padding)
    expected = keras.ops.convert_to_numpy(layer(images.astype(np.float32)))
    result = pool(images, pool_size, strides=strides, padding=padding)
    assert result.shape == expected.shape
    np.testing.assert_allclose(result, expected, **TOLERANCE)


@needs_photo
def test_max_pooling_a_photo_matches_keras():
    images = photo((33, 30))
    expected = keras.ops.convert_to_numpy(keras.layers.MaxPooling2D(2)(images.astype("float32")))
    np.testing.assert_allclose(max_pool2d(images), expected, **TOLERANCE)
    assert expected.shape == (1, 16, 15, 3)


def test_output_size_arithmetic():
    assert conv_output_size(32, 5, padding=2) == 32  # (32 - 5 + 4) / 1 + 1
    assert conv_output_size(7, 3, stride=2) == 3  # CS231n: 7x7 input, 3x3 filter, stride 2
    assert conv_output_size(7, 3, stride=1) == 5
    assert conv_output_size(224, 7, stride=2, padding=3) == 112
    assert conv_output_size(32, 3, stride=2, padding="same") == 16
    assert conv_output_size(7, 3, stride=3, padding=0) == 2  # Keras floors (2.33 -> 2)
    for size, kernel, stride, padding in [(9, 3, 2, "valid"), (9, 4, 2, "same"), (8, 3, 3, 1)]:
        shape = conv2d(np.zeros((1, size, size, 1)), np.zeros((kernel, kernel, 1, 1)),
                       stride=stride, padding=padding).shape  # fmt: skip
        assert shape[1] == conv_output_size(size, kernel, stride=stride, padding=padding)
        if isinstance(padding, str):
            layer = keras.layers.Conv2D(1, kernel, strides=stride, padding=padding)
            assert layer.compute_output_shape((1, size, size, 1))[1] == shape[1]


def test_parameter_counts_equal_keras():
    conv = keras.layers.Conv2D(32, 3)
    conv.build((None, 32, 32, 3))
    dense = keras.layers.Dense(32)
    dense.build((None, 32 * 32 * 3))
    assert conv_parameter_count(3, in_channels=3, filters=32) == conv.count_params() == 896
    assert dense_parameter_count(3072, 32) == dense.count_params() == 98_336
    no_bias = keras.layers.Conv2D(8, (5, 3), use_bias=False)
    no_bias.build((None, 16, 16, 4))
    assert conv_parameter_count((5, 3), in_channels=4, filters=8, bias=False) == (
        no_bias.count_params()
    )


def test_classic_kernels_do_what_they_say():
    step = np.zeros((1, 6, 6, 1))
    step[:, :, 3:] = 1.0  # a vertical edge
    for name, kernel in CLASSIC_KERNELS.items():
        assert kernel.shape == (3, 3)
        assert kernel.sum() == pytest.approx(0.0 if "sobel" in name or name in ("edge",
                                             "laplacian") else 1.0)  # fmt: skip
    as_filter = {name: kernel[:, :, None, None] for name, kernel in CLASSIC_KERNELS.items()}
    np.testing.assert_array_equal(conv2d(step, as_filter["identity"], padding="same"), step)
    vertical = conv2d(step, as_filter["sobel_x"])[0, :, :, 0]
    horizontal = conv2d(step, as_filter["sobel_y"])[0, :, :, 0]
    assert np.abs(vertical).max() == 4.0 and np.abs(horizontal).max() == 0.0


def test_bad_arguments_say_what_to_pass():
    with pytest.raises(UserInputError, match="must be 4-D"):
        conv2d(np.zeros((5, 5)), np.zeros((3, 3, 1, 1)))
    with pytest.raises(UserInputError, match="in_channels equal to the images' channels"):
        conv2d(np.zeros((1, 5, 5, 3)), np.zeros((3, 3, 1, 1)))
    with pytest.raises(UserInputError, match="padding must be 'valid', 'same'"):
        conv2d(np.zeros((1, 5, 5, 1)), np.zeros((3, 3, 1, 1)), padding="full")
    with pytest.raises(UserInputError, match="kernel is larger than the padded input"):
        conv_output_size(3, 5)
    with pytest.raises(UserInputError, match="strides must be a positive integer"):
        max_pool2d(np.zeros((1, 4, 4, 1)), 2, strides=0)


def check_lesson(figures: dict, output_dir: Path) -> None:
    assert len(figures["plots"]) == 4
    for plot in figures["plots"]:
        assert Path(plot).parent == output_dir
        assert Path(plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    json.dumps(figures, allow_nan=False)
    assert figures["identity_max_abs_change"] == 0.0
    ratios = dict(zip(figures["kernels"], figures["neighbour_difference_ratio"], strict=True))
    assert ratios["box_blur"] < 1.0 and ratios["gaussian_blur"] < 1.0 < ratios["sharpen"]
    assert figures["window_output_size"] == 3 and figures["window_dot_products_match_conv2d"]
    assert figures["output_sizes_match_conv2d"]
    sizes = dict(zip(figures["output_size_cases"], figures["output_sizes"], strict=True))
    assert sizes["W=32 F=5 P=2 S=1"] == 32 and sizes["W=7 F=3 P=0 S=2"] == 3
    assert figures["conv_3x3x3_to_32_parameters"] == 896
    assert figures["dense_3072_to_32_parameters"] == 98_336
    assert figures["dense_to_conv_parameter_ratio"] == pytest.approx(98_336 / 896)


def test_lesson_runs_offline_on_a_synthetic_scene(tmp_path):
    figures = run_lesson("convolutions", tmp_path)
    assert figures["topic"] == "convolutions" and figures["image"] == "synthetic scene"
    check_lesson(figures, tmp_path)


@needs_photo
def test_lesson_on_a_real_photo(tmp_path):
    figures = run_convolutions_lesson(tmp_path, image=PHOTO)
    check_lesson(figures, tmp_path)
    # Grace Hopper's portrait is 512 wide and 600 high: the aspect ratio is kept.
    assert (figures["image_height"], figures["image_width"]) == (256, 218)
    window = np.array(figures["window_input"], dtype=float)
    top, left = (position * 2 for position in figures["window_positions"][-1])
    assert figures["window_dot_products"][-1] == pytest.approx(
        float(np.sum(window[top : top + 3, left : left + 3] * CLASSIC_KERNELS["sobel_x"]))
    )


def test_lesson_rejects_a_file_that_is_not_an_image(tmp_path):
    not_an_image = tmp_path / "notes.txt"
    not_an_image.write_text("not pixels")
    with pytest.raises(UserInputError, match="Cannot read the lesson's image"):
        run_convolutions_lesson(tmp_path, image=not_an_image)
