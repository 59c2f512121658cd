"""pixels.render without torch: its blur and resize give what the torch computations they replaced gave, tensors are
still accepted (duck-typed), and its errors are deepvis errors that are still ValueErrors."""

import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from deepvis.core.errors import DeepvisError, ImageError
from deepvis.pixels import render


def _torch_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """The torch gaussian blur render.py used before it went torch-free."""
    size = int(round(sigma * 8 + 1)) | 1
    half = size // 2
    coords = np.arange(size, dtype=np.float64) - half
    kernel = np.exp(-(coords**2) / (2 * sigma**2))
    kernel = torch.from_numpy((kernel / kernel.sum()).astype(np.float32))
    t = torch.from_numpy(image.astype(np.float32))[None, None]
    pad_h, pad_w = min(half, image.shape[0] - 1), min(half, image.shape[1] - 1)
    t = F.pad(t, (pad_w, pad_w, pad_h, pad_h), mode="reflect") if (pad_h or pad_w) else t
    t = F.pad(t, (half - pad_w, half - pad_w, half - pad_h, half - pad_h), mode="replicate")
    t = F.conv2d(t, kernel.view(1, 1, 1, -1))
    t = F.conv2d(t, kernel.view(1, 1, -1, 1))
    return t[0, 0].numpy()


def _torch_resize(heat: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    t = torch.from_numpy(heat.astype(np.float32))[None, None]
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False)[0, 0].numpy()


@pytest.mark.parametrize("shape,sigma", [((50, 64), 4.0), ((224, 224), 4.0), ((7, 300), 4.0), ((1, 40), 2.0),
                                         ((1, 1), 4.0), ((33, 2), 1.5), ((17, 19), 0.7)])
def test_blur_matches_the_torch_blur(shape, sigma):
    rng = np.random.default_rng(sum(shape))
    image = rng.normal(size=shape).astype(np.float32) * 3
    ours = render.gaussian_blur(image, sigma)
    assert ours.dtype == np.float32 and ours.shape == shape
    np.testing.assert_allclose(ours, _torch_blur(image, sigma), rtol=0, atol=1e-6)


@pytest.mark.parametrize("source,target", [((7, 7), (224, 224)), ((14, 14), (224, 224)), ((3, 5), (17, 40)),
                                           ((1, 1), (9, 6)), ((64, 48), (20, 30)), ((1, 12), (5, 5)),
                                           ((16, 16), (16, 33))])
def test_resize_matches_torch_bilinear(source, target):
    rng = np.random.default_rng(sum(source) + sum(target))
    heat = rng.random(source, dtype=np.float32)
    ours = render.resize_bilinear(heat, target)
    assert ours.dtype == np.float32 and ours.shape == target
    np.testing.assert_allclose(ours, _torch_resize(heat, target), rtol=0, atol=1e-6)


def test_heat_overlay_and_normblur_as_with_torch():
    rng = np.random.default_rng(3)
    image = rng.random((40, 56, 3), dtype=np.float32)
    heat = rng.random((7, 7), dtype=np.float32)
    expected = np.clip(0.5 * image + 0.5 * render.jet(render.norm01(_torch_resize(heat, (40, 56)))), 0, 1)
    np.testing.assert_allclose(render.heat_overlay(image, heat), expected, rtol=0, atol=1e-6)
    g = rng.normal(size=(3, 40, 56)).astype(np.float32)
    norm = np.sqrt((g.transpose(1, 2, 0) ** 2).sum(axis=2))
    expected = render.norm01(_torch_blur(norm, render.NORM_BLUR_SIGMA))
    # norm01 stretches the blurred norm's narrow range (about 3x here): float32 rounding differences grow with it
    np.testing.assert_allclose(render.back_image(g, "normblur")[:, :, 0], expected, rtol=0, atol=1e-5)


def test_tensors_are_accepted_as_before():
    rng = np.random.default_rng(4)
    g = rng.normal(size=(3, 20, 30)).astype(np.float32)
    for tensor in (torch.from_numpy(g), torch.from_numpy(g).requires_grad_(), torch.from_numpy(g).to(torch.bfloat16),
                   torch.from_numpy(g).double()):
        expected = render.back_image(tensor.detach().float().numpy(), "normblur")
        np.testing.assert_array_equal(render.back_image(tensor, "normblur"), expected)
    heat = torch.from_numpy(rng.random((5, 5), dtype=np.float32))
    image = rng.random((20, 30, 3), dtype=np.float32)
    np.testing.assert_array_equal(render.heat_overlay(torch.from_numpy(image), heat),
                                  render.heat_overlay(image, heat.numpy()))
    np.testing.assert_array_equal(render.gaussian_blur(heat, 1.0), render.gaussian_blur(heat.numpy(), 1.0))


def test_render_errors_are_deepvis_errors(tmp_path):
    image = np.zeros((4, 4, 3), np.float32)
    for call in (lambda: render.back_image(image, "blurry"), lambda: render.montage([]),
                 lambda: render.heat_overlay(image, np.zeros((2, 2, 2)))):
        with pytest.raises(DeepvisError) as caught:
            call()
        assert isinstance(caught.value, ValueError)  # as they were before
    with pytest.raises(ImageError, match="cannot tell an image format"):
        render.save_image(image, tmp_path / "picture.unknown")


def test_pixels_imports_no_torch():
    code = ("import sys; import deepvis.pixels.render, deepvis.pixels.images; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
