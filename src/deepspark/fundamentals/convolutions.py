"""Convolution and pooling, in NumPy: the filter that slides across the image.

Arrays are NHWC (``(batch, height, width, channels)``) and kernels ``(kernel_height,
kernel_width, in_channels, filters)``, the layout of ``keras.layers.Conv2D``. Like every deep
learning library, :func:`conv2d` computes a cross-correlation (the kernel is not flipped): each
output value is the dot product of the kernel with the window of the input under it, plus a bias.

Padding follows Keras: ``"valid"`` adds none, ``"same"`` adds just enough zeros for an output of
``ceil(size / stride)``, the odd pixel going to the bottom / right (TensorFlow's rule, which Keras
uses on every backend). :func:`conv2d` also takes an explicit number of zero pixels per side, the
``P`` of CS231n's output-size formula ``(W - F + 2P) / S + 1``.

Example::

    import numpy as np
    from deepspark.fundamentals import CLASSIC_KERNELS, conv2d, conv_output_size

    image = np.random.default_rng(0).random((1, 32, 32, 1))
    edges = CLASSIC_KERNELS["sobel_x"][:, :, None, None]    # (3, 3, 1, 1)
    conv2d(image, edges, padding="same").shape               # (1, 32, 32, 1)
    conv_output_size(7, 3, stride=2)                          # 3
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from deepspark.errors import UserInputError

Array = np.ndarray
PADDINGS = ("valid", "same")

#: Classic 3x3 image kernels, for one-channel images (``[:, :, None, None]`` makes a Conv2D
#: kernel of them). Blurs sum to 1 (brightness kept); edge detectors sum to 0 (flat areas -> 0).
CLASSIC_KERNELS: dict[str, Array] = {
    "identity": np.array([[0, 0, 0], [0, 1, 0], [0, 0, 0]], dtype=float),
    "edge": np.array([[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]], dtype=float),
    "laplacian": np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=float),
    "sobel_x": np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=float),
    "sobel_y": np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]], dtype=float),
    "box_blur": np.full((3, 3), 1.0 / 9.0),
    "gaussian_blur": np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=float) / 16.0,
    "sharpen": np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], dtype=float),
}


def _positive(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value <= 0:
        raise UserInputError(f"{name} must be a positive integer. Received: {name}={value!r}")
    return int(value)


def _pair(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    """``3`` -> ``(3, 3)``; checks both are positive integers."""
    pair = tuple(value) if isinstance(value, tuple | list) else (value, value)
    if len(pair) != 2:
        raise UserInputError(
            f"{name} must be a positive integer or a pair of them. Received: {name}={value!r}"
        )
    return _positive(pair[0], name), _positive(pair[1], name)


def _check_padding(padding: str | int) -> None:
    if isinstance(padding, str) and padding in PADDINGS:
        return
    if isinstance(padding, int | np.integer) and not isinstance(padding, bool) and padding >= 0:
        return
    raise UserInputError(
        f"padding must be 'valid', 'same' or a number of zero pixels (>= 0). "
        f"Received: padding={padding!r}"
    )


def _padding_amounts(size: int, kernel: int, stride: int, padding: str | int) -> tuple[int, int]:
    """Zero pixels before and after one axis of the input."""
    if padding == "valid":
        return 0, 0
    if padding == "same":
        total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
        return total // 2, total - total // 2
    return int(padding), int(padding)


def _check_images(images: Array, name: str = "images") -> Array:
    images = np.asarray(images, dtype=float)
    if images.ndim != 4:
        raise UserInputError(
            f"{name} must be 4-D (batch, height, width, channels); add the batch axis with "
            f"x[None] or the channel axis with x[..., None]. Received: {name}.shape={images.shape}"
        )
    return images


def conv_output_size(
    size: int, kernel: int, *, stride: int = 1, padding: str | int = "valid"
) -> int:
    """Output length along one axis: ``floor((W - F + 2P) / S) + 1``.

    With ``padding="same"`` that is ``ceil(W / S)``; with ``"valid"``, ``P = 0``. Keras floors a
    fraction (the last input pixels that do not fill a window are dropped); CS231n calls such a
    setting invalid.

    Args:
        size: Input length ``W``.
        kernel: Kernel (or pool) length ``F``.
        stride: Step ``S`` between windows.
        padding: ``"valid"``, ``"same"`` or zero pixels ``P`` on each side.

    Raises:
        UserInputError: For non-positive sizes, or a kernel larger than the padded input.

    Example::

        conv_output_size(32, 5, padding=2)   # 32
        conv_output_size(7, 3, stride=2)     # 3
    """
    size, kernel = _positive(size, "size"), _positive(kernel, "kernel")
    stride = _positive(stride, "stride")
    _check_padding(padding)
    if padding == "same":
        return math.ceil(size / stride)
    before, after = _padding_amounts(size, kernel, stride, padding)
    if kernel > size + before + after:
        raise UserInputError(
            f"The kernel is larger than the padded input, so no window fits; use a smaller "
            f"kernel or more padding. Received: size={size}, kernel={kernel}, padding={padding!r}"
        )
    return (size + before + after - kernel) // stride + 1


def conv_parameter_count(
    kernel: int | tuple[int, int], *, in_channels: int, filters: int, bias: bool = True
) -> int:
    """Weights of a Conv2D layer: ``kh * kw * in_channels * filters`` (+ ``filters`` biases).

    Independent of the image size: the same small kernel is shared by every position.
    """
    height, width = _pair(kernel, "kernel")
    return height * width * int(in_channels) * int(filters) + (int(filters) if bias else 0)


def dense_parameter_count(inputs: int, units: int, *, bias: bool = True) -> int:
    """Weights of a Dense layer: ``inputs * units`` (+ ``units`` biases)."""
    return int(inputs) * int(units) + (int(units) if bias else 0)


def _pad(images: Array, kernel: tuple[int, int], strides, padding, fill: float) -> Array:
    rows = _padding_amounts(images.shape[1], kernel[0], strides[0], padding)
    columns = _padding_amounts(images.shape[2], kernel[1], strides[1], padding)
    for axis, length, (before, after) in ((1, kernel[0], rows), (2, kernel[1], columns)):
        if length > images.shape[axis] + before + after:
            raise UserInputError(
                f"The kernel is larger than the padded input, so no window fits; use a smaller "
                f"kernel or more padding. Received: input shape={images.shape}, "
                f"kernel={kernel}, padding={padding!r}"
            )
    return np.pad(images, ((0, 0), rows, columns, (0, 0)), constant_values=fill)


def _windows(images: Array, kernel: tuple[int, int], strides, padding, fill: float) -> Array:
    """Every window the kernel visits: ``(batch, out_h, out_w, channels, kh, kw)`` (a view)."""
    padded = _pad(images, kernel, strides, padding, fill)
    windows = sliding_window_view(padded, kernel, axis=(1, 2))
    return windows[:, :: strides[0], :: strides[1]]


def conv2d(
    images: Array,
    kernels: Array,
    *,
    bias: Array | None = None,
    stride: int | tuple[int, int] = 1,
    padding: str | int = "valid",
) -> Array:
    """2-D convolution (cross-correlation) of NHWC images, as ``keras.layers.Conv2D`` computes it.

    Args:
        images: ``(batch, height, width, in_channels)``.
        kernels: ``(kernel_height, kernel_width, in_channels, filters)``.
        bias: ``(filters,)`` added to every output position, or None.
        stride: Step between windows, one integer or ``(rows, columns)``.
        padding: ``"valid"``, ``"same"`` (Keras' rule) or zero pixels on each side.

    Returns:
        ``(batch, out_height, out_width, filters)``; see :func:`conv_output_size`.

    Raises:
        UserInputError: For shapes that do not fit together or an unknown padding.
    """
    images = _check_images(images)
    kernels = np.asarray(kernels, dtype=float)
    if kernels.ndim != 4 or kernels.shape[2] != images.shape[3]:
        raise UserInputError(
            f"kernels must be (kernel_height, kernel_width, in_channels, filters) with "
            f"in_channels equal to the images' channels. Received: kernels.shape={kernels.shape}, "
            f"images.shape={images.shape}"
        )
    _check_padding(padding)
    strides = _pair(stride, "stride")
    windows = _windows(images, kernels.shape[:2], strides, padding, fill=0.0)
    outputs = np.einsum("nhwcij,ijcf->nhwf", windows, kernels, optimize=True)
    if bias is not None:
        outputs = outputs + np.asarray(bias, dtype=float).reshape(-1)
    return outputs


def _pool(images, pool_size, strides, padding, *, reduce: str) -> Array:
    images = _check_images(images)
    if padding not in PADDINGS:
        raise UserInputError(
            f"Pooling padding must be 'valid' or 'same'. Received: padding={padding!r}"
        )
    window = _pair(pool_size, "pool_size")
    steps = window if strides is None else _pair(strides, "strides")
    if reduce == "max":
        return _windows(images, window, steps, padding, fill=-np.inf).max(axis=(4, 5))
    # Keras averages over the real pixels only: padded positions count neither up nor down.
    totals = _windows(images, window, steps, padding, fill=0.0).sum(axis=(4, 5))
    ones = np.ones((1, *images.shape[1:3], 1))
    counts = _windows(ones, window, steps, padding, fill=0.0).sum(axis=(4, 5))
    return totals / counts


def max_pool2d(
    images: Array,
    pool_size: int | tuple[int, int] = 2,
    *,
    strides: int | tuple[int, int] | None = None,
    padding: str = "valid",
) -> Array:
    """Largest value of each window per channel, as ``keras.layers.MaxPooling2D``.

    Args:
        images: ``(batch, height, width, channels)``.
        pool_size: Window size, one integer or ``(rows, columns)``.
        strides: Step between windows; default ``pool_size`` (windows do not overlap).
        padding: ``"valid"`` or ``"same"`` (padded positions never win).

    Returns:
        ``(batch, out_height, out_width, channels)``.
    """
    return _pool(images, pool_size, strides, padding, reduce="max")


def average_pool2d(
    images: Array,
    pool_size: int | tuple[int, int] = 2,
    *,
    strides: int | tuple[int, int] | None = None,
    padding: str = "valid",
) -> Array:
    """Mean of each window per channel, as ``keras.layers.AveragePooling2D``.

    With ``padding="same"`` a window at the border averages only the pixels inside the image, as
    Keras does on JAX and TensorFlow (Keras 3.15 on torch replicates the edge pixels of an uneven
    border instead: keras-team/keras#18452). Arguments and result as :func:`max_pool2d`.
    """
    return _pool(images, pool_size, strides, padding, reduce="mean")
