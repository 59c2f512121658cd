"""deepvis.pixels.images: every common format and mode converts correctly to 8-bit RGB; bad input gets a clear
one-line ImageError naming the file. Expected pixels are computed from the data written, never hard-coded."""

from __future__ import annotations

import io
import os
import struct
import time
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

import deepvis
from deepvis.core.errors import ImageError
from deepvis.pixels.images import load_image

RNG_SEED = 1234

pytestmark = pytest.mark.usefixtures("single_thread_torch")


# ---------------------------------------------------------------------------------------------- helpers

def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bytes(array: np.ndarray, bit_depth: int, color_type: int) -> bytes:
    """A PNG written by hand, for what Pillow cannot write (16-bit RGB, RGBA and gray+alpha).

    Rows cycle through the None, Sub and Up filters, so decoding exercises the pixel size in bytes.
    """
    height, width = array.shape[:2]
    rows = np.ascontiguousarray(array.astype(">u2" if bit_depth == 16 else "u1")).view(np.uint8).reshape(height, -1)
    bpp = rows.shape[1] // width
    raw = bytearray()
    for y, row in enumerate(rows.astype(np.int32)):
        kind = y % 3
        if kind == 1:  # Sub: minus the byte one pixel to the left
            row = row - np.concatenate([np.zeros(bpp, np.int32), row[:-bpp]])
        elif kind == 2:  # Up: minus the byte above
            row = row - rows[y - 1].astype(np.int32)
        raw += bytes([kind]) + (row % 256).astype(np.uint8).tobytes()
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(bytes(raw)))
            + _chunk(b"IEND", b""))


