"""The one place where any input becomes an RGB ``uint8`` array.

Uploads, paths, PIL images, arrays and tensors all pass through :func:`load_image`, so EXIF
rotation, odd modes (palette, RGBA, CMYK, 16-bit), size limits and unreadable files are handled
once, with one set of messages.
"""
from __future__ import annotations

import hashlib
import io
import os
import warnings
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"})

# 50 megapixels: larger than any phone photo (a 200 MP sensor bins to 50 MP by default), far below
# what would exhaust memory (a decompression bomb declares hundreds of megapixels).
MAX_PIXELS = 50_000_000

# Files larger than this are refused before decoding: no honest photo is this big.
MAX_FILE_BYTES = 100 * 1024 * 1024


class ImageError(ValueError):
    """An input that cannot be turned into an image; the message is meant for the user."""


def _describe(source: Any) -> str:
    """A prefix naming the file in messages ("photo.jpg: ..."), empty for in-memory inputs."""
    if isinstance(source, (str, Path)):
        return Path(source).name + ": "
    return ""


def _open_pil(source: Any, max_pixels: int) -> Image.Image:
    """Open (lazily, without decoding) a path, bytes or file-like object as a PIL image."""
    name = _describe(source)
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise ImageError(f"{name}no such file")
        size = path.stat().st_size
        if size == 0:
            raise ImageError(f"{name}the file is empty (0 bytes)")
        if size > MAX_FILE_BYTES:
            raise ImageError(f"{name}the file is {size / 2**20:.0f} MB; the limit is "
                             f"{MAX_FILE_BYTES // 2**20} MB")
        data = path.read_bytes()
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif hasattr(source, "read"):
        data = source.read()
        if isinstance(data, str):
            raise ImageError(f"{name}expected binary image data, got text")
    else:  # pragma: no cover - guarded by load_image
        raise ImageError(f"unsupported input type {type(source).__name__}")
    if len(data) == 0:
        raise ImageError(f"{name}the file is empty (0 bytes)")
    if len(data) > MAX_FILE_BYTES:
        raise ImageError(f"{name}the file is {len(data) / 2**20:.0f} MB; the limit is "
                         f"{MAX_FILE_BYTES // 2**20} MB")
    try:
        with warnings.catch_warnings():
            # PIL warns (DecompressionBombWarning) before its own hard limit; we check ourselves.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError(f"{name}not an image (or a format that cannot be read); supported: "
                         f"{', '.join(sorted(e.lstrip('.') for e in IMAGE_EXTENSIONS))}") from None
    except Image.DecompressionBombError:
        raise ImageError(f"{name}the image is too large to open safely (the limit is "
                         f"{max_pixels / 1e6:.0f} MP)") from None
    except Exception as exc:  # PIL raises many types for damaged headers
        raise ImageError(f"{name}cannot read the image ({exc})") from None
    width, height = image.size
    if width * height > max_pixels:
        raise ImageError(f"{name}the image is {width}x{height} pixels "
                         f"({width * height / 1e6:.0f} MP); the limit is {max_pixels / 1e6:.0f} MP")
    return image


def _pil_to_rgb(image: Image.Image, name: str) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image.load()
            image = ImageOps.exif_transpose(image)
            mode = image.mode
            if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                # 16-bit / float greyscale: scale the real range to 0..255 instead of clipping.
                array = np.asarray(image, dtype=np.float64)
                return _float_to_uint8(array, name)
            if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
                # Transparent pixels become white, the way a browser shows a PNG on a page.
                rgba = image.convert("RGBA")
                background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                image = Image.alpha_composite(background, rgba)
            rgb = image.convert("RGB")
    except ImageError:
        raise
    except OSError as exc:
        raise ImageError(f"{name}the file is damaged or truncated ({exc})") from None
    except Exception as exc:
        raise ImageError(f"{name}cannot decode the image ({exc})") from None
    return np.asarray(rgb, dtype=np.uint8).copy()


