"""Lesson ``convolutions``: a small filter slides across the image.

Classic 3x3 kernels (edges, blur, sharpen) applied to a grayscale photo; one kernel window
stepping over a 7x7 input with stride 2 (CS231n's example), each output the dot product of the
kernel with the pixels under it; the output-size arithmetic ``(W - F + 2P) / S + 1`` for several
paddings and strides, checked against the shapes :func:`conv2d` really returns; and why a
convolution needs a tiny fraction of a dense layer's weights.

Without an image the lesson draws a synthetic scene (shapes, stripes, a gradient and a little
noise), so it runs offline; ``run(output_dir, image="photo.jpg")`` uses a real photo.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from deepspark.fundamentals._plotting import new_figure, save_figure
from deepspark.fundamentals.convolutions import (
    CLASSIC_KERNELS,
    conv2d,
    conv_output_size,
    conv_parameter_count,
    dense_parameter_count,
)

LONGEST_SIDE = 256
WINDOW_INPUT, WINDOW_KERNEL, WINDOW_STRIDE = 7, "sobel_x", 2
WINDOW_POSITIONS = ((0, 0), (0, 1), (2, 2))
# (input size W, kernel F, padding: "valid" / "same" / zero pixels P, stride S)
SIZE_CASES = (
    (32, 3, "valid", 1),
    (32, 3, "same", 1),
    (32, 5, 2, 1),
    (32, 3, "same", 2),
    (32, 3, "valid", 2),
    (7, 3, 0, 1),
    (7, 3, 0, 2),
    (7, 3, 1, 3),
    (224, 7, 3, 2),
)
IMAGE_SIDE, IMAGE_CHANNELS, FILTERS = 32, 3, 32


def run(output_dir: Path, image: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Slide classic kernels over a photo, count output sizes and parameters; write four plots.

    Args:
        output_dir: Folder for the PNG files (exists).
        image: A photo to use (any format Pillow reads), or None for a synthetic scene.
    """
    photo = _grayscale_photo(image)
    responses = _apply_kernels(photo)
    figures: dict[str, Any] = {
        "image": "synthetic scene" if image is None else str(image),
        "image_height": int(photo.shape[0]),
        "image_width": int(photo.shape[1]),
        **_kernel_figures(photo, responses),
        **_window_figures(photo),
        **_size_figures(),
        **_parameter_figures(),
    }
    figures["plots"] = [
        _plot_kernels(output_dir, photo, responses),
        _plot_window(output_dir, figures),
        _plot_sizes(output_dir),
        _plot_parameters(output_dir, figures),
    ]
    return figures


def _grayscale_photo(image: str | os.PathLike[str] | None) -> np.ndarray:
    """``(height, width)`` floats in [0, 1], the longest side ``LONGEST_SIDE`` pixels."""
    if image is None:
        return _synthetic_scene()
    from PIL import Image

    from deepspark.data.image_decode import ImageDecodeError, decode_image

    try:
        with Image.open(image) as opened:
            width, height = opened.size
    except (OSError, ValueError) as error:
        raise ImageDecodeError(
            f"Cannot read the lesson's image ({error}); give a photo Pillow can open. "
            f"Received: image={str(image)!r}"
        ) from error
    scale = LONGEST_SIDE / max(width, height)
    size = (max(round(height * scale), 8), max(round(width * scale), 8))
    return decode_image(image, size=size, channels=1)[..., 0] / 255.0


def _synthetic_scene(height: int = 120, width: int = 160) -> np.ndarray:
    """A seeded scene with sharp edges in every direction, a smooth gradient and mild noise."""
    rows, columns = np.mgrid[0:height, 0:width]
    scene = 0.2 + 0.3 * columns / width  # a gradient: edge kernels barely see it
    scene[20:70, 15:60] = 0.9  # a bright rectangle: vertical and horizontal edges
    scene[(rows - 75) ** 2 + (columns - 110) ** 2 < 30**2] = 0.05  # a dark disc: every direction
    stripes = (rows > 95) & (columns < 70)
    scene[stripes] = 0.5 + 0.4 * np.sign(np.sin((rows[stripes] + columns[stripes]) / 3.0))
    noise = np.random.default_rng(0).normal(0.0, 0.02, size=scene.shape)
    return np.clip(scene + noise, 0.0, 1.0)


def _apply_kernels(photo: np.ndarray) -> dict[str, np.ndarray]:
    """Every classic kernel as one filter of a single Conv2D (``same`` padding) over the photo."""
    kernels = np.stack(list(CLASSIC_KERNELS.values()), axis=-1)[:, :, None, :]
    outputs = conv2d(photo[None, :, :, None], kernels, padding="same")[0]
    return {name: outputs[..., index] for index, name in enumerate(CLASSIC_KERNELS)}


