"""core.images: every kind of input becomes RGB uint8, every bad one a clear ImageError."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from core.images import ImageError, content_hash, iter_image_files, load_image


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def photo(astronaut) -> Image.Image:
    return Image.fromarray(astronaut)


def test_rgb_jpeg_path_bytes_and_filelike(tmp_path, photo):
    data = _encode(photo, "JPEG", quality=95)
    path = tmp_path / "a.jpg"
    path.write_bytes(data)
    from_path = load_image(path)
    assert from_path.shape == (512, 512, 3) and from_path.dtype == np.uint8
    np.testing.assert_array_equal(from_path, load_image(data))
    np.testing.assert_array_equal(from_path, load_image(io.BytesIO(data)))
    np.testing.assert_array_equal(from_path, load_image(str(path)))


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16", "1"])
def test_modes_become_rgb(photo, mode):
    converted = photo.convert(mode if mode != "I;16" else "I").convert(mode) if mode == "I;16" \
        else photo.convert(mode)
    fmt = "JPEG" if mode == "CMYK" else ("TIFF" if mode == "I;16" else "PNG")
    array = load_image(_encode(converted, fmt))
    assert array.shape == (512, 512, 3) and array.dtype == np.uint8
    assert array.std() > 10  # a real picture, not a blank


def test_sixteen_bit_keeps_its_range():
    ramp = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)  # 0..65520
    array = load_image(_encode(Image.fromarray(ramp), "PNG"))
    assert array.min() == 0 and array.max() == 255


def test_transparent_png_is_composited_on_white():
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)  # fully transparent black
    array = load_image(_encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert (array == 255).all()


def test_exif_rotation_is_applied(photo):
    wide = photo.resize((300, 200))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    array = load_image(_encode(wide, "JPEG", exif=exif))
    assert array.shape == (300, 200, 3)


def test_arrays_and_tensors(astronaut):
    np.testing.assert_array_equal(load_image(astronaut), astronaut)
    chw = torch.from_numpy(astronaut).permute(2, 0, 1)
    np.testing.assert_array_equal(load_image(chw), astronaut)
    as_float = load_image(astronaut.astype(np.float32) / 255.0)
    assert np.abs(as_float.astype(int) - astronaut).max() <= 1
    assert load_image(astronaut[..., 0]).shape == (512, 512, 3)


@pytest.mark.parametrize("payload, message", [
    (b"", "empty"),
    (b"this is not a picture at all", "not an image"),
])
def test_bad_bytes(tmp_path, payload, message):
    path = tmp_path / "upload.jpg"
    path.write_bytes(payload)
    with pytest.raises(ImageError, match=message):
        load_image(path)


def test_truncated_jpeg(photo):
    data = _encode(photo, "JPEG")
    with pytest.raises(ImageError, match="damaged or truncated|cannot"):
        load_image(data[: len(data) // 3])


def test_decompression_bomb_is_refused_before_decoding():
    # A 1-bit PNG of 12000 x 12000 is tiny on disk but 144 megapixels once decoded.
    bomb = _encode(Image.new("1", (12000, 12000)), "PNG")
    assert len(bomb) < 2_000_000
    with pytest.raises(ImageError, match="limit"):
        load_image(bomb)


def test_one_pixel_image_loads():
    assert load_image(_encode(Image.new("RGB", (1, 1), (10, 20, 30)), "PNG")).shape == (1, 1, 3)


def test_wrong_types_and_shapes():
    with pytest.raises(ImageError, match="unsupported input type"):
        load_image(12345)
    with pytest.raises(ImageError, match="shape"):
        load_image(np.zeros((5, 5, 7), dtype=np.uint8))
    with pytest.raises(ImageError, match="no such file"):
        load_image("/nonexistent/photo.jpg")


def test_content_hash_and_file_listing(tmp_path, photo):
    data = _encode(photo, "PNG")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x.PNG").write_bytes(data)
    (tmp_path / "a.jpg").write_bytes(data)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "y.png").write_bytes(data)
    assert [p.name for p in iter_image_files(tmp_path)] == ["a.jpg", "x.PNG"]
    assert content_hash(tmp_path / "a.jpg") == content_hash(data)
