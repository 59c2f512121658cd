"""The paper's image regularizers and learning-rate policies, on batches: each image gets its own percentiles,
learning rate and blur, so a batch of units behaves exactly like the same units optimized one by one.

Tensors are (N, C, H, W) in the paper's pixel space; ``grad`` is the objective's gradient there.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _percentile(values: torch.Tensor, percent: float) -> torch.Tensor:
    """Per-image percentile of (N, ...) values with NumPy's default (linear) interpolation, shaped (N, 1, ...)."""
    flat = values.reshape(values.shape[0], -1)
    q = torch.quantile(flat.double(), percent / 100.0, dim=1)
    return q.to(values.dtype).view(-1, *([1] * (values.dim() - 1)))


def decay(x: torch.Tensor, amount: float) -> torch.Tensor:
    """L2 decay: ``x * (1 - amount)``."""
    return x * (1.0 - amount)


def _symmetric_indices(length: int, radius: int, device) -> torch.Tensor:
    """Indices of a 'reflect' (half-sample symmetric, ``d c b a | a b c d``) padding by ``radius``, any length."""
    index = torch.arange(-radius, length + radius, device=device) % (2 * length)
    return torch.where(index >= length, 2 * length - 1 - index, index)


def gaussian_blur(x: torch.Tensor, sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """Gaussian blur of every channel with SciPy's ``gaussian_filter`` conventions (radius ``int(truncate sigma +
    0.5)``, 'reflect' borders), which the original used."""
    radius = int(truncate * sigma + 0.5)
    if sigma <= 0 or radius == 0:
        return x.clone()
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64, device=x.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(x.dtype)
    n, c, h, w = x.shape
    flat = x.reshape(n * c, 1, h, w)
    flat = flat.index_select(2, _symmetric_indices(h, radius, x.device))
    flat = F.conv2d(flat, kernel.view(1, 1, -1, 1))
    flat = flat.index_select(3, _symmetric_indices(w, radius, x.device))
    flat = F.conv2d(flat, kernel.view(1, 1, 1, -1))
    return flat.reshape(n, c, h, w)


def zero_small_values(x: torch.Tensor, percent: float) -> torch.Tensor:
    """Zero every element whose magnitude is below the image's ``percent``-th percentile of magnitudes."""
    magnitude = x.abs()
    return torch.where(magnitude < _percentile(magnitude, percent), torch.zeros_like(x), x)


def _zero_pixels(x: torch.Tensor, score: torch.Tensor, percent: float) -> torch.Tensor:
    """Zero whole pixels (all channels) whose (N, H, W) score is below the image's ``percent``-th percentile."""
    small = (score < _percentile(score, percent)).unsqueeze(1)
    return torch.where(small, torch.zeros_like(x), x)


def zero_small_norms(x: torch.Tensor, percent: float) -> torch.Tensor:
    """Zero pixels whose colour vector's L2 norm is below the ``percent``-th percentile."""
    return _zero_pixels(x, x.norm(dim=1), percent)


def pixel_benefit(x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Predicted gain in the objective from setting each pixel to zero (first order): ``sum_c grad * -x``."""
    return (grad * -x).sum(dim=1)


def zero_small_benefit(x: torch.Tensor, grad: torch.Tensor, percent: float) -> torch.Tensor:
    """Zero pixels whose benefit (:func:`pixel_benefit`) is below the ``percent``-th percentile."""
    return _zero_pixels(x, pixel_benefit(x, grad), percent)


def zero_small_abs_benefit(x: torch.Tensor, grad: torch.Tensor, percent: float) -> torch.Tensor:
    """Zero pixels whose absolute benefit (the paper's contribution) is below the ``percent``-th percentile."""
    return _zero_pixels(x, pixel_benefit(x, grad).abs(), percent)


def learning_rate(policy: str, params: dict, grad_sq_norm: torch.Tensor, objective: torch.Tensor) -> torch.Tensor:
    """Per-image step size of the original's policies.

    ``constant``: ``lr``; ``progress``: ``min(max_lr, desired_prog / |g|^2)`` (a linear prediction of progress
    ``lr |g|^2`` equal to ``desired_prog``); ``progress01`` (outputs in [0, 1]): the desired progress is
    ``min(early_prog, late_prog_mult * (1 - objective))``.
    """
    if policy == "constant":
        return torch.full_like(grad_sq_norm, float(params["lr"]))
    if policy == "progress":
        desired = torch.full_like(grad_sq_norm, float(params["desired_prog"]))
    elif policy == "progress01":
        desired = torch.minimum(torch.full_like(objective, float(params["early_prog"])),
                                float(params["late_prog_mult"]) * (1.0 - objective))
    else:
        raise ValueError(f"unknown lr policy {policy!r}")
    with torch.no_grad():
        wanted = desired / grad_sq_norm
    return torch.clamp(wanted, max=float(params["max_lr"])).nan_to_num(nan=0.0, posinf=math.inf)