def _neighbour_difference(values: np.ndarray) -> float:
    """Mean absolute difference of horizontally adjacent pixels (away from the zero border)."""
    inner = values[2:-2, 2:-2]
    return float(np.abs(np.diff(inner, axis=1)).mean())


def _kernel_figures(photo: np.ndarray, responses: dict[str, np.ndarray]) -> dict[str, Any]:
    before = _neighbour_difference(photo)
    return {
        "kernels": list(CLASSIC_KERNELS),
        "kernel_sums": [float(kernel.sum()) for kernel in CLASSIC_KERNELS.values()],
        "identity_max_abs_change": float(np.abs(responses["identity"] - photo).max()),
        "mean_abs_response": [float(np.abs(values).mean()) for values in responses.values()],
        # Below 1: the kernel smooths neighbouring pixels together; above 1: it sharpens.
        "neighbour_difference_ratio": [
            _neighbour_difference(values) / before for values in responses.values()
        ],
    }


def _window_input(photo: np.ndarray) -> np.ndarray:
    """The photo averaged down to ``WINDOW_INPUT`` squared cells, as integers 0-9 to read easily."""
    rows = np.array_split(np.arange(photo.shape[0]), WINDOW_INPUT)
    columns = np.array_split(np.arange(photo.shape[1]), WINDOW_INPUT)
    cells = np.array([[photo[np.ix_(r, c)].mean() for c in columns] for r in rows])
    return np.round(cells * 9.0)


def _window_figures(photo: np.ndarray) -> dict[str, Any]:
    cells = _window_input(photo)
    kernel = CLASSIC_KERNELS[WINDOW_KERNEL]
    output = conv2d(cells[None, :, :, None], kernel[:, :, None, None], stride=WINDOW_STRIDE)
    dot_products = []
    for row, column in WINDOW_POSITIONS:
        top, left = row * WINDOW_STRIDE, column * WINDOW_STRIDE
        dot_products.append(float(np.sum(cells[top : top + 3, left : left + 3] * kernel)))
    computed = [float(output[0, row, column, 0]) for row, column in WINDOW_POSITIONS]
    return {
        "window_input_size": WINDOW_INPUT,
        "window_kernel": WINDOW_KERNEL,
        "window_stride": WINDOW_STRIDE,
        "window_output_size": int(output.shape[1]),
        "window_input": cells.astype(int).tolist(),
        "window_positions": [list(position) for position in WINDOW_POSITIONS],
        "window_dot_products": dot_products,
        "window_dot_products_match_conv2d": bool(np.allclose(dot_products, computed)),
        "window_output": output[0, :, :, 0].tolist(),
    }


def _size_case_label(size: int, kernel: int, padding: str | int, stride: int) -> str:
    padded = f"P={padding}" if isinstance(padding, int) else padding
    return f"W={size} F={kernel} {padded} S={stride}"


def _size_figures() -> dict[str, Any]:
    formula, measured = [], []
    for size, kernel, padding, stride in SIZE_CASES:
        formula.append(conv_output_size(size, kernel, stride=stride, padding=padding))
        shape = conv2d(np.zeros((1, size, 1, 1)), np.zeros((kernel, 1, 1, 1)),
                       stride=(stride, 1), padding=padding).shape  # fmt: skip
        measured.append(int(shape[1]))
    return {
        "output_size_cases": [_size_case_label(*case) for case in SIZE_CASES],
        "output_sizes": formula,
        "output_sizes_match_conv2d": formula == measured,
    }


def _parameter_figures() -> dict[str, Any]:
    inputs = IMAGE_SIDE * IMAGE_SIDE * IMAGE_CHANNELS
    conv = conv_parameter_count(3, in_channels=IMAGE_CHANNELS, filters=FILTERS)
    dense = dense_parameter_count(inputs, FILTERS)
    # A dense layer giving the conv layer's whole output: one unit per output value.
    same_output = dense_parameter_count(inputs, IMAGE_SIDE * IMAGE_SIDE * FILTERS)
    return {
        "conv_3x3x3_to_32_parameters": conv,
        "dense_3072_to_32_parameters": dense,
        "dense_to_conv_parameter_ratio": dense / conv,
        "dense_same_output_parameters": same_output,
        "dense_same_output_to_conv_parameter_ratio": same_output / conv,
    }


