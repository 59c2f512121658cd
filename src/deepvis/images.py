"""Reading images safely: any common format and mode in, an 8-bit RGB PIL image out, or a clear error."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError

#: Largest image (in pixels) decoded by default: 64 megapixels, about 8000 x 8000.
DEFAULT_MAX_PIXELS = 64_000_000

#: File name extensions treated as images when scanning folders.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

ImageSource = Union[str, os.PathLike, bytes, Image.Image, np.ndarray]


def _name(source: object) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, bytes):
        return f"<{len(source)} bytes>"
    return f"<{type(source).__name__}>"


def load_image(source: ImageSource, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode an image file, bytes, PIL image or array into an 8-bit RGB PIL image.

    Grayscale, palette, RGBA (composited over white), CMYK, 16-bit and float images are converted;
    EXIF orientation is applied; images over ``max_pixels`` are refused before they are decoded.
    Raises :class:`ImageError` with a one-line message naming the source on any failure.
    """
    if isinstance(source, Image.Image):
        return _check_size(to_rgb(source), _name(source), max_pixels)
    if isinstance(source, np.ndarray):
        return _check_size(array_to_rgb(source), _name(source), max_pixels)
    name = _name(source)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise ImageError(f"image not found: '{name}'")
        if path.is_dir():
            raise ImageError(f"'{name}' is a directory, not an image")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ImageError(f"cannot read image '{name}': {exc.strerror or exc}") from None
    elif isinstance(source, (bytes, bytearray)):
        data = bytes(source)
    else:
        raise ImageError(f"cannot use {type(source).__name__} as an image: give a path, bytes, a PIL image or an array")
    if not data:
        raise ImageError(f"cannot read image '{name}': the file is empty")
    try:
        with Image.open(io.BytesIO(data)) as image:
            _check_size(image, name, max_pixels)
            image.seek(0)
            image.load()
            image = ImageOps.exif_transpose(image)
            return to_rgb(image)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"cannot read image '{name}': not an image, or a format Pillow cannot decode") from None
    except Image.DecompressionBombError:
        raise ImageError(f"image '{name}' is too large to decode safely") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"cannot read image '{name}': {exc}") from None


def _check_size(image: Image.Image, name: str, max_pixels: int) -> Image.Image:
    width, height = image.size
    if width * height > max_pixels:
        raise ImageError(
            f"image '{name}' is {width}x{height} = {width * height:,} pixels, over the limit of {max_pixels:,}"
        )
    if width < 1 or height < 1:
        raise ImageError(f"image '{name}' has no pixels ({width}x{height})")
    return image


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert a PIL image of any mode to 8-bit RGB, scaling 16-bit and float data instead of clipping."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return array_to_rgb(np.asarray(image))
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def array_to_rgb(array: np.ndarray) -> Image.Image:
    """Convert an HxW, HxWx1, HxWx3 or HxWx4 array (uint8, uint16, int or float) to an 8-bit RGB image."""
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise ImageError(f"cannot use an array of shape {a.shape} as an image: expected HxW or HxWx3/4")
    if a.ndim == 3 and a.shape[2] == 4:
        alpha = a[:, :, 3:4].astype(np.float64) / (255.0 if a.dtype == np.uint8 else max(float(a[:, :, 3].max()), 1.0))
        a = a[:, :, :3] * alpha + (1 - alpha) * _white(a)
    a = _to_uint8(a)
    if a.ndim == 2:
        a = np.stack([a] * 3, axis=-1)
    return Image.fromarray(np.ascontiguousarray(a), "RGB")


def _white(a: np.ndarray) -> float:
    if a.dtype == np.uint8:
        return 255.0
    if a.dtype == np.uint16:
        return 65535.0
    return 1.0 if np.issubdtype(a.dtype, np.floating) and float(np.nanmax(a)) <= 1.0 else 255.0


def _to_uint8(a: np.ndarray) -> np.ndarray:
    """Scale by the dtype's range: uint16 /257, floats in [0,1] x255, anything else min-max stretched."""
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * 255
    if a.dtype == np.uint16:
        return np.rint(a / 257.0).astype(np.uint8)
    f = np.nan_to_num(a.astype(np.float64))
    low, high = (float(f.min()), float(f.max())) if f.size else (0.0, 0.0)
    if np.issubdtype(a.dtype, np.floating) and low >= 0.0 and high <= 1.0:
        scaled = f * 255.0
    elif np.issubdtype(a.dtype, np.integer) and low >= 0 and high <= 255:
        scaled = f
    elif np.issubdtype(a.dtype, np.integer) and low >= 0 and high <= 65535:
        scaled = f / 257.0  # 16-bit data decoded into a wider integer mode
    else:
        scaled = (f - low) / (high - low + 1e-12) * 255.0
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
