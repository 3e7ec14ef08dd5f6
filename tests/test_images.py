"""facerec.images.load_image on every kind of bad or unusual input a user may hand us."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facerec.data import images
from facerec.data.images import load_image
from facerec.errors import ImageError


def write_png16(path: Path, array: np.ndarray) -> Path:
    """A 16-bit-per-channel PNG written by hand (Pillow cannot save 16-bit RGB)."""
    height, width, channels = array.shape
    color_type = {1: 0, 3: 2, 4: 6}[channels]
    raw = b"".join(b"\x00" + array[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )
    return path


@pytest.fixture()
def face_jpg(sample_dir: Path) -> Path:
    return sorted(sample_dir.glob("*/*.jpg"))[0]


# ----------------------------------------------------------------- refused
def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "nope.jpg")


def test_directory_named_like_an_image(tmp_path):
    (tmp_path / "x.jpg").mkdir()
    with pytest.raises(ImageError, match="directory"):
        load_image(tmp_path / "x.jpg")


def test_empty_file(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        load_image(tmp_path / "empty.jpg")


def test_text_named_jpg(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not an image\n" * 10)
    with pytest.raises(ImageError, match="cannot read image"):
        load_image(path)


def test_truncated_jpeg(tmp_path, face_jpg):
    path = tmp_path / "cut.jpg"
    data = face_jpg.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="cannot read image"):
        load_image(path)


def test_too_many_pixels_is_refused_before_decoding(tmp_path, monkeypatch):
    Image.new("RGB", (100, 100)).save(tmp_path / "big.png")
    monkeypatch.setattr(images, "MAX_PIXELS", 5_000)
    with pytest.raises(ImageError, match="too large"):
        load_image(tmp_path / "big.png")


def test_error_message_is_one_line(tmp_path):
    path = tmp_path / "bad.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    with pytest.raises(ImageError) as info:
        load_image(path)
    assert "\n" not in str(info.value)


# ----------------------------------------------------------------- converted
def assert_rgb8(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    assert image.mode == "RGB" and image.size == size
    array = np.asarray(image)
    assert array.dtype == np.uint8
    return array


def test_grayscale_becomes_rgb(tmp_path, face_jpg):
    path = tmp_path / "gray.jpg"
    Image.open(face_jpg).convert("L").save(path)
    array = assert_rgb8(load_image(path), (250, 250))
    assert np.array_equal(array[..., 0], array[..., 1]) and np.array_equal(array[..., 1], array[..., 2])


def test_rgba_is_composited_over_white(tmp_path):
    rgba = np.zeros((10, 20, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:, :10, 3] = 255  # left half opaque red, right half fully transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    array = assert_rgb8(load_image(tmp_path / "a.png"), (20, 10))
    assert tuple(array[5, 2]) == (200, 0, 0)
    assert tuple(array[5, 15]) == (255, 255, 255)


def test_palette_with_transparency(tmp_path):
    image = Image.new("P", (8, 8), 0)
    image.putpalette([0, 0, 255] + [0, 255, 0] * 255)
    image.info["transparency"] = 0
    image.save(tmp_path / "p.png", transparency=0)
    array = assert_rgb8(load_image(tmp_path / "p.png"), (8, 8))
    assert tuple(array[0, 0]) == (255, 255, 255)


def test_16bit_grayscale_is_scaled_to_8bit(tmp_path):
    values = (np.arange(12).reshape(3, 4) * 5000).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    array = assert_rgb8(load_image(tmp_path / "g16.png"), (4, 3))
    assert np.allclose(array[..., 0], values / 257, atol=1)


def test_16bit_rgb_and_rgba(tmp_path):
    rgb = np.zeros((4, 5, 3), np.uint16)
    rgb[..., 0], rgb[..., 1] = 65535, 257 * 100
    array = assert_rgb8(load_image(write_png16(tmp_path / "rgb16.png", rgb)), (5, 4))
    assert tuple(array[0, 0]) == (255, 100, 0)
    rgba = np.zeros((4, 5, 4), np.uint16)  # fully transparent
    array = assert_rgb8(load_image(write_png16(tmp_path / "rgba16.png", rgba)), (5, 4))
    assert tuple(array[0, 0]) == (255, 255, 255)


def test_cmyk_jpeg(tmp_path):
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    array = assert_rgb8(load_image(tmp_path / "cmyk.jpg"), (16, 16))
    assert array[8, 8, 0] > 200 and array[8, 8, 1] < 60  # red


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (40, 20), (0, 128, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    image.save(tmp_path / "rot.jpg", exif=exif)
    assert load_image(tmp_path / "rot.jpg").size == (20, 40)


@pytest.mark.parametrize("name, mode", [("huge.jpg", "L"), ("huge.png", "1")])
def test_10000px_image_is_downscaled(tmp_path, name, mode):
    color = {"L": 90, "1": 1}[mode]
    Image.new(mode, (10_000, 6_000), color).save(tmp_path / name)
    array = assert_rgb8(load_image(tmp_path / name), (images.MAX_SIDE, round(images.MAX_SIDE * 0.6)))
    expected = {"L": (90, 90, 90), "1": (255, 255, 255)}[mode]
    assert np.abs(array[100, 100].astype(int) - expected).max() <= 2


@pytest.mark.parametrize("mode, color", [("RGB", (10, 200, 30)), ("RGBA", (10, 200, 30, 255)), ("P", 1)])
def test_large_images_are_reduced_before_conversion(tmp_path, mode, color):
    """The integer pre-reduction (modes that support it) and the plain path (palette) give the same colours."""
    image = Image.new(mode, (1200, 600), color)
    if mode == "P":
        image.putpalette([0, 0, 0, 10, 200, 30] * 128)
    image.save(tmp_path / "big.png")
    array = assert_rgb8(load_image(tmp_path / "big.png", max_side=256), (256, 128))
    assert tuple(array[64, 128]) == (10, 200, 30)


def test_max_side_argument(face_jpg):
    assert max(load_image(face_jpg, max_side=100).size) == 100
    assert load_image(face_jpg).size == (250, 250)
