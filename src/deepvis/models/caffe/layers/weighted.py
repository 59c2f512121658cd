"""The layers with weights: ``Convolution`` and ``InnerProduct``."""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from deepvis.models.caffe.layers.base import CaffeLayer, Shape, axis_index, check_spatial, he_normal, pair
from deepvis.models.caffe.message import Message


class Convolution(CaffeLayer):
    """Caffe convolution: groups, dilation, pad/stride/kernel in all spellings, optional bias."""

    def __init__(self, name: str, param: Message, shapes: Sequence[Shape]):
        super().__init__(name, "Convolution")
        check_spatial(shapes[0], param)
        self.kernel = pair(param, "kernel", None)
        self.stride = pair(param, "stride", 1)
        self.pad = pair(param, "pad", 0)
        dilation = param.ints("dilation") or [1]
        self.dilation = (dilation[0], dilation[-1])
        self.groups = param.int("group", 1)
        out_channels, in_channels = param.int("num_output"), shapes[0][1]
        if out_channels <= 0 or in_channels % self.groups or out_channels % self.groups:
            raise param.error(f"num_output {out_channels} and input channels {in_channels} must be positive "
                              f"multiples of group {self.groups}")
        self._add_blob("weight", (out_channels, in_channels // self.groups) + self.kernel)
        if param.bool("bias_term", True):
            self._add_blob("bias", (out_channels,))

    def compute(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, getattr(self, "bias", None), self.stride, self.pad, self.dilation, self.groups)

    def reset_blobs(self, generator: torch.Generator) -> None:
        he_normal(self.weight, self.weight[0].numel(), generator)
        if "bias" in self.blob_names:
            self.bias.zero_()


class InnerProduct(CaffeLayer):
    """Fully connected: everything from ``axis`` on is flattened first, as Caffe does implicitly."""

    def __init__(self, name: str, param: Message, shapes: Sequence[Shape]):
        super().__init__(name, "InnerProduct")
        self.axis = axis_index(param.int("axis", 1), len(shapes[0]), param)
        in_features, out_features = math.prod(shapes[0][self.axis:]), param.int("num_output")
        self.transpose = param.bool("transpose", False)
        self._add_blob("weight", (in_features, out_features) if self.transpose else (out_features, in_features))
        if param.bool("bias_term", True):
            self._add_blob("bias", (out_features,))

    def compute(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.t() if self.transpose else self.weight
        return F.linear(x.flatten(self.axis), weight, getattr(self, "bias", None))

    def reset_blobs(self, generator: torch.Generator) -> None:
        he_normal(self.weight, self.weight.shape[0 if self.transpose else 1], generator)
        if "bias" in self.blob_names:
            self.bias.zero_()
