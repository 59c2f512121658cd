"""A node as converters see it (:class:`Node`), how a tensor carries the batch (:class:`BatchAxis`), and the module
type of nodes computed by a plain function (:class:`OnnxOp`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from deepvis.core.errors import ModelError


class OnnxOp(nn.Module):
    """One ONNX node computed by a function of its inputs; subclassed per operator so the catalog shows its type."""

    def __init__(self, fn: Callable):
        super().__init__()
        self.fn = fn

    def forward(self, *inputs):
        return self.fn(*inputs)


_OP_CLASSES: dict[str, type] = {}


def op(op_type: str, fn: Callable) -> OnnxOp:
    if op_type not in _OP_CLASSES:
        _OP_CLASSES[op_type] = type(op_type, (OnnxOp,), {"__module__": __name__})
    return _OP_CLASSES[op_type](fn)


@dataclass(frozen=True)
class BatchAxis:
    """How a tensor carries the batch: axis ``axis`` holds ``outer x batch x inner`` entries (the batch between
    ``outer`` and ``inner`` others); the file's batch size is ``file_batch``. Found by graph.py from the probe at
    the file's batch size and at one more, whose first samples are the same (:meth:`between`)."""

    axis: int
    outer: int
    inner: int
    file_batch: int

    @classmethod
    def between(cls, first: torch.Tensor, second: torch.Tensor) -> "BatchAxis | None":
        """From a tensor at the file's batch size and at one more (the same samples first)."""
        shape, other = tuple(first.shape), tuple(second.shape)
        differ = [i for i, (a, b) in enumerate(zip(shape, other)) if a != b]
        if len(shape) != len(other) or len(differ) != 1:
            return None
        axis = differ[0]
        step = other[axis] - shape[axis]
        if step <= 0 or shape[axis] % step:
            return None
        batch = shape[axis] // step
        fits = []
        for outer in (d for d in range(1, step + 1) if step % d == 0):  # which split of the axis holds the samples
            inner = step // outer
            a = first.reshape(*shape[:axis], outer, batch, inner, *shape[axis + 1:])
            b = second.reshape(*shape[:axis], outer, batch + 1, inner, *shape[axis + 1:]).narrow(axis + 1, 0, batch)
            if not a.is_floating_point() or torch.allclose(a, b, rtol=1e-3, atol=1e-5 * (1 + a.abs().max())):
                fits.append(outer)
        return cls(axis, fits[0], step // fits[0], batch) if fits else None

    @property
    def per_sample(self) -> int:
        return self.outer * self.inner

    def size(self, x: torch.Tensor) -> int:
        """The batch size of ``x``."""
        return x.shape[self.axis] // self.per_sample


class Node:
    """An ONNX node with decoded attributes, its inputs' constant values and (probe) shapes."""

    def __init__(self, proto, opset: int, const: Callable, static: Callable, shape: Callable, batch: Callable):
        from onnx import helper  # optional dependency

        self.proto, self.op, self.opset = proto, proto.op_type, opset
        self.name = proto.name or proto.op_type
        self.inputs = list(proto.input)
        self.attrs = {a.name: helper.get_attribute_value(a) for a in proto.attribute}
        self._const, self._static, self._shape, self._batch = const, static, shape, batch

    def has(self, index: int) -> bool:
        return index < len(self.inputs) and bool(self.inputs[index])

    def const(self, index: int) -> torch.Tensor | None:
        """The input at ``index`` when it is one constant (at any batch size); None if absent or computed."""
        return self._const(self.inputs[index]) if self.has(index) else None

    def static(self, index: int) -> torch.Tensor | None:
        """The input at ``index`` when known at load time, at the file's batch size (shape values may hold the
        batch size: use the entries that do not)."""
        return self._static(self.inputs[index]) if self.has(index) else None

    def shape(self, index: int = 0) -> tuple[int, ...]:
        """The shape of input ``index`` at the model's input size (batch dimension as in the file)."""
        return self._shape(self.inputs[index])

    def batch(self, index: int = 0) -> "BatchAxis | None":
        """Where input ``index`` carries the batch (see :class:`BatchAxis`); None for values the batch size does
        not change."""
        return self._batch(self.inputs[index]) if self.has(index) else None

    def is_const(self, index: int) -> bool:
        return self.const(index) is not None

    def ints(self, name: str, default=None) -> list[int] | None:
        value = self.attrs.get(name, default)
        return None if value is None else [int(v) for v in value]

    def text(self, name: str, default: str) -> str:
        value = self.attrs.get(name, default)
        return value.decode() if isinstance(value, bytes) else value

    def need_const(self, index: int, what: str) -> list:
        """The constant input ``index`` as a flat list, or the one-line error naming it."""
        value = self.const(index)
        if value is None:
            raise self.fail(f"{what} must be a constant (input {index}, '{self.inputs[index]}', is computed at "
                            "run time)")
        return value.flatten().tolist()

    def fail(self, why: str) -> ModelError:
        return ModelError(f"ONNX {self.op} node '{self.name}': {why}")
