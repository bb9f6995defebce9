"""Image decoding on the host: bytes or paths -> uint8 arrays of one size, bad files counted.

Keras on JAX or torch cannot decode inside the graph, so decoding happens here, once, the same
way for training, scoring and explanations:

- EXIF orientation is applied (a phone photo taken upright is upright);
- every mode becomes RGB (or L for one channel): grayscale, palette, CMYK, 16-bit; transparent
  pixels are composited on white; an animated GIF gives its first frame;
- the image is resized to the model's size (bilinear, like Keras' ``image_dataset_from_directory``
  without cropping);
- an image of more pixels than ``PIL.Image.MAX_IMAGE_PIXELS`` is refused from its header, before
  decoding (a decompression bomb: a small file declaring billions of pixels).

A URI (``s3://bucket/photos/a.jpg``) is read through its filesystem, so an image listed on one
host decodes on any other. A corrupt, truncated, unreadable or non-image file raises
``ImageDecodeError`` from ``decode_image``; ``decode_images`` (the batch form, decoding in
threads: Pillow releases the GIL) counts such files, reports each with its reason and leaves
them out, unless ``on_bad="fail"``.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np

from deepspark.data._source_files import first_line
from deepspark.data.image_sources import is_remote, read_image_bytes
from deepspark.errors import DataError, UserInputError

ON_BAD_CHOICES = ("skip", "fail")
ImageSource = bytes | str | Path


class ImageDecodeError(DataError):
    """One image could not be decoded; the message says why."""


@dataclasses.dataclass(frozen=True)
class DecodedImages:
    """The result of decoding a batch.

    Attributes:
        images: ``(decoded, height, width, channels)`` uint8, in input order, bad ones left out.
        ok: One flag per input: decoded or not.
        errors: ``(input index, reason)`` for every input that was not decoded.
    """

    images: np.ndarray
    ok: np.ndarray
    errors: list[tuple[int, str]]

    @property
    def bad_count(self) -> int:
        return len(self.errors)


def decode_image(source: ImageSource, *, size: tuple[int, int], channels: int = 3) -> np.ndarray:
    """Decode one image to a ``(height, width, channels)`` uint8 array.

    Args:
        source: Encoded bytes, a path, or a URI (``s3://bucket/key``, ``file:///...``).
        size: ``(height, width)`` of the result.
        channels: 3 (RGB) or 1 (grayscale).

    Raises:
        ImageDecodeError: The file is missing, not an image, corrupt or truncated.
    """
    _check_shape(size, channels)
    if source is None:
        raise ImageDecodeError("no image (the value is empty)")
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with _open(source, Image) as image:
            _check_pixels(image, Image)  # from the header, before a pixel is decoded
            image.seek(0)  # the first frame of an animation
            oriented = ImageOps.exif_transpose(image)
            converted = _convert(oriented, channels, Image)
            resized = converted.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            array = np.asarray(resized, dtype=np.uint8)
    except ImageDecodeError:
        raise
    except FileNotFoundError as error:
        raise ImageDecodeError(f"file not found: {error.filename}") from error
    except UnidentifiedImageError as error:
        raise ImageDecodeError("not an image (unknown or unsupported format)") from error
    except Image.DecompressionBombError as error:  # Pillow's own refusal, at twice the limit
        raise ImageDecodeError(f"too many pixels ({error})") from error
    except (OSError, ValueError, SyntaxError) as error:
        raise ImageDecodeError(f"corrupt or truncated image ({error})") from error
    return array.reshape(size[0], size[1], channels)


def decode_images(
    sources: Sequence[ImageSource],
    *,
    size: tuple[int, int],
    channels: int = 3,
    on_bad: str = "skip",
    workers: int | None = None,
) -> DecodedImages:
    """Decode many images in parallel threads.

    Args:
        sources: Encoded bytes, paths or URIs (``s3://bucket/key``: read through its
            filesystem).
        size: ``(height, width)`` of every result.
        channels: 3 (RGB) or 1 (grayscale).
        on_bad: ``skip`` (count and report bad files) or ``fail`` (raise at the first one).
        workers: Decoding threads; default the machine's cores (at least
            ``REMOTE_READ_THREADS`` for URIs, which wait on the network).

    Returns:
        ``DecodedImages`` with the good images in input order and the reasons for the bad ones.

    Raises:
        ImageDecodeError: With ``on_bad="fail"``, naming the first bad input.
        UserInputError: For an invalid ``size``, ``channels`` or ``on_bad``.
    """
    _check_shape(size, channels)
    if on_bad not in ON_BAD_CHOICES:
        raise UserInputError(
            f"Invalid --on-bad-image: use one of {', '.join(ON_BAD_CHOICES)}. "
            f"Received: on_bad_image={on_bad!r}"
        )

    def decode_one(source):
        try:
            return decode_image(source, size=size, channels=channels), None
        except ImageDecodeError as error:
            return None, str(error)

    sources = list(sources)
    results = _decode_all(decode_one, sources, workers or _default_workers(sources))
    errors = [(index, reason) for index, (_, reason) in enumerate(results) if reason is not None]
    if errors and on_bad == "fail":
        index, reason = errors[0]
        raise ImageDecodeError(
            f"Bad image {_describe(sources[index])}: {reason}; fix or remove it, or pass "
            f"--on-bad-image skip to count and skip bad images. Received: on_bad_image='fail'"
        )
    good = [array for array, _ in results if array is not None]
    images = np.stack(good) if good else np.zeros((0, size[0], size[1], channels), dtype=np.uint8)
    ok = np.array([reason is None for _, reason in results], dtype=bool)
    return DecodedImages(images=images, ok=ok, errors=errors)


# Reading from an object store waits on the network, not the cores: more threads than cores.
REMOTE_READ_THREADS = 16


def _default_workers(sources: list) -> int:
    cores = os.cpu_count() or 1
    remote = any(isinstance(source, str) and is_remote(source) for source in sources[:1])
    return max(cores, REMOTE_READ_THREADS) if remote else cores


# Decoding in threads pays when an image takes at least this long: Pillow's codecs release the
# GIL, the per-image Python work does not. Measured on 2 cores: photos resized to 160 px (~3 ms
# each) 626 images/s in threads vs 333 alone; CIFAR's 32 px JPEGs (~0.14 ms) 4,731 vs 7,157.
THREADED_DECODE_MIN_SECONDS = 0.0005
_PROBE_IMAGES = 16


def _decode_all(decode_one, sources: list, workers: int) -> list:
    """``decode_one`` over ``sources`` in order: the first few here, timed; the rest here too
    when images decode fast, else in ``workers`` threads, a chunk of images per task."""
    probe = min(_PROBE_IMAGES, len(sources))
    started = time.perf_counter()
    results = [decode_one(source) for source in sources[:probe]]
    per_image = (time.perf_counter() - started) / max(1, probe)
    rest = sources[probe:]
    if workers == 1 or len(rest) < 2 or per_image < THREADED_DECODE_MIN_SECONDS:
        return results + [decode_one(source) for source in rest]
    size = max(1, math.ceil(len(rest) / (workers * 8)))
    chunks = [rest[start : start + size] for start in range(0, len(rest), size)]
    with ThreadPoolExecutor(max_workers=min(workers, len(chunks))) as pool:
        for decoded in pool.map(lambda chunk: [decode_one(item) for item in chunk], chunks):
            results.extend(decoded)
    return results


def _check_pixels(image, image_module) -> None:
    """Refuse an image of more than ``PIL.Image.MAX_IMAGE_PIXELS`` pixels (about 89 million
    by default; ``None`` lifts the limit) before decoding it. Pillow itself only warns below
    twice that, and decoding a small file that declares a huge size (a decompression bomb)
    would take ``width * height * channels`` bytes and seconds of a server's time."""
    limit = image_module.MAX_IMAGE_PIXELS
    width, height = image.size
    if limit and width * height > limit:
        raise ImageDecodeError(
            f"too many pixels ({width}x{height} = {width * height:,}, over the limit of "
            f"{limit:,}: a decompression bomb, or a scan to shrink first; raise "
            f"PIL.Image.MAX_IMAGE_PIXELS to decode it)"
        )


