"""Image folders and decoding: every common format and mode to RGB at one size, EXIF orientation,
bad files counted with their reason (or fatal when asked), real photos from ../shared."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from deepspark.data.image_decode import ImageDecodeError, decode_image, decode_images
from deepspark.data.image_sources import is_image_folder, list_image_folder
from deepspark.errors import DataError, UserInputError
from tests.conftest import SHARED_DATA

HYMENOPTERA = SHARED_DATA / "images" / "hymenoptera"


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def left_red_right_blue(width=40, height=20) -> Image.Image:
    array = np.zeros((height, width, 3), dtype=np.uint8)
    array[:, : width // 2] = (255, 0, 0)
    array[:, width // 2 :] = (0, 0, 255)
    return Image.fromarray(array)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF"])
def test_every_common_format_decodes_to_rgb_at_the_asked_size(fmt):
    data = encoded(left_red_right_blue(), fmt)
    array = decode_image(data, size=(8, 12))
    assert array.shape == (8, 12, 3) and array.dtype == np.uint8
    assert array[:, 1, 0].min() > 180 and array[:, 1, 2].max() < 80  # left stays red
    assert array[:, -2, 2].min() > 180 and array[:, -2, 0].max() < 80  # right stays blue


def test_exif_orientation_is_applied():
    # Stored 40 wide x 20 high, with "rotate 90 degrees clockwise to view" (orientation 6).
    image = left_red_right_blue()
    exif = image.getexif()
    exif[0x0112] = 6
    array = decode_image(encoded(image, "JPEG", exif=exif.tobytes()), size=(40, 20))
    # Upright, the red half is on top and the blue half at the bottom.
    assert array[2, 10, 0] > 180 and array[2, 10, 2] < 80
    assert array[-3, 10, 2] > 180 and array[-3, 10, 0] < 80


@pytest.mark.parametrize(
    ("mode", "value", "expected"),
    [
        ("L", 128, (128, 128, 128)),
        ("CMYK", (0, 255, 255, 0), (255, 0, 0)),  # cyan 0, magenta and yellow full: red
        ("RGBA", (0, 0, 255, 0), (255, 255, 255)),  # fully transparent: the white background
        ("LA", (0, 255), (0, 0, 0)),
        ("I;16", 65535, (255, 255, 255)),  # 16-bit white stays white, not clipped
    ],
)
def test_modes_become_rgb(mode, value, expected):
    image = Image.new(mode, (6, 4), value)
    fmt = "JPEG" if mode == "CMYK" else "TIFF" if mode == "I;16" else "PNG"
    array = decode_image(encoded(image, fmt), size=(4, 6))
    np.testing.assert_allclose(array[1, 1], expected, atol=3)


def test_palette_image_with_transparency_and_grayscale_output():
    image = Image.new("P", (5, 5), 0)
    image.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    image.putpixel((2, 2), 1)
    image.info["transparency"] = 0
    array = decode_image(encoded(image, "PNG", transparency=0), size=(5, 5))
    assert tuple(array[0, 0]) == (255, 255, 255) and tuple(array[2, 2]) == (200, 10, 10)
    gray = decode_image(encoded(left_red_right_blue(), "PNG"), size=(4, 4), channels=1)
    assert gray.shape == (4, 4, 1)


def test_animated_gif_gives_its_first_frame():
    frames = [Image.new("RGB", (4, 4), color) for color in ((255, 0, 0), (0, 255, 0))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    array = decode_image(buffer.getvalue(), size=(4, 4))
    assert array[0, 0, 0] > 200 and array[0, 0, 1] < 50


def test_bad_files_raise_with_their_reason(tmp_path):
    jpeg = encoded(left_red_right_blue(400, 300), "JPEG")
    with pytest.raises(ImageDecodeError, match=r"corrupt or truncated image"):
        decode_image(jpeg[: len(jpeg) // 2], size=(8, 8))
    with pytest.raises(ImageDecodeError, match=r"not an image"):
        decode_image(b"name,price\nwidget,3\n", size=(8, 8))
    with pytest.raises(ImageDecodeError, match=r"file not found"):
        decode_image(tmp_path / "missing.png", size=(8, 8))


def test_a_batch_counts_bad_images_and_keeps_the_good_ones_in_order(tmp_path):
    good = [encoded(Image.new("RGB", (9, 7), (value, 0, 0)), "PNG") for value in (10, 20, 30)]
    text_file = tmp_path / "notes.jpg"
    text_file.write_text("not a photo")
    sources = [good[0], text_file, good[1], b"\x89PNG\r\n\x1a\n broken", good[2]]
    decoded = decode_images(sources, size=(7, 9), workers=2)
    assert decoded.images.shape == (3, 7, 9, 3)
    assert decoded.images[:, 0, 0, 0].tolist() == [10, 20, 30]
    assert decoded.ok.tolist() == [True, False, True, False, True]
    assert decoded.bad_count == 2 and [index for index, _ in decoded.errors] == [1, 3]
    with pytest.raises(ImageDecodeError, match=r"Bad image '.*notes\.jpg': not an image.*skip"):
        decode_images(sources, size=(7, 9), on_bad="fail")


def test_fast_and_slow_images_decode_in_order_alone_or_in_threads(monkeypatch):
    from deepspark.data import image_decode

    sources = [
        b"not an image"
        if index % 7 == 3
        else encoded(Image.new("RGB", (5, 4), (index, 0, 0)), "PNG")
        for index in range(60)
    ]
    expected_bad = [index for index in range(60) if index % 7 == 3]
    for threshold in (3600.0, 0.0):  # decode alone (images are "fast"), then in threads
        monkeypatch.setattr(image_decode, "THREADED_DECODE_MIN_SECONDS", threshold)
        decoded = decode_images(sources, size=(4, 5), workers=2)
        assert [index for index, _ in decoded.errors] == expected_bad
        good = [index for index in range(60) if index not in expected_bad]
        assert decoded.images[:, 0, 0, 0].tolist() == good


def test_invalid_settings_are_user_errors():
    with pytest.raises(
        UserInputError, match=r"Invalid --image-size.*Received: image_size=\(0, 5\)"
    ):
        decode_images([], size=(0, 5))
    with pytest.raises(UserInputError, match=r"Invalid --on-bad-image"):
        decode_images([], size=(5, 5), on_bad="ignore")
    assert decode_images([], size=(5, 5)).images.shape == (0, 5, 5, 3)


def test_folder_listing_with_classes_nested_folders_and_odd_names(tmp_path):
    for relative in ("cats/a.jpg", "cats/more/b.PNG", "dogs/c d.webp", "dogs/.hidden/e.png"):
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encoded(Image.new("RGB", (3, 3)), "PNG"))
    (tmp_path / "dogs" / "readme.txt").write_text("not listed")
    frame = list_image_folder(tmp_path)
    assert frame["label"].tolist() == ["cats", "cats", "dogs"]
    assert [path.rsplit("/", 1)[-1] for path in frame["path"]] == ["a.jpg", "b.PNG", "c d.webp"]
    assert frame["split"].isna().all()
    assert is_image_folder(tmp_path) and not is_image_folder(tmp_path / "cats" / "a.jpg")


def test_folder_errors_name_the_layout(tmp_path):
    with pytest.raises(DataError, match=r"Image folder not found"):
        list_image_folder(tmp_path / "nope")
    (tmp_path / "loose.jpg").write_bytes(b"x")
    with pytest.raises(DataError, match=r"No images found in class subfolders; lay the folder"):
        list_image_folder(tmp_path)


@pytest.mark.skipif(not HYMENOPTERA.exists(), reason="../shared/data/images is not there")
def test_real_photos_with_their_own_split_decode_and_the_placeholder_is_counted():
    frame = list_image_folder(HYMENOPTERA)
    counts = frame.groupby(["split", "label"]).size().to_dict()
    assert counts == {
        ("train", "ants"): 124,
        ("train", "bees"): 121,
        ("val", "ants"): 70,
        ("val", "bees"): 83,
    }
    decoded = decode_images(frame["path"].tolist(), size=(32, 32))
    assert decoded.images.shape[1:] == (32, 32, 3)
    # Every file decodes (imageNotFound.gif is a real, if useless, GIF); pixels vary.
    assert decoded.bad_count == 0 and decoded.images.std() > 20
