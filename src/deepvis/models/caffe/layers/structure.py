"""The layers that route and combine blobs: ``Split``, ``Flatten``, ``Concat``, ``Eltwise``."""

from __future__ import annotations

from functools import reduce
from typing import Sequence

import torch

from deepvis.models.caffe.layers.base import CaffeLayer, Pointwise, Shape, axis_index, identity
from deepvis.models.caffe.message import Message


class Split(Pointwise):
    """Copies its input to several tops (they share one tensor: nothing here writes in place)."""

    many_tops = True

    function = identity


class Flatten(CaffeLayer):
    def __init__(self, name: str, param: Message, shapes: Sequence[Shape]):
        super().__init__(name, "Flatten")
        self.axis = axis_index(param.int("axis", 1), len(shapes[0]), param)
        self.end_axis = axis_index(param.int("end_axis", -1), len(shapes[0]), param)

    def compute(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(self.axis, self.end_axis)


class Concat(CaffeLayer):
    bottoms = (1, 1 << 30)

    def __init__(self, name: str, param: Message, shapes: Sequence[Shape]):
        super().__init__(name, "Concat")
        axis = param.int("axis", 1) if param.has("axis") else param.int("concat_dim", 1)
        self.axis = axis_index(axis, len(shapes[0]), param)

    def compute(self, *inputs: torch.Tensor) -> torch.Tensor:
        return torch.cat(inputs, dim=self.axis)


class Eltwise(CaffeLayer):
    """Element-wise SUM (with one coefficient per input), PROD or MAX of equally shaped inputs."""

    bottoms = (2, 1 << 30)

    def __init__(self, name: str, param: Message, shapes: Sequence[Shape]):
        super().__init__(name, "Eltwise")
        self.operation = param.enum("operation", {"PROD": 0, "SUM": 1, "MAX": 2}, "SUM")
        self.coeffs = param.floats("coeff") or [1.0] * len(shapes)
        if len(self.coeffs) != len(shapes):
            raise param.error(f"{len(self.coeffs)} coefficients for {len(shapes)} inputs")
        if self.operation != "SUM" and param.has("coeff"):
            raise param.error("coefficients are only for the SUM operation")
        if len(set(shapes)) > 1:
            raise param.error(f"inputs must have the same shape, got {list(shapes)}")

    def compute(self, *inputs: torch.Tensor) -> torch.Tensor:
        if self.operation == "PROD":
            return reduce(torch.mul, inputs)
        if self.operation == "MAX":
            return reduce(torch.maximum, inputs)
        return reduce(torch.add, [x if c == 1 else x * c for x, c in zip(inputs, self.coeffs)])
