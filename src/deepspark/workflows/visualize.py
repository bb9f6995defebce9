"""``visualize``: what an image model's convolutions see in one image, as PNGs and a web page.

The output folder (written into a temporary sibling, then swapped in)::

    input.png        the image as the model receives it (decoded and resized)
    filters.png      the first Conv2D layer's kernels, one tile per filter, each scaled to [0, 1]
    block_<n>.png    the feature maps at the end of conv block n: up to 32 channels, one tile each
    block_<n>.npy    the same feature maps as numbers, (height, width, channels) float32
    index.html       every picture with its layer name and shape

A conv block of deepspark's CNN ends in its max-pooling layer (``pool<n>``; Keras applications
name it ``block<n>_pool``); a model without such layers shows every Conv2D layer's output.
"""

from __future__ import annotations

import html
import logging
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from deepspark._atomic import folder_replacement
from deepspark.errors import UserInputError

logger = logging.getLogger(__name__)

MAX_CHANNELS = 32
TILE_COLUMNS = 8
MIN_TILE_PIXELS = 48  # small kernels and maps are enlarged (nearest neighbour) to be seen
MIN_INPUT_PIXELS = 128
_BLOCK_END = re.compile(r"^(pool\d+|block_?\d+_pool)$")


def visualize(
    model_uri: str,
    image: str | os.PathLike[str],
    *,
    output_dir: str | os.PathLike[str],
    overwrite: bool = False,
    tracking_uri: str | None = None,
) -> dict[str, Any]:
    """Write an image model's first-layer filters and its feature maps for one image.

    Args:
        model_uri: A deepspark image model (``models:/...``, ``runs:/...`` or a local folder).
        image: An image file; it is decoded and resized as the model expects.
        output_dir: Folder for the PNG, NPY and ``index.html`` files.
        overwrite: Replace an existing, non-empty ``output_dir``.
        tracking_uri: MLflow tracking URI for ``models:/`` and ``runs:/`` URIs.

    Returns:
        ``model_uri``, ``image``, ``output_dir``, ``files`` (paths written) and ``layers``
        (``name`` and ``shape`` of each feature map shown, without the batch axis).

    Raises:
        UserInputError: A non-empty ``output_dir`` without ``overwrite``, a model that takes
            tables or has no Conv2D layer, or an image that cannot be decoded.

    Example::

        visualize("models:/cats-vs-dogs/1", "cat.jpg", output_dir="cat-maps")
    """
    from deepspark.explain.report import check_output_dir
    from deepspark.tracking.model import load_model
    from deepspark.tracking.run import use_tracking_uri

    folder = check_output_dir(output_dir, overwrite=overwrite).absolute()
    use_tracking_uri(tracking_uri)
    model = load_model(model_uri)
    pixels = _decode(image, model, model_uri)
    network = model.keras_model
    first_conv, shown = _conv_layers(network, model_uri)
    maps = _feature_maps(network, shown, pixels)
    layers = [
        {"name": layer.name, "shape": list(values.shape)}
        for layer, values in zip(shown, maps, strict=True)
    ]
    with folder_replacement(folder) as staging:
        names = _write_outputs(staging, pixels, first_conv, layers, maps)
    logger.info("wrote %d files to %s", len(names), folder)
    return {
        "model_uri": model_uri,
        "image": str(image),
        "output_dir": str(folder),
        "files": [str(folder / name) for name in names],
        "layers": layers,
    }


def _decode(image, model, model_uri: str) -> np.ndarray:
    """The image as the model takes it: ``(height, width, channels)`` uint8."""
    from deepspark.data.image_decode import ImageDecodeError, decode_image
    from deepspark.models.kinds import kind_of

    if not kind_of(model.schema).reads_images:
        raise UserInputError(
            f"This model takes tables, not images; give an image model (one trained on an "
            f"image folder). Received: model={model_uri!r}"
        )
    spec = model.schema.image
    try:
        return decode_image(image, size=spec.size, channels=spec.channels)
    except ImageDecodeError as error:
        raise ImageDecodeError(
            f"Cannot use the image: {error}; give an image file (JPEG, PNG, BMP, ...). "
            f"Received: image={str(image)!r}"
        ) from error


def _conv_layers(network, model_uri: str) -> tuple[Any, list[Any]]:
    """The first Conv2D layer, and the layers whose outputs are shown (block ends, else convs)."""
    from deepspark._backend import import_keras

    keras = import_keras()
    convs = [layer for layer in network.layers if isinstance(layer, keras.layers.Conv2D)]
    if not convs:
        raise UserInputError(
            f"The model has no Conv2D layer of its own (a pretrained network nested inside it "
            f"is not shown); give a convolutional image model. Received: model={model_uri!r}"
        )
    block_ends = [
        layer
        for layer in network.layers
        if isinstance(layer, keras.layers.MaxPooling2D) and _BLOCK_END.match(layer.name)
    ]
    return convs[0], block_ends or convs


