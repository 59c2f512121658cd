"""Activations and backward signals -> pictures, with the original toolbox's formulas.

All functions take and return float numpy arrays (HxWx3 in [0, 1] for images) so the CLI, the web UI and
notebooks show exactly the same thing; :func:`to_uint8` and :func:`png_bytes` finish the job.
"""

from __future__ import annotations

import io
import math
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
from PIL import Image

from deepvis.core.errors import DeepvisError, ImageError
from deepvis.core.files import atomic_write_bytes

FILTERS = ("raw", "gray", "norm", "normblur")
#: Gaussian blur sigma of the ``normblur`` filter (the original's ``caffevis_grad_norm_blur_radius``).
NORM_BLUR_SIGMA = 4.0
#: Tile highlight colours of the original: selected unit, frozen backprop origin.
SELECTED_COLOR = (0.5, 1.0, 0.5)
FROZEN_COLOR = (0.2, 0.2, 1.0)
PAD_COLOR = (0.0, 0.0, 0.0)
BACK_PAD_COLOR = (0.2, 0.2, 0.5)
NEGATIVE_COLOR = (1.0, 0.0, 0.0)
POSITIVE_COLOR = (0.0, 1.0, 0.0)
_EPS = 1e-10


class RenderError(DeepvisError, ValueError):
    """A picture that cannot be drawn as asked (an unknown filter, a heat map that is not 2-D, a montage of nothing).
    Also a ``ValueError``, as these were before they joined the error hierarchy."""


