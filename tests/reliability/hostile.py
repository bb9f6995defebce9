"""Hypothesis strategies for hostile input: cells, tables, images and request bodies.

Tables hold NaN, +-inf, numbers beyond float32, subnormals, empty strings, unicode (emoji,
right-to-left text, NUL), numeric-looking text, text in numeric columns, unseen categories,
all-null and constant columns. Images are valid files in every mode Pillow writes (RGB, L, P with
transparency, RGBA, CMYK, 16-bit, 1-bit), animated GIF and PNG, and broken ones: zero bytes,
truncated, bit-flipped, text named ``.jpg``, and decompression bombs (a PNG header declaring
billions of pixels over a few bytes of data).

Every strategy is deterministic under ``derandomize=True``; the models the tests attack are
trained once per process (``table_model`` / ``image_model``) and shared by the three modules.
"""

from __future__ import annotations

import functools
import io
import math
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

# Reproducible in CI, fast, and no per-example deadline (a first predict compiles).
FAST_SETTINGS = settings(
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- cells ---------------------------------------------------------------------------------

SPECIAL_FLOATS = [
    np.nan,
    np.inf,
    -np.inf,
    1e308,
    -1e308,
    3.5e38,  # just beyond float32
    1e-320,  # subnormal in float64, zero in float32
    5e-324,
    -0.0,
    0.0,
]
UNICODE = ["", " ", "ünïcødé", "😀🔥", "\u202eevil", "a\x00b", "中文", "\n", "NaN", "None"]
NUMERIC_TEXT = ["1", " 2.5 ", "-3e2", "inf", "-Infinity", "nan", "1e400"]

finite_floats = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
any_floats = st.one_of(finite_floats, st.sampled_from(SPECIAL_FLOATS), st.floats())
hostile_text = st.one_of(st.sampled_from(UNICODE), st.text(max_size=12))

#: A cell of a numeric column: mostly numbers, sometimes numeric text, a null or real text.
numeric_cell = st.one_of(
    any_floats,
    st.integers(-(2**70), 2**70),
    st.booleans(),
    st.none(),
    st.sampled_from(NUMERIC_TEXT),
)
#: A cell of a text column: known levels, unseen ones, unicode, numbers, nulls.
category_cell = st.one_of(
    st.sampled_from(["red", "green", "blue"]), hostile_text, any_floats, st.integers(), st.none()
)


def is_number(value) -> bool:
    """Whether ``deepspark`` reads ``value`` as a number (or a missing one) in a numeric
    column: the reference the tests count bad rows against. Text must spell a number; the
    text ``"nan"`` does not (CSV readers turn it into a null before deepspark sees it)."""
    if value is None or isinstance(value, bool | int | float | np.number):
        return True
    try:
        return not math.isnan(float(str(value).strip()))
    except ValueError:
        return False


# --- tables --------------------------------------------------------------------------------

NUMERIC_COLUMNS = ("x1", "x2")
TEXT_COLUMN = "color"


@st.composite
def scoring_tables(draw, *, max_rows: int = 12, text_in_numbers: bool = True) -> pd.DataFrame:
    """A table with the attacked model's columns (``x1``, ``x2`` numeric, ``color`` text), an
    extra column, and a shuffled non-default index."""
    rows = draw(st.integers(1, max_rows))
    cell = numeric_cell if text_in_numbers else st.one_of(any_floats, st.none())
    columns = {name: draw(st.lists(cell, min_size=rows, max_size=rows)) for name in NUMERIC_COLUMNS}
    columns[TEXT_COLUMN] = draw(st.lists(category_cell, min_size=rows, max_size=rows))
    columns["extra"] = draw(st.lists(hostile_text, min_size=rows, max_size=rows))
    frame = pd.DataFrame(
        {name: pd.Series(values, dtype=object) for name, values in columns.items()}
    )
    if draw(st.booleans()):  # typed columns, as pandas would read them from a file
        for name in NUMERIC_COLUMNS:
            frame[name] = pd.to_numeric(frame[name], errors="coerce")
    index = draw(st.permutations(list(range(100, 100 + rows))))
    return frame.set_axis(index, axis=0)


@st.composite
def training_tables(draw) -> pd.DataFrame:
    """A small table to train on: a target, a hostile numeric column, a unicode category, and
    optionally an all-null, a constant and a text-in-numbers column."""
    rows = draw(st.integers(60, 80))  # >= 2 validation and test rows
    task = draw(st.sampled_from(["regression", "binary"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    base = rng.normal(size=rows)
    specials = st.lists(st.sampled_from(SPECIAL_FLOATS), min_size=rows, max_size=rows)
    mask = np.array(draw(st.lists(st.booleans(), min_size=rows, max_size=rows)))
    numbers = np.where(mask, np.array(draw(specials), dtype=float), base)
    frame = pd.DataFrame(
        {
            "x1": numbers,
            "color": draw(
                st.lists(st.sampled_from([*UNICODE, "red"]), min_size=rows, max_size=rows)
            ),
        }
    )
    extras = draw(st.sets(st.sampled_from(["empty", "constant", "text", "huge"])))
    if "empty" in extras:
        frame["empty"] = np.nan
    if "constant" in extras:
        frame["constant"] = 7.0
    if "text" in extras:  # mostly numbers, one word: a broken numeric column
        frame["text"] = [str(value) for value in base]
        frame.loc[rows - 1, "text"] = "n/a?"  # a row whose target is kept
    if "huge" in extras:
        frame["huge"] = base * 1e300
    if task == "regression":
        target = base * 3 + 1
        target[: draw(st.integers(0, 3))] = draw(st.sampled_from([np.nan, np.inf, 1e39]))
        frame["y"] = target
    else:
        frame["y"] = np.where(base > np.median(base), "yes", "no")
        frame.loc[0, "y"] = None
    return frame


# --- images --------------------------------------------------------------------------------

GOOD_MODES = ("RGB", "L", "P", "RGBA", "LA", "CMYK", "I;16", "I", "F", "1", "YCbCr")
FORMATS = {"png": "PNG", "jpg": "JPEG", "gif": "GIF", "bmp": "BMP", "tiff": "TIFF", "webp": "WEBP"}


def encode(image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png_bomb(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width x height`` RGB pixels over a few bytes of data: it
    opens in microseconds and would take ``3 * width * height`` bytes to decode."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = zlib.compress(b"\x00" * 64)
    signature = b"\x89PNG\r\n\x1a\n"
    return signature + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def animated(fmt: str, frames: int = 3) -> bytes:
    from PIL import Image

    images = [Image.new("RGB", (12, 9), (60 * index, 20, 200)) for index in range(frames)]
    return encode(images[0], fmt, save_all=True, append_images=images[1:], duration=40, loop=0)


@st.composite
def good_images(draw) -> bytes:
    """A valid image: any mode, size 1..40 px a side, any format that can hold it."""
    from PIL import Image

    mode = draw(st.sampled_from(GOOD_MODES))
    width, height = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    pixels = np.random.default_rng(draw(st.integers(0, 2**16))).integers(0, 255, (height, width, 3))
    image = Image.fromarray(pixels.astype(np.uint8), "RGB")
    if mode == "P":
        image = image.quantize(8)
        image.info["transparency"] = 0
    elif mode == "I;16":
        image = Image.fromarray((pixels[..., 0] * 257).astype(np.uint16))
    else:
        image = image.convert(mode)
    options = {
        "RGB": ["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP"],
        "L": ["PNG", "JPEG", "BMP", "TIFF"],
        "P": ["PNG", "GIF"],
        "RGBA": ["PNG", "TIFF", "WEBP"],
        "LA": ["PNG"],
        "CMYK": ["JPEG", "TIFF"],
        "I;16": ["PNG", "TIFF"],
        "I": ["TIFF"],
        "F": ["TIFF"],
        "1": ["PNG", "BMP", "TIFF"],
        "YCbCr": ["JPEG"],
    }[mode]
    return encode(image, draw(st.sampled_from(options)))


@st.composite
def broken_images(draw) -> bytes:
    """Bytes that are not a decodable image: empty, truncated, bit-flipped, text, a bomb."""
    kind = draw(st.sampled_from(["empty", "truncated", "flipped", "text", "bomb", "junk"]))
    if kind == "empty":
        return b""
    if kind == "text":
        return draw(st.sampled_from([b"not an image", "ünï 😀".encode(), b"\xff\xd8\xff"]))
    if kind == "bomb":
        side = draw(st.sampled_from([12_000, 40_000, 65_535]))
        return png_bomb(side, side)
    if kind == "junk":
        return draw(st.binary(min_size=1, max_size=64))
    valid = draw(good_images())
    if kind == "truncated":
        return valid[: draw(st.integers(1, max(1, len(valid) - 1)))]
    position = draw(st.integers(0, len(valid) - 1))
    flipped = bytearray(valid)
    flipped[position] ^= 1 << draw(st.integers(0, 7))
    return bytes(flipped)  # may still decode: callers accept either outcome for these


#: Any image a user might send: good, animated or broken.
any_images = st.one_of(
    good_images(),
    broken_images(),
    st.sampled_from(["GIF", "PNG", "WEBP"]).map(animated),
)


# --- the attacked models, trained once per process ----------------------------------------


def _root() -> Path:
    return Path(tempfile.mkdtemp(prefix="deepspark-hostile-"))


@functools.cache
def table_model() -> tuple[str, str]:
    """A binary classifier on ``x1``, ``x2``, ``color``, trained one epoch on a table already
    holding NaN, +-inf, huge numbers, unicode, empty strings and a constant column:
    ``(model_dir, tracking_uri)``."""
    import deepspark
    from deepspark.tracking.model import resolve_model_dir
    from tests.conftest import make_table

    root = _root()
    frame = make_table(rows=120, task="binary").drop(columns=["count"])
    frame.loc[0:3, "x1"] = [np.inf, -np.inf, 1e308, 5e-324]
    frame.loc[4:6, "color"] = ["", "ünïcødé 😀", "\u202eevil"]
    frame["constant"] = 1.0
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    result = deepspark.train(
        frame,
        "y",
        tracking_uri=tracking_uri,
        hidden=(8,),
        epochs=1,
        batch_size=32,
        seed=1,
        exclude=["constant"],
    )
    return str(resolve_model_dir(result.model_uri)), tracking_uri


@functools.cache
def image_model() -> tuple[str, str, int]:
    """A tiny CNN on 16x16 patterns, trained one epoch on a folder that also holds a text file
    named ``.jpg``, a zero-byte, a truncated and a bomb PNG (``IMAGE_MODEL_BAD`` files it
    must leave out), and a CMYK, a 16-bit and an animated image it must use:
    ``(model_dir, tracking_uri, bad_images)``."""
    from PIL import Image

    import deepspark
    from deepspark.tracking.model import resolve_model_dir
    from tests.image_data import pattern_folder

    root = _root()
    folder = pattern_folder(root / "patterns", per_class=8, mess=True)
    hostile = folder / "horizontal"
    (hostile / "zero.jpg").write_bytes(b"")
    valid = encode(Image.new("RGB", (16, 16), (200, 10, 10)), "PNG")
    (hostile / "truncated.png").write_bytes(valid[: len(valid) // 2])
    (hostile / "bomb.png").write_bytes(png_bomb(40_000, 40_000))
    (hostile / "cmyk.jpg").write_bytes(encode(Image.new("CMYK", (16, 16), (0, 0, 0, 0)), "JPEG"))
    sixteen = Image.fromarray(np.full((16, 16), 40_000, dtype=np.uint16))
    (folder / "vertical" / "sixteen.png").write_bytes(encode(sixteen, "PNG"))
    (folder / "vertical" / "animated.gif").write_bytes(animated("GIF"))
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    result = deepspark.train(
        str(folder), tracking_uri=tracking_uri, filters=(4,), epochs=1, batch_size=16, seed=1
    )
    return str(resolve_model_dir(result.model_uri)), tracking_uri, result.bad_images


IMAGE_MODEL_BAD = 4


def one_line(message: str) -> bool:
    """A message a user reads: one non-empty line, no traceback."""
    return bool(message.strip()) and "\n" not in message.strip() and "Traceback" not in message
