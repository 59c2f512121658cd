"""``Pooling`` with Caffe's output size (rounded up, a last window starting in the padding dropped) and its
average over the window clipped to the padded image."""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from deepvis.models.caffe.layers.base import CaffeLayer, Shape, check_spatial, pair
from deepvis.models.caffe.message import Message


def pooled_size(size: int, kernel: int, stride: int, pad: int, padded: bool) -> int:
    """Caffe's pooling output size: rounded up, minus a last window that would start past the image plus its
    padding (a check Caffe makes on both axes when either is padded)."""
    out = -(-(size + 2 * pad - kernel) // stride) + 1
    if padded and (out - 1) * stride >= size + pad:
        out -= 1
    return out


class Pooling(CaffeLayer):
    """MAX or AVE pooling with Caffe's output size; AVE divides by the window clipped to the padded image."""

    def __init__(self, name: str, param: Message, shapes: Sequence[Shape]):
        super().__init__(name, "Pooling")
        check_spatial(shapes[0], param)
        self.method = param.enum("pool", {"MAX": 0, "AVE": 1, "STOCHASTIC": 2}, "MAX")
        if self.method == "STOCHASTIC":
            raise param.error("STOCHASTIC pooling is not supported")
        self.global_pooling = param.bool("global_pooling", False)
        self.kernel = shapes[0][2:] if self.global_pooling else pair(param, "kernel", None)
        self.stride = (1, 1) if self.global_pooling else pair(param, "stride", 1)
        self.pad = (0, 0) if self.global_pooling else pair(param, "pad", 0)
        if any(p >= k for p, k in zip(self.pad, self.kernel)):
            raise param.error(f"pad {self.pad} must be smaller than kernel {self.kernel}")
        sizes = self._sizes(shapes[0][2:], self.kernel, pooled_size)
        if min(sizes) < 1:
            raise param.error(f"kernel {self.kernel} is larger than the padded input {shapes[0][2:]}")

    def compute(self, x: torch.Tensor) -> torch.Tensor:
        kernel = tuple(x.shape[2:]) if self.global_pooling else self.kernel
        out = self._sizes(x.shape[2:], kernel, pooled_size)
        native = self._sizes(x.shape[2:], kernel, pooled_size_torch)
        if out == native and all(2 * p <= k for p, k in zip(self.pad, kernel)):
            if self.method == "MAX":
                return F.max_pool2d(x, kernel, self.stride, self.pad, ceil_mode=True)
            return F.avg_pool2d(x, kernel, self.stride, self.pad, ceil_mode=True, count_include_pad=True)
        return self._explicit(x, kernel, out)

    def _sizes(self, sizes: Sequence[int], kernel: Sequence[int], rule: Callable[..., int]) -> list[int]:
        padded = any(self.pad)
        return [rule(*args, padded) for args in zip(sizes, kernel, self.stride, self.pad)]

    def _explicit(self, x: torch.Tensor, kernel: Sequence[int], out: Sequence[int]) -> torch.Tensor:
        """The general case (PyTorch's pooling cannot express it): pad explicitly, then pool without padding."""
        extra = [(n - 1) * s + k - size - p for n, s, k, size, p in zip(out, self.stride, kernel, x.shape[2:],
                                                                       self.pad)]
        padding = (self.pad[1], extra[1], self.pad[0], extra[0])
        if self.method == "MAX":
            return F.max_pool2d(F.pad(x, padding, value=-math.inf), kernel, self.stride)
        total = F.avg_pool2d(F.pad(x, padding), kernel, self.stride, divisor_override=1)
        counts = [torch.clamp(torch.arange(n, device=x.device) * s - p + k, max=size + p)
                  - (torch.arange(n, device=x.device) * s - p)
                  for n, s, k, size, p in zip(out, self.stride, kernel, x.shape[2:], self.pad)]
        return total / (counts[0][:, None] * counts[1][None, :]).to(x.dtype)


def pooled_size_torch(size: int, kernel: int, stride: int, pad: int, padded: bool) -> int:
    """PyTorch's ``ceil_mode`` output size (it drops a window starting in the right padding even without pad)."""
    out = -(-(size + 2 * pad - kernel) // stride) + 1
    if (out - 1) * stride >= size + pad:
        out -= 1
    return out
