"""Reading images safely: any common format and mode in, an 8-bit RGB PIL image out, or a clear error."""

from __future__ import annotations

import io
import os
import re
import threading
import warnings
from pathlib import Path
from typing import Sequence, Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from deepvis.core.errors import ImageError, one_line
from deepvis.pixels.samples import sample_images

#: Largest image (in pixels) decoded by default: 40 megapixels, about 6300 x 6300; every command and the server
#: use :func:`max_pixels` (``--max-pixels`` sets it, :func:`set_max_pixels`).
DEFAULT_MAX_PIXELS = 40_000_000
_max_pixels = DEFAULT_MAX_PIXELS


def max_pixels() -> int:
    """The largest image (pixels) decoded when no limit is given: ``--max-pixels``, else 40 megapixels."""
    return _max_pixels


def set_max_pixels(pixels: int) -> None:
    """Set the limit :func:`load_image` (and the server) use when none is given."""
    global _max_pixels
    if int(pixels) < 1:
        raise ImageError(f"the pixel limit must be at least 1, got {pixels}")
    _max_pixels = int(pixels)

#: List files of image paths, by extension (any other file is a list when it is text, else an image).
LIST_EXTENSIONS = (".txt", ".lst")

#: File name extensions treated as images when scanning folders.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

ImageSource = Union[str, os.PathLike, bytes, Image.Image, np.ndarray]


def _name(source: object) -> str:
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        text = text.decode("utf-8", "surrogateescape") if isinstance(text, bytes) else text
        # control characters or undecodable bytes would break the one-line message (or the terminal)
        return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")
    if isinstance(source, (bytes, bytearray)):
        return f"<{len(source)} bytes>"
    return f"<{type(source).__name__}>"


#: ``warnings.catch_warnings`` changes process-wide filters: images decoded on several threads (the server's, crops'
#: prefetch) take turns around it (only the header is read inside, not the pixels).
_WARNINGS_LOCK = threading.Lock()


def load_image(source: ImageSource, max_pixels: int | None = None, name: str | None = None) -> Image.Image:
    """Decode an image file, bytes, PIL image or array into an 8-bit RGB PIL image.

    Grayscale, palette, RGBA (composited over white), CMYK, 16-bit and float images are converted;
    EXIF orientation is applied; images over ``max_pixels`` (default :func:`max_pixels`) are refused before they
    are decoded. Raises :class:`ImageError` with a one-line message naming the source (or ``name``, e.g. an
    upload's file name) on any failure.
    """
    max_pixels = _max_pixels if max_pixels is None else max_pixels
    if name is not None:
        name = _name(str(name))
    if isinstance(source, Image.Image):
        name = name or _name(source)
        _check_size(source, name, max_pixels)
        return _converted(lambda: to_rgb(source), name)
    if isinstance(source, np.ndarray):
        name = name or _name(source)
        if source.ndim >= 2:
            _check_size_wh(source.shape[1], source.shape[0], name, max_pixels)
        return _converted(lambda: array_to_rgb(source), name)
    name = name or _name(source)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            if not path.exists():
                raise ImageError(f"image not found: '{name}'")
            if path.is_dir():
                raise ImageError(f"'{name}' is a directory, not an image")
            data = path.read_bytes()
        except OSError as exc:
            raise ImageError(f"cannot read image '{name}': {one_line(exc.strerror or exc)}") from None
    elif isinstance(source, (bytes, bytearray)):
        data = bytes(source)
    else:
        raise ImageError(f"cannot use {type(source).__name__} as an image: give a path, bytes, a PIL image or an array")
    if not data:
        raise ImageError(f"cannot read image '{name}': the file is empty")
    try:
        with _WARNINGS_LOCK, warnings.catch_warnings():  # the filters are global: one thread at a time
            # this module enforces its own (lower) pixel limit before decoding
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
        with image:
            _check_size(image, name, max_pixels)
            image.seek(0)  # the first frame of an animation
            image.load()
            return _exif_oriented(to_rgb(image), image)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"cannot read image '{name}': not an image, or a format Pillow cannot decode") from None
    except Image.DecompressionBombError as exc:
        match = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"declares {int(match.group(1)):,} pixels:" if match else "is"
        raise ImageError(f"image '{name}' {size} too large to decode safely (a possible decompression bomb)") from None
    except MemoryError:
        raise ImageError(f"image '{name}' is too large to decode: out of memory") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"cannot read image '{name}': {one_line(exc)}") from None
    except Exception as exc:  # a corrupt file can upset a decoder in many ways; never a traceback
        raise ImageError(f"cannot read image '{name}': corrupt or unsupported file "
                         f"({type(exc).__name__}: {one_line(exc)})") from None


def _converted(convert, name: str) -> Image.Image:
    try:
        return convert()
    except ImageError:
        raise
    except Exception as exc:
        raise ImageError(f"cannot convert image {name} to RGB: {one_line(exc)}") from None


