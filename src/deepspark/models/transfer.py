"""Transfer learning: a pretrained ImageNet base with a new head for the task.

::

    uint8 image -> [augmentation, training only] -> the base's preprocess_input
      -> base network (called with training=False) -> global average pooling -> dropout -> head

The base's BatchNorm layers use their ImageNet statistics in every phase: frozen with the base
in the head phase, and kept frozen (inference mode, scale and offset fixed) when the rest of
the base is unfrozen for fine-tuning (``unfreeze_top``), so the documented Keras pitfall
(fine-tuning with BatchNorm in training mode wrecks the statistics the base learned) cannot
happen. Freezing and unfreezing are ``freeze_base`` /
``unfreeze_top``; the training phases live in ``deepspark.training.transfer``.
"""

from __future__ import annotations

from deepspark._backend import import_keras
from deepspark.data.schema import FeatureSchema
from deepspark.models.applications import build_pretrained, find_application, pretrained_network
from deepspark.models.cnn import augmentation

keras = import_keras()
layers = keras.layers

DEFAULT_HEAD_DROPOUT = 0.2
BASE_LAYER = "base"


def build_transfer(schema: FeatureSchema, config) -> keras.Model:
    """The base (frozen) + new head for an image schema.

    Args:
        schema: An image model's schema (size, classes).
        config: ``base``, ``weights``, ``base_options``, ``augment``, ``dropout`` (head
            dropout; 0 means the default 0.2).
    """
    spec = schema.image
    pretrained = build_pretrained(
        config.base,
        weights=config.weights,
        include_top=False,
        image_size=spec.size,
        base_options=config.base_options,
    )
    mode = pretrained.get_layer("preprocess").mode
    network = pretrained_network(pretrained)
    network.name = BASE_LAYER  # one name whatever the network: freezing finds it by it
    network.trainable = False
    inputs = keras.Input((spec.height, spec.width, 3), dtype="uint8", name="image")
    tensor = layers.Rescaling(1.0, name="to_float")(inputs)  # 0-255 floats, as augmented
    if config.augment:
        tensor = augmentation(3)(tensor)
    from deepspark.models.preprocessing import ImagenetPreprocess

    tensor = ImagenetPreprocess(mode, name="preprocess")(tensor)
    tensor = network(tensor, training=False)
    tensor = layers.GlobalAveragePooling2D(name="pool")(tensor)
    tensor = layers.Dropout(config.dropout or DEFAULT_HEAD_DROPOUT, name="head_dropout")(tensor)
    if len(schema.class_labels) == 2:
        outputs = layers.Dense(1, activation="sigmoid", name="probability")(tensor)
    else:
        outputs = layers.Dense(len(schema.class_labels), activation="softmax", name="probability")(
            tensor
        )
    name = f"deepspark_{find_application(config.base).name}_transfer"
    return keras.Model(inputs, outputs, name=name)


def base_network(model: keras.Model):
    """The pretrained base inside a transfer model."""
    return model.get_layer(BASE_LAYER)


def freeze_base(model: keras.Model) -> None:
    """Train only the head."""
    base_network(model).trainable = False


def unfreeze_top(model: keras.Model, count: int | str) -> int:
    """Unfreeze the top ``count`` layers of the base (``"all"``: every layer) except its
    BatchNorm layers; returns how many layers that hold weights are trainable now.

    BatchNorm layers stay frozen: a frozen BatchNorm runs in inference mode with its ImageNet
    statistics. (Calling the base with ``training=False`` is not enough on Keras 3: ``fit``'s
    ``training=True`` reaches the nested layers, keras-team/keras#20285.)"""
    network = base_network(model)
    network.trainable = True
    weighted = [layer for layer in network.layers if layer.weights]
    frozen = [] if count == "all" else weighted[: max(0, len(weighted) - int(count))]
    frozen += [layer for layer in weighted if isinstance(layer, layers.BatchNormalization)]
    for layer in frozen:
        layer.trainable = False
    return len(set(map(id, weighted)) - set(map(id, frozen)))
