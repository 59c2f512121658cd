"""The activations: ``ReLU`` (``F.relu``, which the backward modes intercept), ``Sigmoid``, ``TanH``,
``Softmax``, and ``Dropout`` (the identity at test time)."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from deepvis.models.caffe.layers.base import CaffeLayer, Pointwise, Shape, axis_index, identity
from deepvis.models.caffe.message import Message


class ReLU(CaffeLayer):
    """``max(x, 0) + negative_slope * min(x, 0)``."""

    def __init__(self, name: str, param: Message, shapes: Sequence[Shape]):
        super().__init__(name, "ReLU")
        self.negative_slope = param.float("negative_slope", 0.0)

    def compute(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x, self.negative_slope) if self.negative_slope else F.relu(x)


class Sigmoid(Pointwise):
    function = torch.sigmoid


class TanH(Pointwise):
    function = torch.tanh


class Dropout(Pointwise):
    """The identity: deepvis runs networks as Caffe's TEST phase does."""

    function = identity


class Softmax(CaffeLayer):
    def __init__(self, name: str, param: Message, shapes: Sequence[Shape]):
        super().__init__(name, "Softmax")
        self.axis = axis_index(param.int("axis", 1), len(shapes[0]), param)

    def compute(self, x: torch.Tensor) -> torch.Tensor:
        return F.softmax(x, dim=self.axis)
