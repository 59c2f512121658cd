"""The paper's pixel space: 0-255 values minus the dataset mean, in the model's channel order.

The original optimized Caffe's data blob directly (BGR, 0-255, mean subtracted), so its hyperparameters (learning
rates of 100, blur radii in pixels, percentiles) assume that space. Every model's preprocessing is affine per
channel, ``input = a * pixels01 + b``, so ``x = 255 * pixels01 - mean255`` maps to ``input = x * a / 255`` exactly:
the paper's settings carry over to any model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from deepvis.models.model import Model
from deepvis.pixels.render import norm01c


@dataclass
class PixelSpace:
    """``scale`` and ``mean`` are (C, H, W): model input = ``x * scale``; valid ``x`` lies in [-mean, 255 - mean]."""

    scale: torch.Tensor
    mean: torch.Tensor
    model: Model

    def to_input(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale

    def clip(self, x: torch.Tensor) -> torch.Tensor:
        """The original's ``min(255, max(0, x + mean)) - mean``."""
        return (x + self.mean).clamp(0.0, 255.0) - self.mean

    def to_rgb01(self, x: torch.Tensor) -> np.ndarray:
        """(C, H, W) pixel-space image -> (H, W, 3) RGB in [0, 1], the mean added back (what the network sees)."""
        pixels = ((x.detach() + self.mean) / 255.0).clamp(0.0, 1.0)
        return self.model.preprocessing.to_rgb(pixels).permute(1, 2, 0).float().cpu().numpy()

    def to_display(self, x: torch.Tensor) -> np.ndarray:
        """(C, H, W) pixel-space image -> (H, W, 3) RGB in [0, 1] stretched symmetrically around the mean (grey),
        as the original saved its ``best_X`` pictures: faint patterns become visible."""
        rgb = self.model.preprocessing.to_rgb(x.detach()).permute(1, 2, 0).float().cpu().numpy()
        return norm01c(rgb, 0.0)

    def from_rgb01(self, rgb: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) RGB in [0, 1] -> pixel space (to measure a saved image in the same terms)."""
        return self.model.preprocessing.from_rgb(rgb) * 255.0 - self.mean


def pixel_space(model: Model) -> PixelSpace:
    """The affine map between the paper's pixel space and the model's input, read off the preprocessing itself
    (in the model's floating-point type: a ``double()`` model optimizes in float64)."""
    pre = model.preprocessing
    height, width = pre.input_size
    dtype = next((p.dtype for p in model.net.parameters() if p.is_floating_point()), torch.float32)
    zero = pre.normalize(torch.zeros(3, height, width, device=model.device, dtype=dtype))
    one = pre.normalize(torch.ones(3, height, width, device=model.device, dtype=dtype))
    slope = one - zero  # a: the input change of one full pixel step
    return PixelSpace(scale=slope / 255.0, mean=-zero / slope * 255.0, model=model)
