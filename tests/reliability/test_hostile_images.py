"""Hostile images (Hypothesis): every Pillow mode (CMYK, 16-bit, palette with transparency,
1-bit, float), animated GIF / PNG / WebP, zero bytes, truncated and bit-flipped files, text
named ``.jpg`` and decompression bombs.

Decoding gives the model's size or one line saying why not; a bomb is refused from its header,
before a pixel is decoded; training leaves bad files out and counts them; prediction returns
one row per input row, in order, with the reason in ``error`` exactly for the bad ones.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deepspark.data.image_decode import ImageDecodeError, decode_image
from tests.reliability.hostile import (
    FAST_SETTINGS,
    IMAGE_MODEL_BAD,
    any_images,
    image_model,
    one_line,
    png_bomb,
)

SIZE = (16, 16)


def _decodes(data: bytes) -> bool:
    try:
        decode_image(data, size=SIZE)
    except ImageDecodeError:
        return False
    return True


@settings(FAST_SETTINGS, max_examples=300)
@given(any_images, st.sampled_from([1, 3]))
def test_decode_gives_the_size_or_one_line(data, channels):
    started = time.perf_counter()
    try:
        array = decode_image(data, size=(7, 5), channels=channels)
    except ImageDecodeError as error:
        assert one_line(str(error)), error
    else:
        assert array.shape == (7, 5, channels) and array.dtype == np.uint8
    assert time.perf_counter() - started < 2.0  # nothing is decoded at full bomb size


@pytest.mark.parametrize("side", [9_500, 12_000, 65_535])
def test_decompression_bombs_are_refused_before_decoding(side):
    """Over ``PIL.Image.MAX_IMAGE_PIXELS`` (89 M), including the range where Pillow only warns
    (89-179 M pixels): refused in milliseconds, without allocating the pixels."""
    import tracemalloc

    bomb = png_bomb(side, side)
    tracemalloc.start()
    started = time.perf_counter()
    with pytest.raises(ImageDecodeError, match="too many pixels"):
        decode_image(bomb, size=SIZE)
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert elapsed < 0.5 and peak < 2**20, (elapsed, peak)


def test_training_leaves_bad_files_out_and_counts_them():
    _, _, bad_images = image_model()
    assert bad_images == IMAGE_MODEL_BAD  # text .jpg, zero bytes, truncated, bomb


@pytest.fixture(scope="module")
def model():
    import deepspark

    return deepspark.load_model(image_model()[0])


@settings(FAST_SETTINGS, max_examples=40)
@given(st.lists(any_images, min_size=1, max_size=8), st.integers(0, 1000))
def test_predict_keeps_rows_aligned_and_reports_bad_images(model, images, offset):
    frame = pd.DataFrame({"image": pd.Series(images, dtype=object), "id": range(len(images))})
    frame = frame.set_axis(range(offset, offset + len(images)), axis=0)
    predictions = model.predict(frame)
    assert predictions.index.equals(frame.index)
    good = np.array([_decodes(data) for data in images])
    assert predictions["error"].isna().to_numpy().tolist() == good.tolist()
    assert predictions["prediction"].notna().to_numpy().tolist() == good.tolist()
    assert all(one_line(reason) for reason in predictions["error"].dropna())
    probabilities = predictions.filter(like="probability_").to_numpy()[good]
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