def _feature_maps(network, layers: list[Any], pixels: np.ndarray) -> list[np.ndarray]:
    """Each layer's output for the one image, in inference mode (no augmentation or dropout)."""
    from deepspark._backend import import_keras

    keras = import_keras()
    extractor = keras.Model(network.inputs, [layer.output for layer in layers])
    outputs = extractor([pixels[None]], training=False)
    if not isinstance(outputs, list | tuple):
        outputs = [outputs]
    return [keras.ops.convert_to_numpy(output)[0].astype(np.float32) for output in outputs]


def _write_outputs(folder: Path, pixels, first_conv, layers, maps) -> list[str]:
    """Every file of the folder; returns their names in page order."""
    height, width, channels = pixels.shape
    scale = max(1, math.ceil(MIN_INPUT_PIXELS / max(height, width)))
    _save_png(folder / "input.png", _enlarge(pixels, scale))
    kernel = np.asarray(first_conv.get_weights()[0])
    _save_png(folder / "filters.png", _mosaic(_filter_tiles(kernel)))
    figures = [
        ("input.png", f"input: {height}x{width}x{channels}, as the model receives it", None),
        ("filters.png", f"filters of {first_conv.name}: {_shape_text(kernel.shape)} "
         f"(height x width x in x out), each scaled to [0, 1]", None),
    ]  # fmt: skip
    for number, (layer, values) in enumerate(zip(layers, maps, strict=True), start=1):
        shown = min(values.shape[-1], MAX_CHANNELS)
        _save_png(folder / f"block_{number}.png", _mosaic(_map_tiles(values[..., :shown])))
        np.save(folder / f"block_{number}.npy", values)
        caption = f"block {number}: {layer['name']}, {_shape_text(values.shape)}"
        figures.append((f"block_{number}.png", f"{caption} (first {shown} channels)",
                        f"block_{number}.npy"))  # fmt: skip
    (folder / "index.html").write_text(_page(figures))
    pictures = [name for name, _, _ in figures]
    return [*pictures, *(numbers for _, _, numbers in figures if numbers), "index.html"]


def _shape_text(shape) -> str:
    return "x".join(str(size) for size in shape)


def _scaled(values: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """Min-max scaling to [0, 1] over ``axes`` (a constant slice becomes 0)."""
    low = values.min(axis=axes, keepdims=True)
    span = values.max(axis=axes, keepdims=True) - low
    return np.where(span > 0, (values - low) / np.where(span > 0, span, 1.0), 0.0)


def _filter_tiles(kernel: np.ndarray) -> np.ndarray:
    """``(filters, kh, kw, 3 or 1)`` in [0, 1]: RGB for an RGB input, else the channel mean."""
    tiles = np.moveaxis(kernel, -1, 0)  # (filters, kh, kw, in)
    if tiles.shape[-1] != 3:
        tiles = tiles.mean(axis=-1, keepdims=True)
    return _scaled(tiles, axes=(1, 2, 3))


def _map_tiles(values: np.ndarray) -> np.ndarray:
    """``(channels, height, width, 1)`` in [0, 1], each channel scaled on its own."""
    return _scaled(np.moveaxis(values, -1, 0)[..., None], axes=(1, 2, 3))


def _enlarge(values: np.ndarray, scale: int) -> np.ndarray:
    return values.repeat(scale, axis=0).repeat(scale, axis=1)


def _mosaic(tiles: np.ndarray) -> np.ndarray:
    """Tiles in [0, 1] on a white grid of ``TILE_COLUMNS`` columns, as uint8."""
    count, height, width, channels = tiles.shape
    scale = max(1, math.ceil(MIN_TILE_PIXELS / max(height, width)))
    tile_height, tile_width, gap = height * scale, width * scale, 2
    columns = min(count, TILE_COLUMNS)
    rows = math.ceil(count / columns)
    sheet = np.ones(
        (rows * (tile_height + gap) + gap, columns * (tile_width + gap) + gap, channels)
    )
    for index, tile in enumerate(tiles):
        top = gap + (index // columns) * (tile_height + gap)
        left = gap + (index % columns) * (tile_width + gap)
        sheet[top : top + tile_height, left : left + tile_width] = _enlarge(tile, scale)
    return np.round(sheet * 255.0).astype(np.uint8)


def _save_png(path: Path, pixels: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(path)


def _page(figures: list[tuple[str, str, str | None]]) -> str:
    items = []
    for name, caption, numbers in figures:
        link = f' (<a href="{html.escape(numbers)}">numbers</a>)' if numbers else ""
        items.append(
            f'<figure><img src="{html.escape(name)}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}{link}</figcaption></figure>\n"
        )
    return (
        "<!doctype html>\n<html><head><meta charset='utf-8'><title>deepspark visualize</title>"
        "<style>body{font-family:sans-serif;margin:2em}img{image-rendering:pixelated;"
        "max-width:100%}figure{margin:0 0 2em}</style></head><body>\n"
        f"<h1>Filters and feature maps</h1>\n{''.join(items)}</body></html>\n"
    )