def _np(x) -> np.ndarray:
    """``x`` as float32 numpy: arrays and lists as they are, tensors (duck-typed: ``.detach()``, ``.float()``,
    ``.cpu()``, ``.numpy()``) detached and brought to the CPU, so this module needs no torch."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def norm01(x) -> np.ndarray:
    """``(x - min) / (max(x - min) + 1e-10)``: the full range onto [0, 1]."""
    x = _np(x)
    shifted = x - x.min()
    return shifted / (shifted.max() + _EPS)


def norm01c(x, center: float = 0.0) -> np.ndarray:
    """Symmetric scaling that maps ``center`` to 0.5: ``(x - c) / (max(2 max(x - c), -2 min(x - c)) + 1e-10) + 0.5``."""
    x = _np(x) - center
    return x / (max(2 * x.max(), -2 * x.min()) + _EPS) + 0.5


def gaussian_blur(image, sigma: float) -> np.ndarray:
    """Gaussian blur of a 2-D array, kernel size ``round(8 sigma + 1) | 1`` and reflect-101 borders (as OpenCV).

    Borders wider than the image (which reflection cannot fill) repeat the edge pixels. float32 (H, W).
    """
    image = _np(image)
    size = int(round(sigma * 8 + 1)) | 1
    half = size // 2
    coords = np.arange(size, dtype=np.float64) - half
    kernel = np.exp(-(coords**2) / (2 * sigma**2))
    kernel = (kernel / kernel.sum()).astype(np.float32)
    pad_h, pad_w = min(half, image.shape[0] - 1), min(half, image.shape[1] - 1)
    padded = np.pad(image, ((pad_h, pad_h), (pad_w, pad_w)), mode="reflect")
    padded = np.pad(padded, ((half - pad_h, half - pad_h), (half - pad_w, half - pad_w)), mode="edge")
    return _correlate(_correlate(padded, kernel, axis=1), kernel, axis=0)


def _correlate(values: np.ndarray, kernel: np.ndarray, axis: int) -> np.ndarray:
    """``values`` correlated with a 1-D ``kernel`` along ``axis``, no padding ("valid"): float32, one shifted
    multiply-add per tap, summed in float64 so the result is the exact one rounded once."""
    length = values.shape[axis] - len(kernel) + 1
    total = np.zeros(values.shape[:axis] + (length,) + values.shape[axis + 1:], np.float64)
    window = [slice(None)] * values.ndim
    for tap, weight in enumerate(kernel):
        window[axis] = slice(tap, tap + length)
        total += float(weight) * values[tuple(window)]
    return total.astype(np.float32)


def resize_bilinear(values, size: tuple[int, int]) -> np.ndarray:
    """A 2-D map resized to ``size`` (H, W) by bilinear interpolation with half-pixel centres (``align_corners``
    false, as PyTorch's and OpenCV's default; no antialiasing when shrinking). float32."""
    values = _np(values)
    rows = _linear_weights(values.shape[0], size[0])
    cols = _linear_weights(values.shape[1], size[1])
    return _interpolate(_interpolate(values, *cols, axis=1), *rows, axis=0)


def _linear_weights(source: int, target: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each of ``target`` samples over ``source`` pixels: the two source pixels it lies between and the weight
    of the second, ``src = (dst + 0.5) * source / target - 0.5`` clamped at 0 (PyTorch's rule)."""
    scale = np.float32(source / target)
    position = np.maximum((np.arange(target, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5),
                          np.float32(0))
    low = np.minimum(position.astype(np.int64), source - 1)
    high = np.minimum(low + 1, source - 1)
    return low, high, (position - low).astype(np.float32)


def _interpolate(values: np.ndarray, low: np.ndarray, high: np.ndarray, weight: np.ndarray,
                 axis: int) -> np.ndarray:
    shape = [1, 1]
    shape[axis] = -1
    weight = weight.reshape(shape)
    return ((1 - weight) * np.take(values, low, axis=axis) + weight * np.take(values, high, axis=axis)).astype(
        np.float32)


def back_image(grad, filter: str = "raw", blur_sigma: float = NORM_BLUR_SIGMA) -> np.ndarray:
    """A backward signal at the input, (H, W, 3) RGB, rendered as the original back pane did: HxWx3 in [0, 1].

    ``raw``: ``norm01c(g, 0)`` on all channels jointly (zero is mid-grey); ``gray``: ``norm01c(mean_c g, 0)``;
    ``norm``: ``norm01(||g||_2 over channels)``; ``normblur``: that norm Gaussian-blurred (sigma 4), then norm01.
    """
    g = _np(grad)
    if g.ndim == 3 and g.shape[0] in (1, 3) and g.shape[2] not in (1, 3):
        g = g.transpose(1, 2, 0)
    if g.ndim == 2:
        g = g[:, :, None]
    if filter == "raw":
        out = norm01c(g, 0.0)
    elif filter == "gray":
        out = norm01c(g.mean(axis=2, keepdims=True), 0.0)
    elif filter == "norm":
        out = norm01(np.sqrt((g**2).sum(axis=2, keepdims=True)))
    elif filter == "normblur":
        norm = np.sqrt((g**2).sum(axis=2))
        out = norm01(gaussian_blur(norm, blur_sigma))[:, :, None]
    else:
        raise RenderError(f"unknown filter {filter!r}: use one of {', '.join(FILTERS)}")
    if out.shape[2] == 1:
        out = np.repeat(out, 3, axis=2)
    return out.astype(np.float32)


def as_maps(acts) -> np.ndarray:
    """A layer's output without batch -> (C, H, W); fully connected (C,) becomes (C, 1, 1)."""
    a = _np(acts)
    if a.ndim == 1:
        a = a[:, None, None]
    elif a.ndim == 2:
        a = a[:, None, :]
    elif a.ndim > 3:
        a = a.reshape(a.shape[0], a.shape[1], -1)
    return a


def color_diffs(diffs, negative=NEGATIVE_COLOR, positive=POSITIVE_COLOR) -> np.ndarray:
    """Signed values -> colours: ``d / max|d|``, then ``max(d,0) * positive + max(-d,0) * negative`` (..., 3)."""
    d = _np(diffs)
    d = d / (max(d.max(), -d.min()) + _EPS)
    pos, neg = np.maximum(d, 0)[..., None], np.maximum(-d, 0)[..., None]
    return pos * np.asarray(positive, np.float32) + neg * np.asarray(negative, np.float32)


def normalize_layer(acts, boost_indiv: float = 0.0, boost_gamma: float = 1.0, diffs: bool = False) -> np.ndarray:
    """A layer's channels normalized together for display: (C, H, W, 3) in [0, 1].

    One min/max over the whole layer; then ``boost_indiv = b`` multiplies each channel by ``(max_c + 1e-10)^-b``;
    then ``a^boost_gamma``. With ``diffs`` the values are first coloured red (negative) / green (positive).
    """
    a = _normalized(acts, boost_indiv, boost_gamma, diffs)
    return a if diffs else np.repeat(a, 3, axis=3)


def _normalized(acts, boost_indiv: float, boost_gamma: float, diffs: bool) -> np.ndarray:
    """:func:`normalize_layer` with one gray channel, (C, H, W, 1), unless ``diffs`` (C, H, W, 3): the live toolbox
    renders a layer on every frame, and gray values are a third of the work."""
    a = as_maps(acts)
    a = color_diffs(a) if diffs else a[..., None].astype(np.float32)
    a = a - a.min()
    a = a / (a.max() + _EPS)
    if boost_indiv > 0:
        per_channel = a.reshape(a.shape[0], -1).max(axis=1) + _EPS
        a = a * (per_channel ** -boost_indiv)[:, None, None, None]
    if boost_gamma != 1:
        a = a**boost_gamma
    return np.clip(a, 0.0, 1.0).astype(np.float32, copy=False)


def grid_shape(count: int, aspect_ratio: float = 1.0) -> tuple[int, int]:
    """(rows, cols) of the tile grid: ``cols = ceil(sqrt(count * ratio))``, ``rows = ceil(count / cols)``."""
    cols = max(1, math.ceil(math.sqrt(count * aspect_ratio)))
    return max(1, math.ceil(count / cols)), cols


@dataclass
class TileGrid:
    """A rendered grid of tiles and where each tile sits, so clicks can be mapped back to channels."""

    image: np.ndarray  # (H, W, 3) float in [0, 1]; read-only when gray (one channel seen three times)
    rows: int
    cols: int
    tile_height: int
    tile_width: int
    pad: int = 1

    @property
    def cell(self) -> tuple[int, int]:
        return self.tile_height + 2 * self.pad, self.tile_width + 2 * self.pad

    def channel_at(self, y: int, x: int) -> int | None:
        """The channel whose cell contains pixel (y, x) of the grid image, if any."""
        row, col = y // self.cell[0], x // self.cell[1]
        if 0 <= row < self.rows and 0 <= col < self.cols:
            return row * self.cols + col
        return None


def tile_layer(acts, boost_indiv: float = 0.0, boost_gamma: float = 1.0, diffs: bool = False,
               aspect_ratio: float = 1.0, highlights: Mapping[int, tuple[float, float, float]] | None = None,
               pad_color: tuple[float, float, float] | None = None, fc_tile: int = 3) -> TileGrid:
    """Every channel of a layer as a grid of tiles (the original's layers pane).

    Each tile has a 1-pixel ring (``pad_color``, or a highlight colour for channels in ``highlights``);
    fully connected layers get ``fc_tile`` x ``fc_tile`` pixel tiles. A grid that is all gray (activations, no
    highlights) is rendered in one channel: its ``image`` is then a read-only view of that channel as (H, W, 3),
    which :func:`png_bytes` writes as grayscale without looking at the pixels.
    """
    raw = _np(acts)
    pad_color = pad_color if pad_color is not None else (BACK_PAD_COLOR if diffs else PAD_COLOR)
    gray = not diffs and not highlights and pad_color[0] == pad_color[1] == pad_color[2]
    tiles = _normalized(raw, boost_indiv, boost_gamma, diffs)
    if not diffs and not gray:
        tiles = np.repeat(tiles, 3, axis=3)
    if raw.ndim == 1 and fc_tile > 1:
        tiles = np.repeat(np.repeat(tiles, fc_tile, axis=1), fc_tile, axis=2)
    count, th, tw, depth = tiles.shape
    rows, cols = grid_shape(count, aspect_ratio)
    pad = 1
    ch, cw = th + 2 * pad, tw + 2 * pad
    cells = np.empty((rows * cols, ch, cw, depth), np.float32)  # every tile in its ring, then laid out at once
    cells[:] = np.asarray(pad_color[:depth], np.float32)
    for index, color in (highlights or {}).items():
        if 0 <= index < count:
            cells[index] = np.asarray(color, np.float32)
    cells[:count, pad:pad + th, pad:pad + tw] = tiles
    canvas = cells.reshape(rows, cols, ch, cw, depth).transpose(0, 2, 1, 3, 4).reshape(rows * ch, cols * cw, depth)
    if depth == 1:
        canvas = np.broadcast_to(canvas, canvas.shape[:2] + (3,))
    return TileGrid(canvas, rows, cols, th, tw, pad)


def unit_image(acts, channel: int, boost_indiv: float = 0.0, boost_gamma: float = 1.0,
               diffs: bool = False) -> np.ndarray:
    """One channel, normalized with its layer (as in the grid), HxWx3 in [0, 1]: the enlarged selected unit."""
    return normalize_layer(acts, boost_indiv, boost_gamma, diffs)[channel]


def montage_boxes(sizes: list[tuple[int, int]], cols: int | None = None,
                  pad: int = 2) -> list[tuple[int, int, int, int]]:
    """Where :func:`montage` puts pictures of these (height, width) sizes: each one's (x, y, width, height) in the
    montage. Cells of the largest size, row-major, ``cols`` a row (square-ish by default), ``pad`` pixels apart; each
    picture at its cell's top-left."""
    if not sizes:
        raise RenderError("montage of no images")
    h, w = max(s[0] for s in sizes), max(s[1] for s in sizes)
    cols = cols or math.ceil(math.sqrt(len(sizes)))
    return [((i % cols) * (w + pad), (i // cols) * (h + pad), size[1], size[0]) for i, size in enumerate(sizes)]


def montage(images: list[np.ndarray], cols: int | None = None, pad: int = 2,
            pad_color: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """HxWx3 images in a grid (square-ish by default), separated by ``pad`` pixels (see :func:`montage_boxes`:
    pictures smaller than the largest leave ``pad_color`` around them)."""
    sizes = [tuple(image.shape[:2]) for image in images]
    boxes = montage_boxes(sizes, cols, pad)
    h, w = max(s[0] for s in sizes), max(s[1] for s in sizes)
    cols = cols or math.ceil(math.sqrt(len(sizes)))
    rows = math.ceil(len(sizes) / cols)
    canvas = np.empty((rows * h + (rows - 1) * pad, cols * w + (cols - 1) * pad, 3), np.float32)
    canvas[:] = np.asarray(pad_color, np.float32)
    for image, (x, y, width, height) in zip(images, boxes):
        canvas[y:y + height, x:x + width] = _np(image)
    return canvas


def upscale(image: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Enlarge to fit ``size`` (max side, or (H, W)) keeping the aspect ratio: nearest neighbour, crisp pixels."""
    h, w = image.shape[:2]
    target_h, target_w = (size, size) if isinstance(size, int) else size
    scale = max(1, min(target_h // h, target_w // w))
    return np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)


def jet(values) -> np.ndarray:
    """The jet colour map: values in [0, 1] (any shape) -> (..., 3) RGB in [0, 1], blue (0) to red (1)."""
    v = np.clip(np.asarray(values, dtype=np.float32), 0.0, 1.0)[..., None]
    return np.clip(1.5 - np.abs(4.0 * v - np.array([3.0, 2.0, 1.0], np.float32)), 0.0, 1.0)


def heat_overlay(image, heat, alpha: float = 0.5, scaled: bool = False) -> np.ndarray:
    """A 2-D heat map (any size: upsampled bilinearly to the HxWx3 ``image`` in [0, 1]) scaled to [0, 1]
    (:func:`norm01`, unless ``scaled``) and coloured (:func:`jet`), blended over the image:
    ``(1 - alpha) * image + alpha * colour``. HxWx3 float in [0, 1]. Attention and attribution overlays use it."""
    pixels = _np(image)
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    heat = _np(heat)
    if heat.ndim != 2:
        raise RenderError(f"a heat overlay needs a 2-D map, got shape {tuple(heat.shape)}")
    if heat.shape != pixels.shape[:2]:
        heat = resize_bilinear(heat, pixels.shape[:2])
    colour = jet(np.clip(heat, 0.0, 1.0) if scaled else norm01(heat))
    return np.clip((1.0 - alpha) * pixels[:, :, :3] + alpha * colour, 0.0, 1.0)


def to_uint8(image) -> np.ndarray:
    """Float [0, 1] -> uint8 [0, 255] (values outside are clipped)."""
    return np.clip(np.rint(_np(image) * 255.0), 0, 255).astype(np.uint8)


def to_pil(image) -> Image.Image:
    a = to_uint8(image)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    return Image.fromarray(a)


def png_bytes(image, strategy: int = zlib.Z_DEFAULT_STRATEGY, level: int = 1) -> bytes:
    """A float HxWx3 (or HxW) image in [0, 1], or one already in uint8, as an 8-bit PNG, encoded for speed: no row
    filters, zlib level 1, grayscale when the three channels are equal (a third of the data).

    Several times faster than Pillow's default (level 6, adaptive filters) for about 15% more bytes, which on
    the loopback or a LAN costs far less than the encoding time saved: the live toolbox encodes on every frame's
    path. ``strategy``: ``zlib.Z_RLE`` is faster and smaller for sparse pictures (activation grids),
    ``zlib.Z_HUFFMAN_ONLY`` for noise-like ones (backward signals). ``level``: zlib's (0: stored, for pictures
    that barely compress, e.g. a photo under a colour map). Channels that are one channel seen three times
    (``np.broadcast_to``, as :func:`tile_layer` gives gray grids) are written as grayscale without comparing them.
    """
    if isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3 and image.strides[2] == 0:
        image = image[:, :, :1]
    pixels = image if isinstance(image, np.ndarray) and image.dtype == np.uint8 else to_uint8(image)
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    elif (pixels.ndim == 3 and pixels.shape[2] == 3 and np.array_equal(pixels[:, :, 0], pixels[:, :, 1])
          and np.array_equal(pixels[:, :, 1], pixels[:, :, 2])):
        pixels = pixels[:, :, 0]
    height, width = pixels.shape[:2]
    color = 0 if pixels.ndim == 2 else 2
    rows = np.zeros((height, 1 + pixels[0].size), np.uint8)  # each row: filter type 0 (none), then the pixels
    rows[:, 1:] = pixels.reshape(height, -1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, color, 0, 0, 0)
    compressor = zlib.compressobj(level, zlib.DEFLATED, 15, 8, strategy)
    data = compressor.compress(rows.tobytes()) + compressor.flush()
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def save_image(image, path) -> None:
    """Write a float image to ``path`` atomically (format from the extension)."""
    path = Path(path)
    Image.init()
    file_format = Image.registered_extensions().get(path.suffix.lower())
    if file_format is None:
        raise ImageError(f"cannot tell an image format from the name '{path.name}': use .png, .jpg, ...")
    buffer = io.BytesIO()
    to_pil(image).save(buffer, format=file_format)
    atomic_write_bytes(path, buffer.getvalue())