def _open(source: ImageSource, image_module):
    """Open an image from bytes, a local path, or a URI read through its filesystem
    (``s3://bucket/key``: any host can decode it)."""
    if isinstance(source, bytes | bytearray | memoryview):
        return image_module.open(io.BytesIO(bytes(source)))
    text = str(source)
    if not is_remote(text):
        if text.startswith("file:"):  # Spark and Hadoop name local files as URIs
            text = unquote(urlparse(text).path)
        return image_module.open(Path(text))
    try:
        data = read_image_bytes(text)
    except FileNotFoundError:
        raise
    except (OSError, DataError) as error:
        raise ImageDecodeError(f"cannot read {text} ({first_line(error)})") from error
    return image_module.open(io.BytesIO(data))


def _convert(image, channels: int, image_module):
    """Any mode -> RGB (or L); transparency composited on white."""
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = image_module.new("RGBA", image.size, (255, 255, 255, 255))
        image = image_module.alpha_composite(background, image.convert("RGBA"))
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grayscale: scale to 8 bits instead of clipping at 255.
        values = np.asarray(image, dtype=np.float64)
        peak = values.max() if values.size and values.max() > 255 else 255.0
        image = image_module.fromarray((values / peak * 255.0).round().astype(np.uint8), "L")
    return image.convert("RGB" if channels == 3 else "L")


def _check_shape(size: tuple[int, int], channels: int) -> None:
    if len(size) != 2 or any(int(side) <= 0 for side in size):
        raise UserInputError(
            f"Invalid --image-size: give a positive height and width such as 224. "
            f"Received: image_size={tuple(size)!r}"
        )
    if channels not in (1, 3):
        raise UserInputError(
            f"Invalid channels: images are decoded to 3 (RGB) or 1 (grayscale) channels. "
            f"Received: channels={channels!r}"
        )


def _describe(source: ImageSource) -> str:
    if isinstance(source, bytes | bytearray | memoryview):
        return f"({len(source)} bytes)"
    return repr(str(source))


def image_dimensions(source: ImageSource) -> tuple[int, int] | None:
    """``(height, width)`` of an image as stored (after EXIF rotation), reading only its
    header; ``None`` when it does not open."""
    from PIL import Image, UnidentifiedImageError

    try:
        with _open(source, Image) as image:
            width, height = image.size
            orientation = image.getexif().get(0x0112, 1)
    except (OSError, ValueError, SyntaxError, UnidentifiedImageError):
        return None
    return (width, height) if orientation in (5, 6, 7, 8) else (height, width)
