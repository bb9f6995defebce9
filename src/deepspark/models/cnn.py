"""A CNN for images, trained from scratch: uint8 pixels in, the task's head out.

Everything numeric lives in the model, so the same raw images feed training, scoring and
explanations: augmentation (flip, rotation, zoom, contrast; active only in training, with a fill
mode both Keras backends implement), scaling to [0, 1], then conv blocks (two 3x3 convolutions,
optional batch norm, max pooling, optional dropout), global average pooling and the head.
"""

from __future__ import annotations

from deepspark._backend import import_keras
from deepspark.errors import UserInputError

keras = import_keras()
layers = keras.layers

DEFAULT_FILTERS = (32, 64, 128)
# "reflect" and "nearest" are implemented by keras.ops.image on JAX and torch alike.
AUGMENT_FILL_MODE = "reflect"


def build_cnn(
    image_size: tuple[int, int],
    *,
    classes: int,
    channels: int = 3,
    filters: tuple[int, ...] = DEFAULT_FILTERS,
    batch_norm: bool = True,
    dropout: float = 0.0,
    augment: bool = False,
) -> keras.Model:
    """Build an image classifier.

    Args:
        image_size: ``(height, width)`` of the (decoded, resized) input images.
        classes: Number of classes; 2 gives one sigmoid output (P(second class)).
        channels: 3 (RGB) or 1 (grayscale).
        filters: Filters of each conv block; each block halves the resolution.
        batch_norm: Batch normalization after each convolution.
        dropout: Dropout after each block and before the head.
        augment: Random flip, rotation, zoom and contrast in training.

    Returns:
        An uncompiled model taking ``(batch, height, width, channels)`` uint8 images.

    Raises:
        UserInputError: For sizes, classes or filters that cannot build a network.
    """
    _check(image_size, classes, channels, filters, dropout)
    inputs = keras.Input((*image_size, channels), dtype="uint8", name="image")
    tensor = layers.Rescaling(1.0 / 255.0, name="scale_pixels")(inputs)
    if augment:
        tensor = augmentation(channels)(tensor)
    for depth, count in enumerate(filters, start=1):
        tensor = _conv_block(tensor, int(count), depth, batch_norm=batch_norm, dropout=dropout)
    tensor = layers.GlobalAveragePooling2D(name="pool")(tensor)
    if dropout > 0:
        tensor = layers.Dropout(dropout, name="head_dropout")(tensor)
    if classes == 2:
        outputs = layers.Dense(1, activation="sigmoid", name="probability")(tensor)
    else:
        outputs = layers.Dense(classes, activation="softmax", name="probability")(tensor)
    return keras.Model(inputs, outputs, name="deepspark_cnn")


def augmentation(channels: int = 3) -> keras.Sequential:
    """The training-only augmentation block (a no-op at inference)."""
    steps = [
        layers.RandomFlip("horizontal"),
        layers.RandomRotation(0.08, fill_mode=AUGMENT_FILL_MODE),
        layers.RandomZoom(0.1, fill_mode=AUGMENT_FILL_MODE),
    ]
    if channels == 3:
        steps.append(layers.RandomContrast(0.15))
    return keras.Sequential(steps, name="augment")


def _conv_block(tensor, count: int, depth: int, *, batch_norm: bool, dropout: float):
    for index in (1, 2):
        tensor = layers.Conv2D(
            count,
            3,
            padding="same",
            use_bias=not batch_norm,
            kernel_initializer="he_normal",
            name=f"conv{depth}_{index}",
        )(tensor)
        if batch_norm:
            # Moving statistics settle in tens of steps, not hundreds (PyTorch's default): small
            # image sets are evaluated with usable statistics after an epoch or two.
            tensor = layers.BatchNormalization(momentum=0.9, name=f"conv{depth}_{index}_bn")(tensor)
        tensor = layers.Activation("relu", name=f"conv{depth}_{index}_relu")(tensor)
    tensor = layers.MaxPooling2D(2, name=f"pool{depth}")(tensor)
    if dropout > 0:
        tensor = layers.Dropout(dropout, name=f"dropout{depth}")(tensor)
    return tensor


def _check(image_size, classes: int, channels: int, filters, dropout: float) -> None:
    if len(image_size) != 2 or min(int(side) for side in image_size) < 2 ** len(filters):
        raise UserInputError(
            f"Invalid --image-size: {len(filters)} conv blocks halve the image {len(filters)} "
            f"times, so each side needs at least {2 ** len(filters)} pixels. "
            f"Received: image_size={tuple(image_size)!r}"
        )
    if int(classes) < 2:
        raise UserInputError(
            f"An image classifier needs at least 2 classes. Received: classes={classes!r}"
        )
    if channels not in (1, 3) or not filters or any(int(count) <= 0 for count in filters):
        raise UserInputError(
            "Invalid CNN settings: channels must be 1 or 3 and filters positive, e.g. 32,64,128. "
            f"Received: channels={channels!r}, filters={tuple(filters)!r}"
        )
    if not 0 <= dropout < 1:
        raise UserInputError(f"Invalid --dropout: must be in [0, 1). Received: dropout={dropout}")