def _plot_kernels(output_dir: Path, photo: np.ndarray, responses: dict[str, np.ndarray]) -> str:
    panels = {"input": photo, **responses}
    columns = 3
    rows = -(-len(panels) // columns)
    figure, axes = new_figure(rows=rows, columns=columns, size=(3.2 * columns, 2.8 * rows))
    for axis in axes.flat:
        axis.set_axis_off()
    for axis, (name, values) in zip(axes.flat, panels.items(), strict=False):
        if name == "input" or CLASSIC_KERNELS[name].sum() > 0:
            axis.imshow(values, cmap="gray", vmin=0.0, vmax=1.0)
        else:  # an edge detector: signed, zero on flat areas; the zero border is not the scale
            limit = float(np.percentile(np.abs(values), 99)) or 1.0
            axis.imshow(values, cmap="RdBu_r", vmin=-limit, vmax=limit)
        axis.set_title(name if name == "input" else f"{name} (3x3, same)")
    return save_figure(figure, output_dir, "convolutions_kernels.png")


def _draw_grid(axis, values: np.ndarray, title: str, boxes=(), box_size: int = 1) -> None:
    """Numbers on a grey grid, with red squares of ``box_size`` at the ``(top, left)`` boxes."""
    from matplotlib.patches import Rectangle

    axis.imshow(values, cmap="Greys_r", vmin=min(float(values.min()), 0.0))
    for (row, column), value in np.ndenumerate(values):
        axis.text(column, row, f"{value:g}", ha="center", va="center", color="tab:orange")
    for top, left in boxes:
        corner = (left - 0.5, top - 0.5)
        axis.add_patch(
            Rectangle(corner, box_size, box_size, fill=False, edgecolor="tab:red", linewidth=3)
        )
    axis.set_xticks([])
    axis.set_yticks([])
    axis.set_title(title, fontsize=9)


def _plot_window(output_dir: Path, figures: dict[str, Any]) -> str:
    cells = np.array(figures["window_input"], dtype=float)
    output = np.array(figures["window_output"])
    positions = [tuple(position) for position in figures["window_positions"]]
    figure, axes = new_figure(rows=1, columns=len(positions) + 2, size=(15.0, 3.4))
    _draw_grid(axes[0][0], CLASSIC_KERNELS[WINDOW_KERNEL], f"kernel: {WINDOW_KERNEL}")
    for axis, (row, column), value in zip(
        axes[0][1:], positions, figures["window_dot_products"], strict=False
    ):
        window = (row * WINDOW_STRIDE, column * WINDOW_STRIDE)
        title = f"output ({row}, {column}): sum(window * kernel) = {value:g}"
        _draw_grid(axis, cells, title, boxes=[window], box_size=3)
    title = f"stride {WINDOW_STRIDE}: {WINDOW_INPUT}x{WINDOW_INPUT} -> {output.shape[0]}x" + str(
        output.shape[1]
    )
    _draw_grid(axes[0][-1], output, title, boxes=positions)
    return save_figure(figure, output_dir, "convolutions_sliding_window.png")


def _plot_sizes(output_dir: Path) -> str:
    figure, axis = new_figure(size=(6.5, 3.6))
    axis.set_axis_off()
    rows = [
        [str(size), str(kernel), str(padding), str(stride),
         str(conv_output_size(size, kernel, stride=stride, padding=padding))]
        for size, kernel, padding, stride in SIZE_CASES
    ]  # fmt: skip
    table = axis.table(
        cellText=rows,
        colLabels=["input W", "kernel F", "padding", "stride S", "output"],
        loc="center",
    )
    table.scale(1.0, 1.3)
    axis.set_title("output = floor((W - F + 2P) / S) + 1;  'same': ceil(W / S)")
    return save_figure(figure, output_dir, "convolutions_output_sizes.png")


def _plot_parameters(output_dir: Path, figures: dict[str, Any]) -> str:
    names = ["Conv2D 3x3, 3 -> 32", "Dense 3072 -> 32", "Dense 3072 -> 32x32x32"]
    counts = [
        figures["conv_3x3x3_to_32_parameters"],
        figures["dense_3072_to_32_parameters"],
        figures["dense_same_output_parameters"],
    ]
    figure, axis = new_figure(size=(7.0, 3.6))
    bars = axis.barh(names, counts, color=["tab:green", "tab:orange", "tab:red"])
    axis.bar_label(bars, labels=[f"{count:,}" for count in counts], padding=3)
    axis.set_xscale("log")
    axis.set_xlim(100, max(counts) * 50)
    axis.set_xlabel("parameters (log scale), on a 32x32 RGB image")
    axis.invert_yaxis()
    return save_figure(figure, output_dir, "convolutions_parameters.png")