def declared_size_png(width: int, height: int) -> bytes:
    """A tiny real PNG whose IHDR is patched to declare ``width`` x ``height`` (CRC fixed), never allocated."""
    buffer = io.BytesIO()
    Image.new("RGB", (2, 2), (10, 20, 30)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def declared_size_jpeg(width: int, height: int) -> bytes:
    """A tiny real JPEG whose SOF0 segment is patched to declare ``width`` x ``height``."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def jpeg_bytes(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", **kwargs)
    return buffer.getvalue()


def over_white(color: np.ndarray, alpha: np.ndarray, full: float) -> np.ndarray:
    """The 8-bit result of compositing ``color`` with ``alpha`` (both in 0..full) over white."""
    c, a = color.astype(np.float64) / full, alpha.astype(np.float64) / full
    return np.rint((c * a + (1.0 - a)) * 255.0)


def gray3(array: np.ndarray) -> np.ndarray:
    return np.repeat(np.asarray(array)[..., None], 3, axis=-1)


def as_array(image: Image.Image) -> np.ndarray:
    assert image.mode == "RGB"
    return np.asarray(image)


def assert_one_line_error(excinfo, *names: str) -> None:
    message = str(excinfo.value)
    assert "\n" not in message and "\r" not in message, message
    assert message.strip() == message and message, message
    for name in names:
        assert name in message, f"{name!r} not in {message!r}"


# ----------------------------------------------------------------------------------------- valid images
# Each builder writes a file into ``tmp_path`` and returns (path, expected 8-bit RGB array, tolerance).

def _gray_png(tmp_path):
    a = np.arange(12 * 16, dtype=np.uint8).reshape(12, 16)
    path = tmp_path / "gray.png"
    Image.fromarray(a, "L").save(path)
    return path, gray3(a), 0


def _gray_jpeg(tmp_path):
    path = tmp_path / "gray.jpg"
    path.write_bytes(jpeg_bytes(Image.fromarray(np.arange(64 * 48, dtype=np.uint8).reshape(48, 64) % 200, "L")))
    with Image.open(path) as image:
        assert image.mode == "L"
        expected = np.asarray(image.convert("RGB"))
    return path, expected, 0


def _bilevel_png(tmp_path):
    a = (np.indices((10, 14)).sum(axis=0) % 2).astype(bool)
    path = tmp_path / "bilevel.png"
    Image.fromarray(a).save(path)
    with Image.open(path) as image:
        assert image.mode == "1"
    return path, gray3(a.astype(np.uint8) * 255), 0


def _gray16_png(tmp_path):
    a = np.linspace(0, 65535, 24 * 32).round().astype(np.uint16).reshape(24, 32)
    path = tmp_path / "gray16.png"
    Image.fromarray(a).save(path)
    assert path.read_bytes()[24] == 16  # IHDR bit depth: really a 16-bit file
    expected = np.rint(a / 257.0)
    assert (expected != a >> 8).any()  # the test tells scaling from dropping the low byte
    return path, gray3(expected), 0


def _gray16_tiff(tmp_path):
    a = np.linspace(0, 65535, 8 * 20).round().astype(np.uint16).reshape(8, 20)
    path = tmp_path / "gray16.tif"
    Image.fromarray(a).save(path)
    with Image.open(path) as image:
        assert image.mode.startswith("I;16")
    return path, gray3(np.rint(a / 257.0)), 0


def _rgb16_png(tmp_path):
    a = np.random.default_rng(RNG_SEED).integers(0, 65536, (20, 24, 3), dtype=np.uint16)
    a[0, 0] = (0, 65535, 128)
    path = tmp_path / "rgb16.png"
    path.write_bytes(png_bytes(a, 16, 2))
    # Pillow keeps the high byte of 16-bit colour samples: within 1 of the exact a / 257
    return path, np.rint(a / 257.0), 1


def _rgba16_png(tmp_path):
    a = np.random.default_rng(RNG_SEED).integers(0, 65536, (20, 24, 4), dtype=np.uint16)
    a[0, :3, 3] = (0, 65535, 32768)
    path = tmp_path / "rgba16.png"
    path.write_bytes(png_bytes(a, 16, 6))
    return path, over_white(a[..., :3], a[..., 3:], 65535.0), 2


def _gray_alpha16_png(tmp_path):
    a = np.random.default_rng(RNG_SEED).integers(0, 65536, (10, 12, 2), dtype=np.uint16)
    a[0, :2, 1] = (0, 65535)
    path = tmp_path / "la16.png"
    path.write_bytes(png_bytes(a, 16, 4))
    return path, gray3(over_white(a[..., 0], a[..., 1], 65535.0)), 2


def _rgba_png(tmp_path):
    a = np.random.default_rng(RNG_SEED).integers(0, 256, (16, 20, 4), dtype=np.uint8)
    a[0, :3, 3] = (0, 255, 128)
    path = tmp_path / "rgba.png"
    Image.fromarray(a, "RGBA").save(path)
    return path, over_white(a[..., :3], a[..., 3:], 255.0), 1


def _gray_alpha_png(tmp_path):
    a = np.random.default_rng(RNG_SEED).integers(0, 256, (16, 20, 2), dtype=np.uint8)
    a[0, :2, 1] = (0, 255)
    path = tmp_path / "la.png"
    Image.fromarray(a, "LA").save(path)
    with Image.open(path) as image:
        assert image.mode == "LA"
    return path, gray3(over_white(a[..., 0], a[..., 1], 255.0)), 1


def _palette(tmp_path, name, transparency):
    palette = np.array([[200, 10, 10], [10, 200, 10], [10, 10, 200], [90, 90, 90]], dtype=np.uint8)
    indices = (np.arange(12 * 16).reshape(12, 16) % 4).astype(np.uint8)
    image = Image.fromarray(indices, "P")
    image.putpalette(palette.ravel().tolist())
    path = tmp_path / name
    image.save(path, transparency=transparency)
    with Image.open(path) as reopened:
        assert reopened.mode == "P" and "transparency" in reopened.info
    alpha = np.full(4, 255) if isinstance(transparency, bytes) else np.where(np.arange(4) == transparency, 0, 255)
    if isinstance(transparency, bytes):
        alpha[:len(transparency)] = list(transparency)
    return path, over_white(palette[indices], alpha[indices][..., None], 255.0), 1


def _palette_transparent_index(tmp_path):
    return _palette(tmp_path, "palette_key.png", 2)


def _palette_alpha_table(tmp_path):
    return _palette(tmp_path, "palette_trns.png", bytes([0, 128, 255, 40]))


def _rgb_color_key(tmp_path):
    a = np.random.default_rng(RNG_SEED).integers(0, 256, (10, 12, 3), dtype=np.uint8)
    key = (1, 2, 3)
    a[::2, ::3] = key
    path = tmp_path / "rgb_key.png"
    Image.fromarray(a).save(path, transparency=key)
    expected = a.copy()
    expected[(a == key).all(axis=-1)] = 255
    return path, expected, 0


def _cmyk_jpeg(tmp_path):
    yy, xx = np.mgrid[0:48, 0:64]
    cmyk = np.stack([xx * 4, yy * 5, (xx + yy) * 2, np.full_like(xx, 30)], axis=-1).astype(np.uint8)
    path = tmp_path / "cmyk.jpg"
    path.write_bytes(jpeg_bytes(Image.fromarray(cmyk, "CMYK"), quality=95))
    with Image.open(path) as image:
        assert image.mode == "CMYK"
        expected = np.asarray(image.convert("RGB"))  # Pillow's own conversion of the same content
    return path, expected, 0


def _float_tiff(tmp_path):
    f = np.linspace(0.0, 1.0, 10 * 16, dtype=np.float32).reshape(10, 16)
    path = tmp_path / "float.tif"
    Image.fromarray(f, "F").save(path)
    with Image.open(path) as image:
        assert image.mode == "F"
    return path, gray3(np.rint(f.astype(np.float64) * 255.0)), 0


def _float_tiff_wide_range(tmp_path):
    f = np.linspace(-3.0, 500.0, 10 * 16, dtype=np.float32).reshape(10, 16)
    path = tmp_path / "float_wide.tif"
    Image.fromarray(f, "F").save(path)
    g = f.astype(np.float64)
    return path, gray3(np.rint((g - g.min()) / (g.max() - g.min()) * 255.0)), 1  # min-max stretched


def _one_pixel_png(tmp_path):
    path = tmp_path / "one.png"
    Image.new("RGB", (1, 1), (12, 34, 56)).save(path)
    return path, np.array([[[12, 34, 56]]]), 0


def _exif_rotated_jpeg(orientation: int, turns: int):
    def build(tmp_path):
        yy, xx = np.mgrid[0:24, 0:40]
        a = np.stack([xx * 6, yy * 10, np.where(xx < 8, 250, 20)], axis=-1).astype(np.uint8)
        exif = Image.Exif()
        exif[0x0112] = orientation
        path = tmp_path / f"exif{orientation}.jpg"
        path.write_bytes(jpeg_bytes(Image.fromarray(a), quality=95, exif=exif))
        with Image.open(path) as image:
            assert image.getexif()[0x0112] == orientation
            stored = np.asarray(image.convert("RGB"))
        return path, np.rot90(stored, turns), 0  # as displayed: the stored pixels turned by the tag
    return build


def _animated_gif(tmp_path):
    frames = [Image.new("RGB", (12, 10), color) for color in [(255, 0, 0), (0, 0, 255), (0, 255, 0)]]
    path = tmp_path / "animated.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    with Image.open(path) as image:
        assert image.n_frames == 3
    return path, np.asarray(frames[0]), 0


VALID = {
    "gray_png": _gray_png,
    "gray_jpeg": _gray_jpeg,
    "bilevel_png": _bilevel_png,
    "gray16_png": _gray16_png,
    "gray16_tiff": _gray16_tiff,
    "rgb16_png": _rgb16_png,
    "rgba16_png": _rgba16_png,
    "gray_alpha16_png": _gray_alpha16_png,
    "rgba_png": _rgba_png,
    "gray_alpha_png": _gray_alpha_png,
    "palette_transparent_index": _palette_transparent_index,
    "palette_alpha_table": _palette_alpha_table,
    "rgb_color_key": _rgb_color_key,
    "cmyk_jpeg": _cmyk_jpeg,
    "float_tiff": _float_tiff,
    "float_tiff_wide_range": _float_tiff_wide_range,
    "one_pixel": _one_pixel_png,
    "exif_rotate_180": _exif_rotated_jpeg(3, 2),
    "exif_rotate_90_cw": _exif_rotated_jpeg(6, -1),
    "exif_rotate_90_ccw": _exif_rotated_jpeg(8, 1),
    "animated_gif_first_frame": _animated_gif,
}


@pytest.mark.parametrize("kind", list(VALID))
def test_valid_image_converts_to_8bit_rgb(tmp_path, kind):
    path, expected, tolerance = VALID[kind](tmp_path)
    got = as_array(load_image(path))
    assert got.dtype == np.uint8
    assert got.shape == expected.shape
    diff = np.abs(got.astype(np.int64) - np.asarray(expected).astype(np.int64))
    assert diff.max() <= tolerance, f"{kind}: max difference {diff.max()} at {np.unravel_index(diff.argmax(), diff.shape)}"


@pytest.mark.parametrize("kind", list(VALID))
def test_predict_runs_on_valid_image(tmp_path, model, kind):
    path, _, _ = VALID[kind](tmp_path)
    top = deepvis.predict(model, path)
    assert len(top) == 5
    probs = [p.prob for p in top]
    assert all(0.0 <= p <= 1.0 for p in probs) and probs == sorted(probs, reverse=True)
    assert all(isinstance(p.label, str) and p.label for p in top)


def test_bytes_decode_like_the_file(tmp_path):
    path, expected, _ = _rgb16_png(tmp_path)
    assert np.array_equal(as_array(load_image(path.read_bytes())), as_array(load_image(path)))
    assert np.abs(as_array(load_image(str(path))).astype(int) - expected).max() <= 1


# ------------------------------------------------------------------------------------------ bad files

def _text_as_jpeg(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a picture\n")
    return path


def _empty(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    return path


def _directory(tmp_path):
    path = tmp_path / "folder.jpg"
    path.mkdir()
    return path


def _missing(tmp_path):
    return tmp_path / "missing.png"


def _truncated_jpeg(tmp_path):
    noise = np.random.default_rng(RNG_SEED).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = jpeg_bytes(Image.fromarray(noise))
    path = tmp_path / "truncated.jpg"
    path.write_bytes(data[:len(data) // 2])
    return path


def _truncated_png(tmp_path):
    noise = np.random.default_rng(RNG_SEED).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, "PNG")
    path = tmp_path / "truncated.png"
    path.write_bytes(buffer.getvalue()[:len(buffer.getvalue()) // 2])
    return path


def _garbage_after_header(tmp_path):
    path = tmp_path / "garbage.png"
    path.write_bytes(declared_size_png(4, 4)[:33] + bytes(range(256)) * 2)
    return path


def _control_characters_in_name(tmp_path):
    path = tmp_path / "bad\nname.jpg"
    path.write_text("not an image")
    return path


BAD = {
    "text_named_jpg": _text_as_jpeg,
    "empty_file": _empty,
    "directory": _directory,
    "missing_file": _missing,
    "truncated_jpeg": _truncated_jpeg,
    "truncated_png": _truncated_png,
    "garbage_after_png_header": _garbage_after_header,
}


@pytest.mark.parametrize("kind", list(BAD))
def test_bad_file_gets_one_line_error_naming_it(tmp_path, kind):
    path = BAD[kind](tmp_path)
    with pytest.raises(ImageError) as excinfo:
        load_image(path)
    assert_one_line_error(excinfo, str(path))


def test_bad_file_through_predict_is_an_image_error(tmp_path, model):
    path = _truncated_jpeg(tmp_path)
    with pytest.raises(ImageError) as excinfo:
        deepvis.predict(model, path)
    assert_one_line_error(excinfo, str(path))


def test_control_characters_in_a_file_name_stay_on_one_line(tmp_path):
    path = _control_characters_in_name(tmp_path)
    with pytest.raises(ImageError) as excinfo:
        load_image(path)
    assert_one_line_error(excinfo, "bad\\nname.jpg")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root reads files whatever their permissions")
def test_unreadable_file(tmp_path):
    path = tmp_path / "locked.png"
    Image.new("RGB", (4, 4)).save(path)
    path.chmod(0)
    try:
        with pytest.raises(ImageError) as excinfo:
            load_image(path)
        assert_one_line_error(excinfo, str(path))
    finally:
        path.chmod(0o644)


@pytest.mark.parametrize("width,height,kind", [
    (20000, 20000, "png"),   # over Pillow's own decompression-bomb limit
    (10000, 10000, "png"),   # between Pillow's warning and error limits
    (9000, 9000, "png"),     # under Pillow's limits, over deepvis's 40 megapixels
    (20000, 20000, "jpeg"),
])
def test_decompression_bomb_refused_fast_without_decoding(tmp_path, width, height, kind):
    path = tmp_path / f"bomb.{kind}"
    path.write_bytes(declared_size_png(width, height) if kind == "png" else declared_size_jpeg(width, height))
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ImageError) as excinfo:
            load_image(path)
    assert time.perf_counter() - start < 1.0
    assert_one_line_error(excinfo, str(path), f"{width * height:,}")
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]


def test_max_pixels_limit_names_the_size(tmp_path):
    path = tmp_path / "big.png"
    Image.new("RGB", (100, 80)).save(path)
    with pytest.raises(ImageError) as excinfo:
        load_image(path, max_pixels=1000)
    assert_one_line_error(excinfo, str(path), "100x80", "1,000")
    assert load_image(path, max_pixels=8000).size == (100, 80)


def test_bad_bytes_and_source_types():
    with pytest.raises(ImageError) as excinfo:
        load_image(b"GIF89a not really")
    assert_one_line_error(excinfo, "<17 bytes>")
    with pytest.raises(ImageError) as excinfo:
        load_image(b"")
    assert_one_line_error(excinfo, "empty")
    with pytest.raises(ImageError) as excinfo:
        load_image(12345)
    assert_one_line_error(excinfo, "int")


# ------------------------------------------------------------------------------- arrays and PIL images

def test_uint8_rgba_array_composited_over_white_not_stretched():
    a = np.random.default_rng(RNG_SEED).integers(40, 200, (6, 7, 4), dtype=np.uint8)
    a[..., 3] = 255
    a[0, 0, 3] = 0
    got = as_array(load_image(a))
    assert np.abs(got.astype(int) - over_white(a[..., :3], a[..., 3:], 255.0)).max() <= 1
    assert np.array_equal(got[1:], a[1:, :, :3])


def test_uint16_rgba_array_alpha_uses_the_full_16_bit_range():
    a = np.random.default_rng(RNG_SEED).integers(0, 65536, (6, 7, 4), dtype=np.uint16)
    a[..., 3] = 32768  # about half transparent everywhere, even though it is the array's largest alpha
    got = as_array(load_image(a))
    assert np.abs(got.astype(int) - over_white(a[..., :3], a[..., 3:], 65535.0)).max() <= 1


@pytest.mark.parametrize("dtype", ["<u2", ">u2"])
def test_dark_16_bit_array_scaled_by_257_in_either_byte_order(dtype):
    a = np.arange(0, 6 * 8 * 5, 5).reshape(6, 8).astype(dtype)  # all values under 256: still 16-bit data
    assert np.array_equal(as_array(load_image(a)), gray3(np.rint(a.astype(np.float64) / 257.0)))


def test_float_bool_and_single_channel_arrays():
    f = np.linspace(0, 1, 20).reshape(4, 5)
    assert np.array_equal(as_array(load_image(f)), gray3(np.rint(f * 255)))
    assert np.array_equal(as_array(load_image(f[..., None])), gray3(np.rint(f * 255)))
    b = np.eye(4, dtype=bool)
    assert np.array_equal(as_array(load_image(b)), gray3(b.astype(np.uint8) * 255))
    with_nan = f.copy()
    with_nan[0, 0], with_nan[0, 1] = np.nan, np.inf
    assert as_array(load_image(with_nan)).shape == (4, 5, 3)


@pytest.mark.parametrize("array", [np.zeros(5), np.zeros((4, 4, 2)), np.zeros((2, 2, 2, 2)),
                                   np.zeros((4, 4), dtype=complex), np.full((4, 4), "x", dtype=object)],
                         ids=["1d", "two_channels", "4d", "complex", "object"])
def test_bad_arrays_get_an_image_error(array):
    with pytest.raises(ImageError) as excinfo:
        load_image(array)
    assert_one_line_error(excinfo)


def test_array_over_the_pixel_limit_refused():
    with pytest.raises(ImageError) as excinfo:
        load_image(np.zeros((30, 40), np.uint8), max_pixels=100)
    assert_one_line_error(excinfo, "40x30")


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "YCbCr", "LAB", "HSV", "RGBX", "I;16", "I", "F", "RGBA", "LA"])
def test_pil_images_of_any_mode(mode):
    image = Image.new(mode, (5, 3))
    got = load_image(image)
    assert got.mode == "RGB" and got.size == (5, 3)
