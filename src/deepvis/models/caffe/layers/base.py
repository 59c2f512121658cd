"""The base of every Caffe layer module (:class:`CaffeLayer`: a name, a type, blobs, in-place children) and the
settings helpers the layer types share (2-D settings in any spelling, axes, default weights)."""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import nn

from deepvis.models.caffe.message import Message

Shape = tuple[int, ...]


class CaffeLayer(nn.Module):
    """One Caffe layer; subclasses implement :meth:`compute` and, when they have blobs, :meth:`reset_blobs`."""

    blob_names: tuple[str, ...] = ()
    #: How many bottom blobs the layer reads (least, most), and whether it may write several tops.
    bottoms: tuple[int, int] = (1, 1)
    many_tops = False

    def __init__(self, caffe_name: str, caffe_type: str):
        super().__init__()
        self.caffe_name = caffe_name
        self.caffe_type = caffe_type
        self.in_place: list[str] = []  # child modules run on the output, in order (in-place layers)

    def add_in_place(self, module_name: str, layer: "CaffeLayer") -> None:
        """Run ``layer`` on this layer's output, as Caffe's in-place layers overwrite the blob."""
        self.add_module(module_name, layer)
        self.in_place.append(module_name)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        out = self.compute(*inputs)
        for name in self.in_place:
            out = self._modules[name](out)
        return out

    def compute(self, *inputs: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def blobs(self) -> list[torch.Tensor]:
        """The layer's blobs in Caffe's order (what a ``.caffemodel`` stores for it)."""
        return [getattr(self, name) for name in self.blob_names]

    def reset_blobs(self, generator: torch.Generator) -> None:
        """Fill the blobs with a deterministic default (used when no weights are given)."""

    def _add_blob(self, name: str, shape: Shape, trainable: bool = True) -> None:
        if trainable:
            self.register_parameter(name, nn.Parameter(torch.empty(shape)))
        else:
            self.register_buffer(name, torch.empty(shape))
        self.blob_names = self.blob_names + (name,)


class Pointwise(CaffeLayer):
    """A parameter-free layer given by one function of its input."""

    function: Callable[[torch.Tensor], torch.Tensor]

    def __init__(self, name: str, param: Message, shapes: Sequence[Shape]):
        super().__init__(name, type(self).__name__)

    def compute(self, x: torch.Tensor) -> torch.Tensor:
        return type(self).function(x)


def identity(x: torch.Tensor) -> torch.Tensor:
    """The input itself (``Dropout`` at test time, ``Split``)."""
    return x


def pair(param: Message, name: str, default: int | None) -> tuple[int, int]:
    """A 2-D setting in any Caffe spelling: ``name_h``/``name_w``, or ``name[_size]`` once or twice."""
    repeated = "kernel_size" if name == "kernel" else name
    if param.has(f"{name}_h") or param.has(f"{name}_w"):
        if not (param.has(f"{name}_h") and param.has(f"{name}_w")):
            raise param.error(f"give both {name}_h and {name}_w")
        return param.int(f"{name}_h"), param.int(f"{name}_w")
    values = param.ints(repeated)
    if not values:
        if default is None:
            raise param.error(f"{repeated} (or {name}_h and {name}_w) is required")
        return default, default
    if len(values) > 2:
        raise param.error(f"{repeated} has {len(values)} values; only 2-D layers are supported")
    return (values[0], values[-1])


def check_spatial(shape: Shape, where: Message) -> None:
    """Fail (naming the layer's settings ``where``) unless the input is (N, C, H, W)."""
    if len(shape) != 4:
        raise where.error(f"expects a 4-D (N, C, H, W) input, got shape {shape}")


def axis_index(axis: int, ndim: int, where: Message) -> int:
    """A Caffe axis (negative from the end) as an index into ``ndim`` axes, or a clear error."""
    if not -ndim <= axis < ndim:
        raise where.error(f"axis {axis} is out of range for a {ndim}-D input")
    return axis % ndim


def he_normal(weight: torch.Tensor, fan_in: int, generator: torch.Generator) -> None:
    """Fill ``weight`` with He-normal values (std ``sqrt(2 / fan_in)``): the default weights without a file."""
    weight.copy_(torch.randn(weight.shape, generator=generator) * math.sqrt(2.0 / max(fan_in, 1)))
