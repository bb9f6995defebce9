"""The ImageNet zoo: any ``keras.applications`` network, taking raw uint8 images.

``build_pretrained("mobilenet_v2", weights=...)`` returns a model whose input is uint8 RGB
pixels: the network's own ``preprocess_input`` is a layer inside it (``ImagenetPreprocess``),
so no caller can feed it the wrong scaling. Names are the Keras class names in any spelling
(``MobileNetV2``, ``mobilenet_v2``, ``mobilenetv2``). Weights: ``"imagenet"`` (Keras downloads
and caches them), a local ``.weights.h5`` / ``.h5`` file (offline clusters), or ``None``.
Constructor options of the network (MobileNetV2's ``alpha``...) pass through ``base_options``.

The 1000 ImageNet class names ship with deepspark (``imagenet_class_names``; from
torchvision's BSD-licensed list), so classifying needs no download of Keras' class index.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from pathlib import Path
from typing import Any

from deepspark._backend import import_keras
from deepspark.errors import UserInputError

keras = import_keras()

# keras.applications class-name prefix -> (its module, preprocess mode); longest prefix wins.
_FAMILIES = {
    "ConvNeXt": ("convnext", "none"),
    "DenseNet": ("densenet", "torch"),
    "EfficientNetV2": ("efficientnet_v2", "none"),
    "EfficientNet": ("efficientnet", "none"),
    "InceptionResNetV2": ("inception_resnet_v2", "tf"),
    "InceptionV3": ("inception_v3", "tf"),
    "MobileNetV3": ("mobilenet_v3", "none"),
    "MobileNetV2": ("mobilenet_v2", "tf"),
    "MobileNet": ("mobilenet", "tf"),
    "NASNet": ("nasnet", "tf"),
    "ResNet50V2": ("resnet_v2", "tf"),
    "ResNet101V2": ("resnet_v2", "tf"),
    "ResNet152V2": ("resnet_v2", "tf"),
    "ResNet": ("resnet", "caffe"),
    "VGG16": ("vgg16", "caffe"),
    "VGG19": ("vgg19", "caffe"),
    "Xception": ("xception", "tf"),
}
# Networks whose ImageNet input is not 224 x 224.
_NATIVE_SIZES = {
    "InceptionV3": 299,
    "InceptionResNetV2": 299,
    "Xception": 299,
    "NASNetLarge": 331,
    "EfficientNetB1": 240,
    "EfficientNetB2": 260,
    "EfficientNetB3": 300,
    "EfficientNetB4": 380,
    "EfficientNetB5": 456,
    "EfficientNetB6": 528,
    "EfficientNetB7": 600,
    "EfficientNetV2B1": 240,
    "EfficientNetV2B2": 260,
    "EfficientNetV2B3": 300,
    "EfficientNetV2S": 384,
    "EfficientNetV2M": 480,
    "EfficientNetV2L": 480,
}


@dataclasses.dataclass(frozen=True)
class Application:
    """One keras.applications network.

    Attributes:
        class_name: The Keras constructor (``MobileNetV2``).
        name: deepspark's spelling (``mobilenet_v2``).
        module: The keras.applications module holding its ``preprocess_input``.
        preprocess: Its ``preprocess_input`` mode (``tf``, ``torch``, ``caffe`` or ``none``).
        native_size: The ImageNet input side (224 for most).
    """

    class_name: str
    name: str
    module: str
    preprocess: str
    native_size: int


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


_SIZED_FAMILIES = ("ConvNeXt", "EfficientNetV2", "EfficientNet", "MobileNetV3", "NASNet")


def _snake(class_name: str, prefix: str, module: str) -> str:
    """deepspark's spelling: ``mobilenet_v2``, ``resnet50``, ``resnet50_v2``,
    ``efficientnet_b0``, ``efficientnet_v2_s``, ``convnext_tiny``, ``inception_resnet_v2``."""
    if prefix in _SIZED_FAMILIES:
        return f"{module}_{class_name[len(prefix) :].lower()}"
    name = re.sub(r"(?<=[a-z0-9])(v[0-9])$", r"_\1", class_name.lower())
    return name.replace("inceptionresnet", "inception_resnet")


@functools.cache
def applications() -> dict[str, Application]:
    """Every keras.applications network by normalised name."""
    found = {}
    for class_name in dir(keras.applications):
        if not class_name[:1].isupper():
            continue
        prefix = max((p for p in _FAMILIES if class_name.startswith(p)), key=len, default=None)
        if prefix is None:
            continue
        module, mode = _FAMILIES[prefix]
        application = Application(
            class_name,
            _snake(class_name, prefix, module),
            module,
            mode,
            _NATIVE_SIZES.get(class_name, 224),
        )
        found[_key(class_name)] = application
    return found


def find_application(name: str) -> Application:
    """The network called ``name`` (any spelling of a keras.applications class).

    Raises:
        UserInputError: No such network; the message lists them.
    """
    found = applications().get(_key(str(name)))
    if found is None:
        names = ", ".join(sorted(app.name for app in applications().values()))
        raise UserInputError(
            f"Unknown pretrained network; use a keras.applications name: {names}. "
            f"Received: model={name!r}"
        )
    return found


def check_weights(weights: str | Path | None) -> str | None:
    """``"imagenet"``, ``None`` or an existing local file (as a string).

    Raises:
        UserInputError: A path that does not exist.
    """
    if weights is None or str(weights) == "imagenet":
        return None if weights is None else "imagenet"
    path = Path(weights).expanduser()
    if not path.is_file():
        raise UserInputError(
            "Weights file not found; give a Keras .weights.h5 / .h5 file, or 'imagenet' to "
            f"download Keras' weights. Received: weights={str(weights)!r}"
        )
    return str(path)


def build_pretrained(
    name: str,
    *,
    weights: str | Path | None = "imagenet",
    include_top: bool = False,
    image_size: tuple[int, int] | None = None,
    base_options: dict[str, Any] | None = None,
) -> keras.Model:
    """A keras.applications network taking uint8 RGB images.

    Args:
        name: The network (see ``find_application``).
        weights: ``"imagenet"``, a local weights file, or ``None`` (random).
        include_top: Keep the 1000-class ImageNet head (input at the native size); without
            it the output is the last block's feature map.
        image_size: ``(height, width)``; default the network's native size.
        base_options: Constructor options, e.g. ``{"alpha": 0.35}`` for MobileNetV2.

    Returns:
        A functional model: ``image`` (uint8) -> preprocessing -> the network (a nested model
        named after it, so it can be frozen or fine-tuned as one layer).

    Raises:
        UserInputError: Unknown network, missing weights file, or options the network rejects.
    """
    from deepspark.models.preprocessing import ImagenetPreprocess

    application = find_application(name)
    size = tuple(image_size) if image_size else (application.native_size,) * 2
    inputs = keras.Input((*size, 3), dtype="uint8", name="image")
    scaled = ImagenetPreprocess(application.preprocess, name="preprocess")(inputs)
    network = _construct(application, check_weights(weights), include_top, size, base_options)
    outputs = network(scaled)
    return keras.Model(inputs, outputs, name=f"{application.name}_pretrained")


def _construct(application, weights, include_top: bool, size, base_options):
    constructor = getattr(keras.applications, application.class_name)
    options = dict(base_options or {})
    try:
        return constructor(
            include_top=include_top, weights=weights, input_shape=(*size, 3), **options
        )
    except (ValueError, TypeError) as error:
        first_line = str(error).strip().splitlines()[0][:300]
        raise UserInputError(
            f"{application.class_name} cannot be built with these settings ({first_line}); "
            f"check --weights, --image-size and --base-option. Received: model="
            f"{application.name!r}, include_top={include_top}, options={options}"
        ) from error
    except Exception as error:  # noqa: BLE001  Keras' download raises a bare Exception
        if weights != "imagenet":
            raise
        first_line = str(error).strip().splitlines()[0][:200]
        raise UserInputError(
            f"Downloading the ImageNet weights of {application.class_name} failed "
            f"({first_line}); offline, give a local weights file with --weights PATH. "
            f"Received: weights='imagenet'"
        ) from error


def pretrained_network(model: keras.Model):
    """The keras.applications network nested in a model from ``build_pretrained``."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            return layer
    raise UserInputError(f"Model {model.name!r} holds no pretrained network")


@functools.cache
def imagenet_class_names() -> tuple[str, ...]:
    """The 1000 ImageNet class names in the order of a 1000-class keras.applications head."""
    text = Path(__file__).with_name("imagenet_classes.txt").read_text(encoding="utf-8")
    names = tuple(line for line in text.splitlines() if line)
    assert len(names) == 1000, len(names)
    return names