def _float_to_uint8(array: np.ndarray, name: str) -> np.ndarray:
    if not np.isfinite(array).all():
        raise ImageError(f"{name}the image contains NaN or infinite values")
    low, high = float(array.min()), float(array.max())
    if array.dtype.kind == "f" and low >= 0.0 and high <= 1.0:
        scaled = array * 255.0
    elif high <= 255 and low >= 0 and array.dtype.kind != "f":
        scaled = array.astype(np.float64)
    else:
        scaled = (array - low) * (255.0 / max(high - low, 1e-12))
    out = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    if out.ndim == 2:
        out = np.stack([out] * 3, axis=-1)
    return out


def _array_to_rgb(array: np.ndarray, name: str, max_pixels: int) -> np.ndarray:
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.transpose(array, (1, 2, 0))  # CHW -> HWC
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ImageError(f"{name}expected an HxW, HxWx3 or HxWx4 array, got shape {array.shape}")
    height, width = array.shape[:2]
    if height == 0 or width == 0:
        raise ImageError(f"{name}the image is empty ({width}x{height})")
    if height * width > max_pixels:
        raise ImageError(f"{name}the image is {width}x{height} pixels; the limit is "
                         f"{max_pixels / 1e6:.0f} MP")
    if array.ndim == 3 and array.shape[-1] == 4:
        alpha = array[..., 3:4].astype(np.float64)
        alpha = alpha / 255.0 if array.dtype == np.uint8 else np.clip(alpha, 0, 1)
        colour = array[..., :3].astype(np.float64)
        white = 255.0 if array.dtype == np.uint8 else 1.0
        array = colour * alpha + white * (1 - alpha)
        if array.max(initial=0) <= 1.0:
            array = array * 255.0
        array = np.clip(np.rint(array), 0, 255).astype(np.uint8)
    if array.dtype == np.uint8:
        out = array
    elif array.dtype == bool:
        out = array.astype(np.uint8) * 255
    else:
        out = _float_to_uint8(array.astype(np.float64), name)
    if out.ndim == 2:
        out = np.stack([out] * 3, axis=-1)
    return np.ascontiguousarray(out)


def load_image(source: Any, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Turn any supported input into an ``H x W x 3`` RGB ``uint8`` array.

    Args:
        source: a path, raw file bytes, a binary file-like object (e.g. a Streamlit upload),
            a PIL image, a numpy array (HxW, HxWxC or CxHxW; uint8, 16-bit or float) or a
            torch tensor of the same shapes.
        max_pixels: refuse images with more pixels than this (decompression bombs).

    Returns:
        A C-contiguous ``uint8`` array of shape ``(H, W, 3)``, EXIF rotation applied.

    Raises:
        ImageError: with a message that can be shown to a user as it is.
    """
    name = _describe(source)
    if isinstance(source, Image.Image):
        width, height = source.size
        if width * height > max_pixels:
            raise ImageError(f"the image is {width}x{height} pixels; the limit is "
                             f"{max_pixels / 1e6:.0f} MP")
        return _pil_to_rgb(source, name)
    if isinstance(source, np.ndarray):
        return _array_to_rgb(source, name, max_pixels)
    if type(source).__module__.startswith("torch"):
        return _array_to_rgb(source.detach().cpu().numpy(), name, max_pixels)
    if isinstance(source, (str, os.PathLike, bytes, bytearray, memoryview)) or hasattr(source, "read"):
        image = _open_pil(Path(source) if isinstance(source, os.PathLike) else source, max_pixels)
        return _pil_to_rgb(image, name)
    raise ImageError(f"unsupported input type {type(source).__name__}; expected a path, bytes, "
                     "a file object, a PIL image, a numpy array or a torch tensor")


def content_hash(source: str | Path | bytes) -> str:
    """SHA-1 of a file's bytes: the key of every cache, so renamed or copied photos hit it."""
    digest = hashlib.sha1()
    if isinstance(source, (bytes, bytearray, memoryview)):
        digest.update(source)
    else:
        with open(source, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def iter_image_files(paths: Iterable[str | Path] | str | Path, *, recursive: bool = True) -> list[Path]:
    """Expand files and folders into a sorted list of image files (by extension).

    A file named explicitly is kept whatever its extension, so that a mislabelled upload gets
    a clear error from :func:`load_image` rather than silently disappearing.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            pattern = path.rglob("*") if recursive else path.glob("*")
            found.extend(sorted(p for p in pattern
                                if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                                and not any(part.startswith(".") for part in p.relative_to(path).parts)))
        else:
            found.append(path)
    return found
