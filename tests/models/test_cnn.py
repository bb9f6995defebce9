"""The image CNN: learns a simple visual rule from uint8 pixels, augments only in training,
round-trips through the one loader, and rejects impossible settings. Runs on torch too (parity)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from deepspark.errors import UserInputError
from deepspark.models.cnn import augmentation, build_cnn
from deepspark.models.loader import load_keras_model

pytestmark = pytest.mark.parity


def bright_half_images(count: int, size: int = 16, seed: int = 0):
    """Label 1 when the top half is the brighter one: learnable only from where light is."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 90, size=(count, size, size, 3)).astype(np.uint8)
    labels = rng.integers(0, 2, size=count)
    half = size // 2
    images[labels == 1, :half] += 120
    images[labels == 0, half:] += 120
    return images, labels.astype(np.float32).reshape(-1, 1)


def test_cnn_learns_from_raw_pixels():
    keras.utils.set_random_seed(0)
    images, labels = bright_half_images(256)
    model = build_cnn((16, 16), classes=2, filters=(8, 16), augment=False)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="binary_crossentropy")
    # Enough steps for batch norm's moving statistics (momentum 0.99) to settle for inference.
    model.fit(images, labels, epochs=12, batch_size=32, verbose=0)
    test_images, test_labels = bright_half_images(128, seed=1)
    predicted = keras.ops.convert_to_numpy(model(test_images, training=False)) > 0.5
    assert (predicted == test_labels.astype(bool)).mean() > 0.9
    assert model.input.dtype == "uint8" and model.output.shape[-1] == 1


def test_augmentation_only_in_training():
    images = bright_half_images(8)[0].astype(np.float32) / 255.0
    block = augmentation()
    unchanged = keras.ops.convert_to_numpy(block(images, training=False))
    np.testing.assert_allclose(unchanged, images)
    keras.utils.set_random_seed(1)
    augmented = keras.ops.convert_to_numpy(block(images, training=True))
    assert augmented.shape == images.shape and np.abs(augmented - images).max() > 0.05


def test_multiclass_cnn_round_trips_through_the_loader(tmp_path):
    model = build_cnn((12, 12), classes=3, channels=1, filters=(4,), dropout=0.2, augment=True)
    images = np.random.default_rng(2).integers(0, 255, size=(5, 12, 12, 1)).astype(np.uint8)
    before = keras.ops.convert_to_numpy(model(images, training=False))
    model.save(tmp_path / "cnn.keras")
    loaded = load_keras_model(tmp_path / "cnn.keras", compile=False)
    after = keras.ops.convert_to_numpy(loaded(images, training=False))
    assert before.shape == (5, 3)
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("settings", "pattern"),
    [
        ({"image_size": (4, 4), "classes": 2}, r"each side needs at least 8 pixels"),
        ({"image_size": (32, 32), "classes": 1}, r"at least 2 classes"),
        ({"image_size": (32, 32), "classes": 2, "filters": (8, 0)}, r"filters positive"),
        ({"image_size": (32, 32), "classes": 2, "dropout": 1.0}, r"Invalid --dropout"),
    ],
)
def test_impossible_settings_are_user_errors(settings, pattern):
    image_size = settings.pop("image_size")
    with pytest.raises(UserInputError, match=pattern):
        build_cnn(image_size, **settings)
