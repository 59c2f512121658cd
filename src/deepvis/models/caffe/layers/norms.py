"""The normalizations: ``LRN``, ``BatchNorm`` (Caffe's scale factor) and ``Scale``."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from deepvis.models.caffe.layers.base import CaffeLayer, Shape, axis_index, check_spatial
from deepvis.models.caffe.message import Message


class LRN(CaffeLayer):
    """Local response normalization. ACROSS_CHANNELS: ``x / (k + alpha/n * sum_window x^2)^beta`` over n channels;
    WITHIN_CHANNEL: ``x / (1 + alpha/n^2 * sum_window x^2)^beta`` over n x n pixels (Caffe ignores k there)."""

    def __init__(self, name: str, param: Message, shapes: Sequence[Shape]):
        super().__init__(name, "LRN")
        check_spatial(shapes[0], param)
        self.size = param.int("local_size", 5)
        if self.size % 2 == 0 or self.size < 1:
            raise param.error(f"local_size must be odd (as Caffe requires), got {self.size}")
        self.alpha, self.beta, self.k = param.float("alpha", 1.0), param.float("beta", 0.75), param.float("k", 1.0)
        self.region = param.enum("norm_region", {"ACROSS_CHANNELS": 0, "WITHIN_CHANNEL": 1}, "ACROSS_CHANNELS")

    def compute(self, x: torch.Tensor) -> torch.Tensor:
        if self.region == "ACROSS_CHANNELS":
            return F.local_response_norm(x, self.size, self.alpha, self.beta, self.k)
        mean_square = F.avg_pool2d(x * x, self.size, 1, (self.size - 1) // 2, count_include_pad=True)
        return x * (1 + self.alpha * mean_square) ** -self.beta


class BatchNorm(CaffeLayer):
    """Caffe batch norm: blobs mean, variance and a scale factor they are divided by (0 means 0); no affine part
    (Caffe puts that in a following Scale layer)."""

    def __init__(self, name: str, param: Message, shapes: Sequence[Shape]):
        super().__init__(name, "BatchNorm")
        channels = shapes[0][1] if len(shapes[0]) > 1 else 1
        self.eps = param.float("eps", 1e-5)
        self.use_global_stats = param.bool("use_global_stats", True)  # Caffe's default at test time
        for blob, shape in (("mean", (channels,)), ("variance", (channels,)), ("scale_factor", (1,))):
            self._add_blob(blob, shape, trainable=False)

    def compute(self, x: torch.Tensor) -> torch.Tensor:
        if not self.use_global_stats:
            return F.batch_norm(x, None, None, training=True, eps=self.eps)
        factor = self.scale_factor[0]
        scale = torch.where(factor == 0, torch.zeros_like(factor), 1 / factor)
        return F.batch_norm(x, self.mean * scale, self.variance * scale, training=False, eps=self.eps)

    def reset_blobs(self, generator: torch.Generator) -> None:
        self.mean.zero_()
        self.variance.fill_(1)
        self.scale_factor.fill_(1)


class Scale(CaffeLayer):
    """``x * scale (+ bias)``, the scale a learned blob over axes ``axis..axis+num_axes`` or a second input."""

    bottoms = (1, 2)

    def __init__(self, name: str, param: Message, shapes: Sequence[Shape]):
        super().__init__(name, "Scale")
        self.axis = axis_index(param.int("axis", 1), len(shapes[0]), param)
        if len(shapes) > 1:
            covered = shapes[1]
        else:
            num_axes = param.int("num_axes", 1)
            covered = shapes[0][self.axis:] if num_axes == -1 else shapes[0][self.axis:self.axis + num_axes]
            self._add_blob("scale", tuple(covered))
        if shapes[0][self.axis:self.axis + len(covered)] != tuple(covered):
            raise param.error(f"scale shape {tuple(covered)} does not fit input shape {shapes[0]} at axis {self.axis}")
        if param.bool("bias_term", False):
            self._add_blob("bias", tuple(covered))

    def compute(self, x: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        scale = self.scale if scale is None else scale
        out = x * self._aligned(scale, x.dim())
        return out + self._aligned(self.bias, x.dim()) if "bias" in self.blob_names else out

    def _aligned(self, blob: torch.Tensor, ndim: int) -> torch.Tensor:
        return blob.reshape((1,) * self.axis + tuple(blob.shape) + (1,) * (ndim - self.axis - blob.dim()))

    def reset_blobs(self, generator: torch.Generator) -> None:
        if "scale" in self.blob_names:
            self.scale.fill_(1)
        if "bias" in self.blob_names:
            self.bias.zero_()