_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _exif_oriented(rgb: Image.Image, original: Image.Image) -> Image.Image:
    """Apply the EXIF orientation tag of ``original`` to its converted image; a corrupt EXIF block is ignored."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            orientation = original.getexif().get(0x0112)
    except Exception:
        return rgb
    method = _ORIENTATION.get(orientation) if isinstance(orientation, int) else None
    return rgb.transpose(method) if method is not None else rgb


def _check_size(image: Image.Image, name: str, max_pixels: int) -> Image.Image:
    _check_size_wh(*image.size, name, max_pixels)
    return image


def _check_size_wh(width: int, height: int, name: str, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageError(
            f"image '{name}' is {width}x{height} = {width * height:,} pixels, over the limit of {max_pixels:,}"
        )
    if width < 1 or height < 1:
        raise ImageError(f"image '{name}' has no pixels ({width}x{height})")


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert a PIL image of any mode to 8-bit RGB, scaling 16-bit and float data instead of clipping.

    Transparent pixels (alpha channel, or a palette / colour-key transparency) are composited over white.
    """
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return array_to_rgb(np.asarray(image))
    if mode in ("RGBA", "RGBa", "LA", "La", "PA") or (
            mode in ("1", "L", "P", "RGB") and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode == "RGB":
        return image
    return image.convert("RGB")


def array_to_rgb(array: np.ndarray) -> Image.Image:
    """Convert an HxW, HxWx1, HxWx3 or HxWx4 array (uint8, uint16, int or float) to an 8-bit RGB image.

    uint8 is taken as is, uint16 scaled by 1/257, floats in [0, 1] by 255; other ranges are min-max
    stretched. A fourth channel is alpha (in the same dtype's range), composited over white.
    """
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise ImageError(f"cannot use an array of shape {a.shape} as an image: expected HxW or HxWx3/4")
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_) or np.issubdtype(a.dtype, np.complexfloating):
        raise ImageError(f"cannot use an array of dtype {a.dtype} as an image: expected integers, floats or bools")
    if a.ndim == 3 and a.shape[2] == 4:
        color = _to_unit(a[:, :, :3])
        alpha = np.clip(_to_unit(a[:, :, 3:4], stretch=False), 0.0, 1.0)
        unit = color * alpha + (1.0 - alpha)
    else:
        unit = _to_unit(a)
    out = np.clip(np.rint(unit * 255.0), 0, 255).astype(np.uint8)
    if out.ndim == 2:
        out = np.stack([out] * 3, axis=-1)
    return Image.fromarray(np.ascontiguousarray(out), "RGB")


def _to_unit(a: np.ndarray, stretch: bool = True) -> np.ndarray:
    """Scale to floats in [0, 1] by the dtype's range: uint8 /255, uint16 /65535 (so 8 bits are /257),
    floats in [0, 1] as they are, other integers in 0..255 or 0..65535 as 8- or 16-bit; anything else
    min-max stretched (or, with ``stretch=False``, left to be clipped)."""
    if a.dtype == np.bool_:
        return a.astype(np.float64)
    if a.dtype.kind == "u" and a.dtype.itemsize == 1:
        return a.astype(np.float64) / 255.0
    if a.dtype.kind == "u" and a.dtype.itemsize == 2:  # any byte order ('I;16B' arrays are big-endian)
        return a.astype(np.float64) / 65535.0
    f = a.astype(np.float64)
    finite = f[np.isfinite(f)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    f = np.nan_to_num(f, nan=low, posinf=high, neginf=low)
    if np.issubdtype(a.dtype, np.floating) and low >= 0.0 and high <= 1.0:
        return f
    if np.issubdtype(a.dtype, np.integer) and low >= 0 and high <= 255:
        return f / 255.0
    if np.issubdtype(a.dtype, np.integer) and low >= 0 and high <= 65535:
        return f / 65535.0  # 16-bit data decoded into a wider integer mode
    if not stretch:
        return f
    return (f - low) / (high - low) if high > low else np.zeros_like(f)


def image_arguments(items: Sequence[str], samples: bool = False) -> list[str]:
    """Image arguments as image files: a folder stands for the images in it (recursive, sorted; an empty folder stays
    itself, so reading it fails with a clear message), a file for itself; ``samples`` adds the bundled images."""
    images: list[str] = []
    for item in items:
        images += ([str(p) for p in find_images(item)[1]] or [item]) if Path(item).is_dir() else [item]
    if samples:
        images += [str(p) for p in sample_images()]
    return images


def is_image_list(path: Path) -> bool:
    """Whether a file is a list of image paths: a ``.txt`` / ``.lst`` file, or one that is not named as an image
    and holds text (UTF-8, no NUL byte); a file named as an image (``.jpg``...) is an image, whatever it holds."""
    suffix = path.suffix.lower()
    if suffix in LIST_EXTENSIONS:
        return True
    if suffix in IMAGE_EXTENSIONS:
        return False
    try:
        with open(path, "rb") as handle:
            head = handle.read(8192)
    except OSError:
        return False
    if b"\0" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start >= len(head) - 3  # a character cut at the end of the block
    return True


def find_images(source: str | Path | None) -> tuple[Path | None, list[Path]]:
    """The image root and its image files: a directory (recursive, sorted, by extension, any case), a list file
    (one path per line, relative to the list file, an optional label after whitespace; see :func:`is_image_list`),
    or a single image file."""
    if source is None:
        files = sample_images()
        return (files[0].parent if files else None), files
    path = Path(source).expanduser()
    if path.is_dir():
        # Broken links are kept: reading them fails later with a clear reason instead of a silent omission.
        files = sorted(p for p in path.rglob("*")
                       if (p.is_file() or p.is_symlink()) and p.suffix.lower() in IMAGE_EXTENSIONS)
        return path.resolve(), [path.resolve() / p.relative_to(path) for p in files]
    if path.is_file() and not is_image_list(path):
        return path.parent.resolve(), [path.resolve()]  # one image
    if path.is_file():
        root = path.parent.resolve()
        files = []
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            entry = line.strip().split()[0] if line.strip() and not line.lstrip().startswith("#") else ""
            if entry:
                files.append((root / entry).resolve())
        return root, files
    raise ImageError(f"images '{source}' is neither a directory nor a list file")
