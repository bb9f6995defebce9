"""A synthetic image set whose label depends only on the top-left quadrant, and small models.

Every image is low-amplitude noise; inside the top-left quadrant (with a small margin) it
carries horizontal stripes (class ``horizontal``) or vertical stripes (``vertical``). The other
three quadrants are noise whatever the label, so a network that learned the task has no reason
to look there: a faithful attribution map puts its mass in the quadrant.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

CLASSES = ("horizontal", "vertical")
SIZE = 32
NOISE = 60
SIGNAL = 160
MARGIN = 3


def quadrant_image(label: int, rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    image = rng.integers(0, NOISE, size=(size, size, 3)).astype(np.int32)
    half = size // 2
    quadrant = image[MARGIN : half - MARGIN, MARGIN : half - MARGIN]
    if label == 0:
        quadrant[1::4] += SIGNAL
    else:
        quadrant[:, 1::4] += SIGNAL
    return np.clip(image, 0, 255).astype(np.uint8)


def quadrant_images(count: int, seed: int, size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """``count`` images and their labels (0 or 1)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, count)
    return np.stack([quadrant_image(int(label), rng, size) for label in labels]), labels


def quadrant_mass(heatmaps: np.ndarray) -> np.ndarray:
    """Per map: the share of ``|attribution|`` inside the top-left quadrant."""
    magnitude = np.abs(heatmaps)
    half_height, half_width = magnitude.shape[1] // 2, magnitude.shape[2] // 2
    inside = magnitude[:, :half_height, :half_width].reshape(len(magnitude), -1).sum(axis=1)
    return inside / magnitude.reshape(len(magnitude), -1).sum(axis=1)


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def image_frame(images: np.ndarray) -> pd.DataFrame:
    """A table of encoded images (the ``image`` column an image model reads)."""
    return pd.DataFrame({"image": [png_bytes(image) for image in images]})


def quadrant_folder(root: Path, *, per_class: int, seed: int, size: int = SIZE) -> Path:
    """``root/<class>/<n>.png``."""
    rng = np.random.default_rng(seed)
    for label, name in enumerate(CLASSES):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            Image.fromarray(quadrant_image(label, rng, size)).save(folder / f"{index:03d}.png")
    return root


def image_schema(size: int = SIZE, classes=CLASSES, channels: int = 3):
    from deepspark.data.schema import FeatureSchema, FeatureSpec, ImageSpec

    return FeatureSchema(
        features=(FeatureSpec("image", "image", "binary"),),
        target="label",
        task="binary" if len(classes) == 2 else "multiclass",
        class_labels=tuple(classes),
        image=ImageSpec(size, size, channels),
    )


def trained_quadrant_cnn(*, seed: int = 0, epochs: int = 10, count: int = 200):
    """A deepspark CNN (filters 8, 16) fitted on the quadrant task directly with Keras (no
    MLflow: a few seconds), wrapped as a ``DeepsparkModel``; and its training images."""
    import keras

    from deepspark.models.cnn import build_cnn
    from deepspark.tracking.model import DeepsparkModel

    images, labels = quadrant_images(count, seed)
    keras.utils.set_random_seed(seed)
    network = build_cnn((SIZE, SIZE), classes=2, filters=(8, 16))
    network.compile(keras.optimizers.Adam(0.01), "binary_crossentropy", metrics=["accuracy"])
    history = network.fit(images, labels.astype("float32"), epochs=epochs, batch_size=32, verbose=0)
    assert history.history["accuracy"][-1] == 1.0, history.history
    return DeepsparkModel(network, image_schema(), {}), images


def fresh_quadrant_cnn(seed: int):
    """The same architecture with freshly initialised weights (the randomisation test)."""
    import keras

    from deepspark.models.cnn import build_cnn
    from deepspark.tracking.model import DeepsparkModel

    keras.utils.set_random_seed(seed)
    return DeepsparkModel(build_cnn((SIZE, SIZE), classes=2, filters=(8, 16)), image_schema(), {})
