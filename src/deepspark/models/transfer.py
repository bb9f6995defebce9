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

import dataclasses

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


@dataclasses.dataclass(frozen=True)
class Unfrozen:
    """What unfreezing the top of a base did.

    Attributes:
        requested: Layers with weights asked for (``"all"``: every layer of the base that has
            weights).
        unfrozen: Of those, the layers that are trainable now.
        batch_norm_frozen: Of those, the BatchNormalization layers kept frozen.
    """

    requested: int
    unfrozen: int
    batch_norm_frozen: int

    def describe(self) -> str:
        """One line for the log: how many layers were asked for, unfrozen, and why fewer."""
        line = f"{self.requested} layers requested: {self.unfrozen} unfrozen"
        if self.batch_norm_frozen:
            line += (
                f", {self.batch_norm_frozen} BatchNormalization layers kept frozen (their "
                "statistics stay ImageNet's)"
            )
        return line


def unfreeze_top(model: keras.Model, count: int | str) -> int:
    """Unfreeze the top ``count`` layers of the base (``"all"``: every layer) except its
    BatchNorm layers; returns how many layers that hold weights are trainable now (see
    ``unfreeze_top_layers`` for the whole account)."""
    return unfreeze_top_layers(model, count).unfrozen


def unfreeze_top_layers(model: keras.Model, count: int | str) -> Unfrozen:
    """Unfreeze the top ``count`` layers that hold weights of the base (``"all"``: every one)
    except its BatchNorm layers, and say how many were asked for, unfrozen and kept frozen.

    BatchNorm layers stay frozen: a frozen BatchNorm runs in inference mode with its ImageNet
    statistics. (Calling the base with ``training=False`` is not enough on Keras 3: ``fit``'s
    ``training=True`` reaches the nested layers, keras-team/keras#20285.)"""
    network = base_network(model)
    network.trainable = True
    weighted = [layer for layer in network.layers if layer.weights]
    top = weighted if count == "all" else weighted[max(0, len(weighted) - int(count)) :]
    batch_norm = [layer for layer in top if isinstance(layer, layers.BatchNormalization)]
    top_ids = set(map(id, top))
    for layer in weighted:
        if id(layer) not in top_ids or isinstance(layer, layers.BatchNormalization):
            layer.trainable = False
    return Unfrozen(
        requested=len(weighted) if count == "all" else int(count),
        unfrozen=len(top) - len(batch_norm),
        batch_norm_frozen=len(batch_norm),
    )
