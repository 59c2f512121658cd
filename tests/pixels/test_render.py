"""Rendering formulas of the original toolbox, checked on small arrays against hand values and SciPy."""

import numpy as np
import pytest
from PIL import Image

from deepvis.pixels import render


def test_norm01_and_norm01c():
    assert np.allclose(render.norm01([1.0, 2.0, 3.0]), [0.0, 0.5, 1.0])
    # (x - 0) / max(2 * 1, -2 * -2) + 0.5
    assert np.allclose(render.norm01c([-2.0, 0.0, 1.0], 0.0), [0.0, 0.5, 0.75])
    assert np.allclose(render.norm01c([3.0, 4.5], 4.0), [0.0, 0.75])  # [-1, .5] / max(1, 2) + .5


def test_back_filters():
    rng = np.random.default_rng(0)
    g = rng.normal(size=(20, 30, 3)).astype(np.float32)
    raw = render.back_image(g, "raw")
    assert raw.shape == (20, 30, 3)
    assert np.allclose(raw, render.norm01c(g, 0.0))
    gray = render.back_image(g, "gray")
    assert np.allclose(gray[:, :, 0], render.norm01c(g.mean(axis=2), 0.0)) and np.allclose(gray[..., 0], gray[..., 2])
    norm = render.back_image(g, "norm")[:, :, 0]
    length = np.sqrt((g**2).sum(axis=2))
    assert np.allclose(norm, (length - length.min()) / (length.max() - length.min()), atol=1e-6)
    # channels-first input (as torch gives it) is accepted too
    assert np.allclose(render.back_image(g.transpose(2, 0, 1), "raw"), raw)
    with pytest.raises(ValueError, match="unknown filter 'blurry'"):
        render.back_image(g, "blurry")


def test_normblur_matches_scipy_gaussian():
    ndimage = pytest.importorskip("scipy.ndimage")
    rng = np.random.default_rng(1)
    g = rng.normal(size=(50, 64, 3)).astype(np.float32)
    length = np.sqrt((g**2).sum(axis=2))
    # OpenCV's kernel for sigma 4 on float images spans 33 pixels (radius 4 sigma) with reflect-101 borders
    expected = ndimage.gaussian_filter(length.astype(np.float64), 4.0, mode="mirror", truncate=4.0)
    blurred = render.gaussian_blur(length, 4.0)
    assert np.allclose(blurred, expected, atol=1e-5)
    out = render.back_image(g, "normblur")[:, :, 0]
    assert np.allclose(out, render.norm01(expected), atol=1e-5)


def test_normalize_layer_global_then_boosts():
    acts = np.stack([np.full((2, 2), 1.0), np.full((2, 2), 3.0), np.array([[0.0, 5.0], [2.0, 1.0]])])
    plain = render.normalize_layer(acts)[..., 0]
    assert np.allclose(plain, acts / 5.0)  # one min/max over the whole layer
    boosted = render.normalize_layer(acts, boost_indiv=1.0)[..., 0]
    assert np.allclose(boosted.reshape(3, -1).max(axis=1), 1.0, atol=1e-6)  # b=1 stretches every channel
    half = render.normalize_layer(acts, boost_indiv=0.5)[..., 0]
    assert np.allclose(half[0].max(), (1 / 5.0) ** 0.5, atol=1e-6)  # new max = old max ^ (1 - b)
    gamma = render.normalize_layer(acts, boost_gamma=0.5)[..., 0]
    assert np.allclose(gamma, (acts / 5.0) ** 0.5, atol=1e-6)


def test_color_diffs_red_negative_green_positive():
    colours = render.color_diffs(np.array([-2.0, 0.0, 1.0]))
    assert np.allclose(colours, [[1.0, 0, 0], [0, 0, 0], [0, 0.5, 0]])


@pytest.mark.parametrize("channels, rows, cols", [(96, 10, 10), (384, 20, 20), (1000, 32, 32), (3, 2, 2), (1, 1, 1)])
def test_grid_shape_matches_original(channels, rows, cols):
    assert render.grid_shape(channels) == (rows, cols)


def test_tile_layer_layout_highlights_and_fc_tiles():
    acts = np.arange(5 * 4 * 6, dtype=np.float32).reshape(5, 4, 6)
    grid = render.tile_layer(acts, highlights={3: render.SELECTED_COLOR})
    assert (grid.rows, grid.cols) == (2, 3)
    assert grid.image.shape == (2 * 6, 3 * 8, 3)
    # channel 3 sits at row 1, col 0; its ring has the highlight colour, its inside the normalized map
    cell = grid.image[6:12, 0:8]
    assert np.allclose(cell[0, 0], render.SELECTED_COLOR) and np.allclose(cell[-1, -1], render.SELECTED_COLOR)
    assert np.allclose(cell[1:-1, 1:-1, 0], acts[3] / acts.max())
    assert np.allclose(grid.image[0, 0], render.PAD_COLOR)
    assert grid.channel_at(7, 2) == 3 and grid.channel_at(1, 17) == 2 and grid.channel_at(100, 0) is None
    fc = render.tile_layer(np.linspace(-1, 1, 10))
    assert (fc.tile_height, fc.tile_width) == (3, 3) and (fc.rows, fc.cols) == (3, 4)
    back = render.tile_layer(acts - 50, diffs=True)
    assert np.allclose(back.image[0, 0], render.BACK_PAD_COLOR)


def test_montage_upscale_and_png(tmp_path):
    images = [np.full((4, 5, 3), v, np.float32) for v in (0.0, 0.5, 1.0)]
    m = render.montage(images, pad=1)
    assert m.shape == (2 * 4 + 1, 2 * 5 + 1, 3)
    assert np.allclose(m[0, 6], 0.5) and np.allclose(m[5, 0], 1.0)
    big = render.upscale(images[1], 20)
    assert big.shape == (16, 20, 3)
    path = tmp_path / "sub" / "x.png"
    render.save_image(m, path)
    back = np.asarray(Image.open(path))
    assert back.shape == (9, 11, 3) and back[0, 6, 0] == 128
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind
    assert render.png_bytes(m)[:8] == b"\x89PNG\r\n\x1a\n"
