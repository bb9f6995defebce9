"""Pretrained networks as functions of images: feature extractors, and running any image
network over many image sources a chunk at a time.

``feature_extractor("mobilenet_v2", weights=...)`` is the network without its ImageNet head,
followed by global average pooling: one vector per image. ``layer="block_13_expand_relu"``
cuts the network at that layer instead (a 4-D feature map is global-average-pooled too, so the
result is always one vector per image). Like every deepspark image model it takes uint8 pixels;
the network's ``preprocess_input`` is inside it.

``image_outputs`` decodes image sources (bytes or paths) and runs a network on them in chunks
of about a million pixels, yielding each chunk's output for the images that decoded and the
reasons for those that did not; callers keep what they need of each chunk (a top-k, a vector)
so that a large input never holds every decoded image or every 1000-class output at once.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np

from deepspark._backend import import_keras
from deepspark.data.image_inputs import chunk_rows, chunks, decode_rows
from deepspark.data.schema import ImageSpec
from deepspark.errors import UserInputError

keras = import_keras()

_SHOWN_LAYERS = 6


def feature_extractor(
    name: str,
    *,
    weights: str | Path | None = "imagenet",
    layer: str | None = None,
    image_size: int | tuple[int, int] | None = None,
    base_options: dict[str, Any] | None = None,
) -> keras.Model:
    """A keras.applications network that maps uint8 images to one feature vector each.

    Args:
        name: The network (any spelling of a keras.applications class).
        weights: ``"imagenet"``, a local weights file (without the top), or ``None``.
        layer: A layer of the network, by name; default its last block. A 4-D output
            (a feature map) is global-average-pooled to one value per channel.
        image_size: ``(height, width)`` or one side; default the network's native size.
        base_options: Constructor options, e.g. ``{"alpha": 0.35}`` for MobileNetV2.

    Returns:
        A model ``image`` (uint8, NHWC) -> ``(rows, features)`` float32.

    Raises:
        UserInputError: Unknown network or layer (the message lists some valid names),
            missing weights, or options the network rejects.
    """
    from deepspark.models.applications import build_pretrained, pretrained_network

    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    pretrained = build_pretrained(
        name,
        weights=weights,
        include_top=False,
        image_size=image_size,
        base_options=base_options,
    )
    network = pretrained_network(pretrained)
    body = network if layer is None else _cut(network, layer)
    tensor = pretrained.get_layer("preprocess")(pretrained.input)
    tensor = body(tensor)
    if len(tensor.shape) == 4:
        tensor = keras.layers.GlobalAveragePooling2D(name="pool")(tensor)
    elif len(tensor.shape) != 2:
        raise UserInputError(
            f"Layer {layer!r} gives a {len(tensor.shape) - 1}-D output per image; choose a "
            f"layer with a feature map or a vector output. Received: layer={layer!r}"
        )
    suffix = "features" if layer is None else f"{layer}_features"
    return keras.Model(pretrained.input, tensor, name=f"{pretrained.name}_{suffix}")


def _cut(network: keras.Model, layer: str) -> keras.Model:
    names = [item.name for item in network.layers]
    if layer not in names:
        close = difflib.get_close_matches(layer, names, n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise UserInputError(
            f"Layer not found in {network.name}; {hint}its {len(names)} layers end with "
            f"{', '.join(names[-_SHOWN_LAYERS:])}. Received: layer={layer!r}"
        )
    output = network.get_layer(layer).output
    return keras.Model(network.input, output, name=f"{network.name}_to_{layer}")


@dataclasses.dataclass(frozen=True)
class ImageChunk:
    """One chunk of images run through a network.

    Attributes:
        rows: The chunk's positions in the input.
        output: The network's output for the images that decoded, in input order.
        ok: One flag per row of the chunk: decoded (and in ``output``) or not.
        errors: ``(position in the chunk, reason)`` for every row that did not decode.
    """

    rows: slice
    output: np.ndarray
    ok: np.ndarray
    errors: list[tuple[int, str]]


def image_outputs(
    network: keras.Model,
    sources: Sequence,
    spec: ImageSpec,
    *,
    progress: Callable[[int], None] | None = None,
) -> Iterator[ImageChunk]:
    """Decode ``sources`` to ``spec`` and run ``network`` on them, a chunk at a time.

    Args:
        network: A model taking uint8 images of ``spec``'s size.
        sources: Encoded bytes, paths (``file:`` URIs too) or ``None`` per row.
        spec: Size and channels to decode to.
        progress: Called with the number of rows of each chunk once it is done.

    Yields:
        ``ImageChunk`` per chunk; a bad image (missing, corrupt, not an image) is reported in
        ``errors``, never raised.
    """
    from deepspark.runtime import forward

    rows = chunk_rows(spec)
    for part in chunks(len(sources), rows):
        decoded = decode_rows([local_source(value) for value in sources[part]], spec)
        output = forward(network, decoded.images, batch_rows=rows)
        yield ImageChunk(part, output, decoded.ok, decoded.errors)
        if progress is not None:
            progress(part.stop - part.start)


def local_source(value: Any) -> Any:
    """A ``file:`` URI (as Spark's ``binaryFile`` names files) as a local path; anything else
    (bytes, a path, ``None``) as it is."""
    if isinstance(value, str) and value.startswith("file:"):
        return unquote(urlparse(value).path)
    if isinstance(value, float) and np.isnan(value):
        return None
    return value


def top_k(probabilities: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest values of each row, largest first: ``(indices, values)``."""
    k = min(k, probabilities.shape[1])
    if len(probabilities) == 0:
        return np.zeros((0, k), dtype=np.int64), np.zeros((0, k), dtype=probabilities.dtype)
    candidates = np.argpartition(-probabilities, k - 1, axis=1)[:, :k]
    values = np.take_along_axis(probabilities, candidates, axis=1)
    order = np.argsort(-values, axis=1, kind="stable")
    return np.take_along_axis(candidates, order, axis=1), np.take_along_axis(values, order, axis=1)


def feature_rows(
    network: keras.Model,
    sources: Sequence,
    spec: ImageSpec,
    *,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[np.ndarray | None], list[str | None]]:
    """One float32 vector per source (``None`` for a bad image) and one reason per source
    (``None`` for a good one), in input order."""
    vectors: list[np.ndarray | None] = [None] * len(sources)
    errors: list[str | None] = [None] * len(sources)
    for chunk in image_outputs(network, sources, spec, progress=progress):
        output = np.asarray(chunk.output, dtype=np.float32)
        for vector, position in zip(output, np.flatnonzero(chunk.ok), strict=True):
            vectors[chunk.rows.start + position] = vector
        for position, reason in chunk.errors:
            errors[chunk.rows.start + position] = reason
    return vectors, errors
