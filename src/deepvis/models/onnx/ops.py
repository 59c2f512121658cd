"""The operator table: one converter per ONNX operator, turning a node into a module of its run-time inputs.

Weighted nodes become the usual PyTorch modules (``Conv``: ``nn.Conv2d``, ``Gemm`` / ``MatMul`` by a constant
matrix: ``nn.Linear``, ``BatchNormalization``, ``LayerNormalization``, ``LRN``, pools) and activations ``nn.ReLU``
& co., so the backward modes treat them exactly like the source network's (rectifiers stay modules that call
``F.relu`` / ``clamp``); the other operators are small functions of their inputs (:class:`OnnxOp`, subclassed per
operator so the catalog shows the operator type).

A converter takes a :class:`Node` and returns ``(module, indices of the node inputs the module is called with)``;
inputs that are constants when the file is loaded (see ``fold.py``) are read with :meth:`Node.const` and baked in.
:func:`coverage` lists the table with what each converter supports (``docs/onnx-coverage.md`` is made from it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ModelError


class OnnxOp(nn.Module):
    """One ONNX node computed by a function of its inputs; subclassed per operator so the catalog shows its type."""

    def __init__(self, fn: Callable):
        super().__init__()
        self.fn = fn

    def forward(self, *inputs):
        return self.fn(*inputs)


_OP_CLASSES: dict[str, type] = {}


def _op(op_type: str, fn: Callable) -> OnnxOp:
    if op_type not in _OP_CLASSES:
        _OP_CLASSES[op_type] = type(op_type, (OnnxOp,), {"__module__": __name__})
    return _OP_CLASSES[op_type](fn)


class PaddedConv2d(nn.Conv2d):
    """A 2-D convolution with ONNX's asymmetric padding (begin and end pads differ)."""

    def __init__(self, *args, pad: tuple[int, int, int, int], **kwargs):
        super().__init__(*args, **kwargs)
        self.pad = pad  # left, right, top, bottom (F.pad's order)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, self.pad))


class PaddedMaxPool2d(nn.MaxPool2d):
    """2-D max pooling with asymmetric pads (padded with -inf, as ONNX pads a max pool)."""

    def __init__(self, *args, pad: tuple[int, int, int, int], **kwargs):
        super().__init__(*args, **kwargs)
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, self.pad, value=-math.inf))


class CroppedConvTranspose2d(nn.ConvTranspose2d):
    """A transposed 2-D convolution with asymmetric pads: computed unpadded, then cropped."""

    def __init__(self, *args, crop: tuple[int, int, int, int], **kwargs):
        super().__init__(*args, **kwargs)
        self.crop = crop  # top, bottom, left, right

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        top, bottom, left, right = self.crop
        return out[..., top:out.shape[-2] - bottom, left:out.shape[-1] - right]


class BatchNorm(nn.modules.batchnorm._BatchNorm):
    """ONNX BatchNormalization (inference) on inputs of any rank."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"BatchNormalization expects (N, C, ...) input, got shape {tuple(x.shape)}")


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
        from onnx import helper

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


# ------------------------------------------------------------------------------------------ convolutions, pools

def _pads(node: Node, kernel: list[int], dilation: list[int], stride: list[int]) -> list[int]:
    """Begin pads then end pads of a conv / pool node; ``auto_pad`` SAME_* computed from the static input size."""
    rank = len(kernel)
    auto = node.text("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        size = node.shape(0)[2:]
        begin, end = [], []
        for n, k, d, s in zip(size, kernel, dilation, stride):
            total = max((-(-n // s) - 1) * s + (k - 1) * d + 1 - n, 0)
            small, large = total // 2, total - total // 2
            begin.append(small if auto == "SAME_UPPER" else large)
            end.append(large if auto == "SAME_UPPER" else small)
        return begin + end
    if auto == "VALID":
        return [0] * 2 * rank
    return node.ints("pads", [0] * 2 * rank)


def _spatial(node: Node, kernel: list[int]) -> dict:
    """Strides, dilations and symmetric padding of a conv / pool node (asymmetric: ``pad`` for F.pad)."""
    rank = len(kernel)
    stride, dilation = node.ints("strides", [1] * rank), node.ints("dilations", [1] * rank)
    pads = _pads(node, kernel, dilation, stride)
    begin, end = pads[:rank], pads[rank:]
    spec = {"stride": tuple(stride), "dilation": tuple(dilation)}
    if begin == end:
        spec["padding"] = tuple(begin)
    elif rank == 2:
        spec["padding"] = (0, 0)
        spec["pad"] = (begin[1], end[1], begin[0], end[0])
    else:
        raise node.fail(f"asymmetric pads {pads} are supported in 2-D only")
    return spec


def _conv(node: Node):
    weight, bias = node.const(1), node.const(2)
    if weight is None or weight.dim() not in (3, 4, 5):
        raise node.fail("only 1-D, 2-D and 3-D convolutions with constant weights are supported")
    kernel = list(weight.shape[2:])
    spec = _spatial(node, kernel)
    groups = int(node.attrs.get("group", 1))
    out_channels, in_channels = weight.shape[0], weight.shape[1] * groups
    if "pad" in spec:
        module = PaddedConv2d(in_channels, out_channels, kernel, groups=groups, bias=bias is not None, **spec)
    else:
        conv = {3: nn.Conv1d, 4: nn.Conv2d, 5: nn.Conv3d}[weight.dim()]
        module = conv(in_channels, out_channels, kernel, groups=groups, bias=bias is not None, **spec)
    module.weight.data.copy_(weight)
    if bias is not None:
        module.bias.data.copy_(bias)
    return module, [0]


def _conv_transpose(node: Node):
    weight, bias = node.const(1), node.const(2)
    if weight is None or weight.dim() not in (3, 4):
        raise node.fail("only 1-D and 2-D transposed convolutions with constant weights are supported")
    if "output_shape" in node.attrs:
        raise node.fail("the output_shape attribute is not supported; export with explicit pads")
    if node.text("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise node.fail("auto_pad SAME is not supported for ConvTranspose")
    kernel = list(weight.shape[2:])
    rank, groups = len(kernel), int(node.attrs.get("group", 1))
    pads = node.ints("pads", [0] * 2 * rank)
    spec = dict(stride=tuple(node.ints("strides", [1] * rank)), dilation=tuple(node.ints("dilations", [1] * rank)),
                output_padding=tuple(node.ints("output_padding", [0] * rank)), groups=groups, bias=bias is not None)
    args = (weight.shape[0], weight.shape[1] * groups, kernel)
    if pads[:rank] == pads[rank:]:
        module = (nn.ConvTranspose2d if rank == 2 else nn.ConvTranspose1d)(*args, padding=tuple(pads[:rank]), **spec)
    elif rank == 2:
        module = CroppedConvTranspose2d(*args, crop=(pads[0], pads[2], pads[1], pads[3]), **spec)
    else:
        raise node.fail(f"asymmetric pads {pads} are supported in 2-D only")
    module.weight.data.copy_(weight)
    if bias is not None:
        module.bias.data.copy_(bias)
    return module, [0]


def _pool(node: Node):
    kernel = node.ints("kernel_shape")
    spec = _spatial(node, kernel)
    if len(kernel) != 2:
        raise node.fail("only 2-D pooling is supported")
    if len(node.proto.output) > 1 and node.proto.output[1]:
        raise node.fail("the Indices output of MaxPool is not supported")
    ceil = bool(node.attrs.get("ceil_mode", 0))
    if node.op == "MaxPool":
        if "pad" in spec:
            return PaddedMaxPool2d(kernel, spec["stride"], 0, spec["dilation"], ceil_mode=ceil, pad=spec["pad"]), [0]
        return nn.MaxPool2d(kernel, spec["stride"], spec["padding"], spec["dilation"], ceil_mode=ceil), [0]
    if spec["dilation"] != (1, 1):
        raise node.fail("dilated average pooling is not supported")
    include_pad = bool(node.attrs.get("count_include_pad", 0))
    if "pad" in spec:
        if not include_pad:
            raise node.fail("asymmetric pads need count_include_pad=1 for AveragePool")
        pool = nn.AvgPool2d(kernel, spec["stride"], 0, ceil, count_include_pad=True)
        return _op("AveragePool", lambda x: pool(F.pad(x, spec["pad"]))), [0]
    return nn.AvgPool2d(kernel, spec["stride"], spec["padding"], ceil, count_include_pad=include_pad), [0]


def _global_pool(node: Node):
    rank = len(node.shape(0)) - 2
    if node.op == "GlobalAveragePool":
        return (nn.AdaptiveAvgPool2d(1) if rank == 2 else _op(node.op, lambda x: x.mean(
            dim=tuple(range(2, x.dim())), keepdim=True))), [0]
    return (nn.AdaptiveMaxPool2d(1) if rank == 2 else _op(node.op, lambda x: x.amax(
        dim=tuple(range(2, x.dim())), keepdim=True))), [0]


# ------------------------------------------------------------------------------------------ linear algebra

def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    module = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    module.weight.data.copy_(weight)
    if bias is not None:
        module.bias.data.copy_(bias.expand(weight.shape[0]))
    return module


def _gemm(node: Node):
    alpha, beta = float(node.attrs.get("alpha", 1.0)), float(node.attrs.get("beta", 1.0))
    trans_a, trans_b = int(node.attrs.get("transA", 0)), int(node.attrs.get("transB", 0))
    weight, bias = node.const(1), node.const(2)
    if weight is not None and not trans_a and (not node.has(2) or (bias is not None and bias.dim() <= 1)):
        weight = alpha * (weight if trans_b else weight.t())
        return _linear(weight, None if bias is None else beta * bias.flatten()), [0]

    def gemm(a, b, c=None):
        out = alpha * (a.t() if trans_a else a) @ (b.t() if trans_b else b)
        return out if c is None else out + beta * c
    return _op("Gemm", gemm), [i for i in range(3) if node.has(i)]


def _matmul(node: Node):
    weight = node.const(1)
    if weight is not None and weight.dim() == 2 and weight.is_floating_point():
        return _linear(weight.t(), None), [0]
    return _op("MatMul", torch.matmul), [0, 1]


def _einsum(node: Node):
    equation = node.text("equation", "")
    return _op("Einsum", lambda *xs: torch.einsum(equation, *xs)), list(range(len(node.inputs)))


# ------------------------------------------------------------------------------------------ normalizations

def _batch_norm(node: Node):
    scale, bias, mean, var = (node.const(i) for i in range(1, 5))
    if any(t is None for t in (scale, bias, mean, var)):
        raise node.fail("only BatchNormalization with constant statistics is supported")
    if len([o for o in node.proto.output if o]) > 1:
        raise node.fail("training-mode outputs (running mean / var) are not supported")
    module = BatchNorm(scale.numel(), eps=float(node.attrs.get("epsilon", 1e-5)))
    for target, value in ((module.weight, scale), (module.bias, bias), (module.running_mean, mean),
                          (module.running_var, var)):
        target.data.copy_(value)
    return module, [0]


def _layer_norm(node: Node):
    if len([o for o in node.proto.output if o]) > 1:
        raise node.fail("the Mean and InvStdDev outputs are not supported")
    shape = node.shape(0)
    axis = int(node.attrs.get("axis", -1)) % len(shape)
    normalized, eps = tuple(shape[axis:]), float(node.attrs.get("epsilon", 1e-5))
    scale, bias = node.const(1), node.const(2)
    if scale is not None and (bias is not None or not node.has(2)):
        module = nn.LayerNorm(normalized, eps=eps, bias=bias is not None)
        module.weight.data.copy_(scale.expand(normalized))
        if bias is not None:
            module.bias.data.copy_(bias.expand(normalized))
        return module, [0]
    return _op("LayerNormalization", lambda x, s, b=None: F.layer_norm(x, normalized, None, None, eps) * s
               + (0 if b is None else b)), [i for i in range(3) if node.has(i)]


def _instance_norm(node: Node):
    scale, bias = node.const(1), node.const(2)
    eps = float(node.attrs.get("epsilon", 1e-5))
    if scale is None or bias is None:
        raise node.fail("scale and bias must be constants")
    return _op("InstanceNormalization", lambda x: F.instance_norm(
        x, weight=scale.to(x.device, x.dtype), bias=bias.to(x.device, x.dtype), eps=eps)), [0]


def _group_norm(node: Node):
    scale, bias = node.const(1), node.const(2)
    groups, eps = int(node.attrs["num_groups"]), float(node.attrs.get("epsilon", 1e-5))
    if scale is None or bias is None:
        raise node.fail("scale and bias must be constants")
    channels = node.shape(0)[1]
    if scale.numel() == groups and channels != groups:  # opset 18: one scale per group
        scale, bias = scale.repeat_interleave(channels // groups), bias.repeat_interleave(channels // groups)
    module = nn.GroupNorm(groups, channels, eps=eps)
    module.weight.data.copy_(scale)
    module.bias.data.copy_(bias)
    return module, [0]


# ------------------------------------------------------------------------------------------ activations

def _clip(node: Node):
    if node.opset < 11:
        low, high = node.attrs.get("min"), node.attrs.get("max")
    else:
        low, high = (None if not node.has(i) else node.need_const(i, "Clip bounds")[0] for i in (1, 2))
    if low is None and high is None:
        return nn.Identity(), [0]
    low = None if low is None or low <= -3.4e38 else float(low)
    high = None if high is None or high >= 3.4e38 else float(high)
    if (low, high) in ((0.0, None), (0.0, 6.0)):
        return (nn.ReLU() if high is None else nn.ReLU6()), [0]
    return _op("Clip", lambda x: torch.clamp(x, min=low, max=high)), [0]  # clamp(min=0): a rectifier for backprop


def _hard_sigmoid(node: Node):
    alpha, beta = float(node.attrs.get("alpha", 0.2)), float(node.attrs.get("beta", 0.5))
    if abs(alpha - 1 / 6) < 1e-6 and beta == 0.5:
        return nn.Hardsigmoid(), [0]

    def hard_sigmoid(x):  # min/max, not clamp: the backward modes leave it alone, as they do nn.Hardsigmoid
        y = alpha * x + beta
        return torch.minimum(torch.maximum(y, y.new_zeros(())), y.new_ones(()))
    return _op("HardSigmoid", hard_sigmoid), [0]


def _softmax(node: Node):
    axis = int(node.attrs.get("axis", 1 if node.opset < 13 else -1))
    module = nn.Softmax(axis) if node.op == "Softmax" else nn.LogSoftmax(axis)
    rank = len(node.shape(0))
    if node.opset >= 13 or axis % rank == rank - 1:
        return module, [0]
    flat = nn.Softmax(-1) if node.op == "Softmax" else nn.LogSoftmax(-1)  # before 13: over all axes from axis on
    return _op(node.op, lambda x: flat(x.reshape(*x.shape[:axis % rank], -1)).reshape(x.shape)), [0]


def _prelu(node: Node):
    return _op("PRelu", lambda x, slope: torch.where(x >= 0, x, x * slope)), [0, 1]


# ------------------------------------------------------------------------------------------ shapes and indexing

def _axes(node: Node, attr_before: int) -> list[int] | None:
    """Axes given as an attribute (before opset ``attr_before``) or as a constant second input."""
    if node.opset < attr_before:
        return node.ints("axes")
    return node.need_const(1, "axes") if node.has(1) else None


def _unsqueeze(node: Node):
    axes = _axes(node, 13)

    def unsqueeze(x):
        for axis in sorted(a % (x.dim() + len(axes)) for a in axes):
            x = x.unsqueeze(axis)
        return x
    return _op("Unsqueeze", unsqueeze), [0]


def _squeeze(node: Node):
    axes = _axes(node, 13)
    return _op("Squeeze", lambda x: x.squeeze() if axes is None else x.squeeze(tuple(axes))), [0]


def _reduce(function: Callable, axes_input_since: int):
    def convert(node: Node):
        axes, keep = _axes(node, axes_input_since), bool(node.attrs.get("keepdims", 1))
        if axes is None and node.attrs.get("noop_with_empty_axes", 0):
            return nn.Identity(), [0]
        return _op(node.op, lambda x: function(x, dim=tuple(axes) if axes else tuple(range(x.dim())),
                                               keepdim=keep)), [0]
    return convert


def _reduce_l2(x, dim, keepdim):
    return x.pow(2).sum(dim=dim, keepdim=keepdim).sqrt()


def _batch_place(shape: tuple[int, ...], batch: BatchAxis, target: list[int]) -> int | None:
    """The axis of ``target`` that holds the batch in a reshape of ``shape`` (batch as ``batch``), both at the
    file's batch size: an axis of its own if there is one, else the axis the batch falls in (merged with outer
    and / or inner entries)."""
    outer = math.prod(shape[:batch.axis]) * batch.outer
    inner = math.prod(shape[batch.axis + 1:]) * batch.inner
    for j in range(len(target)):
        if math.prod(target[:j]) == outer and target[j] == batch.file_batch and math.prod(target[j + 1:]) == inner:
            return j
    candidates = []
    for j in range(len(target)):
        before, after = math.prod(target[:j]), math.prod(target[j + 1:])
        if outer % before == 0 and inner % after == 0 \
                and (outer // before) * batch.file_batch * (inner // after) == target[j]:
            # Several axes can hold the batch (the same memory layout, different shapes). Preferred, as
            # nn.MultiheadAttention and window attention reshape: the batch with a split-off part of the inner
            # entries (batch x heads), then with the outer entries only (tokens x batch), then anything else.
            part = inner // after
            candidates.append((0 if part > 1 and after > 1 else 1 if part == 1 else 2, j))
    return min(candidates)[1] if candidates else None


def _reshape(node: Node):
    allow_zero = bool(node.attrs.get("allowzero", 0))

    def resolve(target: list[int], shape) -> list[int]:
        return target if allow_zero else [shape[i] if v == 0 else v for i, v in enumerate(target)]

    fixed, batch = node.const(1), node.batch(0)
    if fixed is None or batch is None:  # a shape computed for this batch, or a tensor the batch does not change
        return _op("Reshape", lambda x, shape: x.reshape(resolve([int(v) for v in shape.tolist()], x.shape))), [0, 1]
    # A constant shape on a batch-carrying tensor: the file fixed the batch size (dynamo exports do); scale the
    # axis that holds the batch, found by comparing the shapes at the file's batch size.
    shape = node.shape(0)
    target = list(torch.empty(shape, device="meta").reshape(resolve(fixed.tolist(), shape)).shape)
    axis = _batch_place(shape, batch, target)
    if axis is None:
        return _op("Reshape", lambda x: x.reshape(target)), [0]

    def reshape(x):
        scaled = list(target)
        scaled[axis] = target[axis] // batch.file_batch * batch.size(x)
        return x.reshape(scaled)
    return _op("Reshape", reshape), [0]


def _flatten(node: Node):
    axis = int(node.attrs.get("axis", 1))

    def flatten(x):  # to 2-D: the dimensions before ``axis``, and the rest
        return x.reshape(math.prod(x.shape[:axis if axis >= 0 else axis + x.dim()]), -1)
    return _op("Flatten", flatten), [0]


def _transpose(node: Node):
    perm = node.ints("perm")
    return _op("Transpose", lambda x: x.permute(*(perm or reversed(range(x.dim()))))), [0]


def _expand(node: Node):
    def expand(x, shape):  # bidirectional broadcast, as ONNX's Expand
        return x.expand(torch.broadcast_shapes(tuple(x.shape), tuple(int(v) for v in shape.tolist())))
    return _op("Expand", expand), [0, 1]


def _concat(node: Node):
    axis = int(node.attrs["axis"])

    def concat(*xs):
        rank = xs[0].dim()
        batch = max(x.shape[0] for x in xs) if rank else 1
        if axis % max(rank, 1) != 0 and any(x.shape[0] != batch for x in xs):
            xs = [x.expand(batch, *x.shape[1:]) if x.shape[0] == 1 else x for x in xs]  # batch 1 baked in
        return torch.cat(xs, dim=axis)
    return _op("Concat", concat), list(range(len(node.inputs)))


def _split(node: Node):
    axis = int(node.attrs.get("axis", 0))
    count = len(node.proto.output)
    sizes = node.ints("split") if node.opset < 13 else (node.need_const(1, "split sizes") if node.has(1) else None)
    if sizes is None:
        total = node.shape(0)[axis]
        size = -(-total // int(node.attrs.get("num_outputs", count)))
        sizes = [min(size, total - i * size) for i in range(count)]
    return _op("Split", lambda x: torch.split(x, sizes, dim=axis)), [0]


def _gather(node: Node):
    axis = int(node.attrs.get("axis", 0)) % len(node.shape(0))
    def gather(data, indices):
        indices = indices.long() % data.shape[axis]
        picked = data.index_select(axis, indices.flatten())
        return picked.reshape(*data.shape[:axis], *indices.shape, *data.shape[axis + 1:])
    indices, batch = node.const(1), node.batch(0)
    if indices is not None and batch is not None and batch.axis == axis and batch.outer == 1 and indices.numel() \
            and int(indices.max()) < batch.per_sample * batch.file_batch and int(indices.min()) >= 0:
        # constant indices into the batch axis of a file exported at a fixed batch size (dynamo's as_strided):
        # the same picks in every sample, samples stacked on the indices' first axis
        block = batch.per_sample * batch.file_batch

        def gather_per_sample(data):
            count = batch.size(data) // batch.file_batch
            picks = torch.cat([indices.long() + k * block for k in range(count)]) if indices.dim() else indices
            return gather(data, picks.to(data.device))
        return _op("Gather", gather_per_sample), [0]

    return _op("Gather", gather), [0, 1]


def _pad(node: Node):
    mode = node.text("mode", "constant")
    if node.opset < 11:
        pads, value = node.ints("pads"), float(node.attrs.get("value", 0.0))
    else:
        pads = [int(p) for p in node.need_const(1, "pads")]
        value = float(node.need_const(2, "the pad value")[0]) if node.has(2) else 0.0
    rank = len(node.shape(0))
    if node.has(3):  # pads for some axes only
        axes = [int(a) % rank for a in node.need_const(3, "axes")]
        full = [0] * 2 * rank
        for i, axis in enumerate(axes):
            full[axis], full[axis + rank] = pads[i], pads[i + len(axes)]
        pads = full
    rank = len(pads) // 2
    torch_pads = [p for axis in reversed(range(rank)) for p in (pads[axis], pads[axis + rank])]  # last axis first
    while len(torch_pads) > 2 and torch_pads[-2:] == [0, 0]:
        torch_pads = torch_pads[:-2]  # leading axes not padded (reflect/replicate pad trailing axes only)
    torch_mode = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}.get(mode)
    if torch_mode is None:
        raise node.fail(f"pad mode {mode!r} is not supported")
    options = {"value": value} if torch_mode == "constant" else {}
    return _op("Pad", lambda x: F.pad(x, torch_pads, mode=torch_mode, **options)), [0]


def _slice(node: Node):
    if node.opset < 10:
        starts, ends, axes = node.ints("starts"), node.ints("ends"), node.ints("axes")
        steps = None
    else:
        starts, ends = node.need_const(1, "Slice starts"), node.need_const(2, "Slice ends")
        axes = node.need_const(3, "Slice axes") if node.has(3) else None
        steps = node.need_const(4, "Slice steps") if node.has(4) else None
    axes = axes or list(range(len(starts)))
    steps = steps or [1] * len(starts)
    if any(step < 1 for step in steps):
        raise node.fail(f"negative Slice steps {steps} are not supported")

    def slice_(x):
        index = [slice(None)] * x.dim()
        for start, end, axis, step in zip(starts, ends, axes, steps):
            size = x.shape[axis]
            index[axis] = slice(max(-size, min(int(start), size)), max(-size - 1, min(int(end), size)), int(step))
        return x[tuple(index)]
    return _op("Slice", slice_), [0]


def _tile(node: Node):
    return _op("Tile", lambda x, repeats: x.repeat(*(int(r) for r in repeats.tolist()))), [0, 1]


def _constant_of_shape(node: Node):
    from onnx import numpy_helper

    value = node.attrs.get("value")
    fill = torch.from_numpy(numpy_helper.to_array(value).copy()) if value is not None else torch.zeros(1)
    return _op("ConstantOfShape", lambda shape: fill.reshape(()).to(shape.device).expand(
        [int(v) for v in shape.tolist()]).clone()), [0]


def _resize(node: Node):
    if node.opset < 11:
        scales_index, sizes_index = 1, None
    else:
        scales_index, sizes_index = 2, 3
    mode = node.text("mode", "nearest")
    transform = node.text("coordinate_transformation_mode", "half_pixel" if node.opset >= 11 else "asymmetric")
    nearest = node.text("nearest_mode", "round_prefer_floor")
    if node.attrs.get("antialias", 0):
        raise node.fail("antialias=1 is not supported")
    if node.has(4) or node.attrs.get("axes") is not None:
        raise node.fail("the axes input / attribute is not supported")
    shape = node.shape(0)
    rank = len(shape) - 2
    scales = node.static(scales_index) if node.has(scales_index) else None
    sizes = node.static(sizes_index) if sizes_index is not None and node.has(sizes_index) else None
    options: dict = {}
    if sizes is not None and sizes.numel():
        options["size"] = tuple(int(s) for s in sizes.flatten().tolist()[2:])
    elif scales is not None and scales.numel():
        values = [float(s) for s in scales.flatten().tolist()]
        if values[:2] != [1.0, 1.0]:
            raise node.fail(f"scales {values} resize the batch or channel axis")
        options["scale_factor"] = tuple(values[2:])
    else:
        raise node.fail("needs constant 'scales' or 'sizes' (neither is given, or they are computed at run time)")
    if mode == "nearest":
        if transform == "asymmetric" and nearest == "floor":
            torch_mode = "nearest"
        elif transform in ("half_pixel", "pytorch_half_pixel") and nearest == "round_prefer_ceil":
            torch_mode = "nearest-exact"
        else:
            raise node.fail(f"nearest resize with coordinate_transformation_mode={transform!r} and "
                            f"nearest_mode={nearest!r} is not supported")
    elif mode in ("linear", "cubic"):
        if mode == "cubic" and (rank != 2 or abs(float(node.attrs.get("cubic_coeff_a", -0.75)) + 0.75) > 1e-6):
            raise node.fail("cubic resize is supported in 2-D with cubic_coeff_a=-0.75 only")
        if transform not in ("half_pixel", "pytorch_half_pixel", "align_corners"):
            raise node.fail(f"{mode} resize with coordinate_transformation_mode={transform!r} is not supported")
        torch_mode = "bicubic" if mode == "cubic" else {1: "linear", 2: "bilinear", 3: "trilinear"}[rank]
        options["align_corners"] = transform == "align_corners"
    else:
        raise node.fail(f"resize mode {mode!r} is not supported")
    return _op("Resize", lambda x: F.interpolate(x, mode=torch_mode, **options)), [0]


def _cast(node: Node):
    from onnx import helper

    dtype = torch.from_numpy(np.zeros(0, helper.tensor_dtype_to_np_dtype(node.attrs["to"]))).dtype
    return _op("Cast", lambda x: x.to(dtype)), [0]


def _if(node: Node):
    raise node.fail("the condition must be a constant (If nodes with a computed condition are not supported)")


# ------------------------------------------------------------------------------------------ the table

def _module(factory: Callable[[Node], nn.Module]):
    return lambda node: (factory(node), [0])


def _function(function: Callable, variadic: bool = False):
    return lambda node: (_op(node.op, function), list(range(len(node.inputs))) if variadic else [0])


def _binary(function: Callable):
    return lambda node: (_op(node.op, function), [0, 1])


def _fold(function: Callable, tensors) -> torch.Tensor:
    result = tensors[0]
    for tensor in tensors[1:]:
        result = function(result, tensor)
    return result


def _gelu(node: Node):
    return nn.GELU(approximate=node.text("approximate", "none")), [0]


#: operator -> (converter, what it supports). Operators whose inputs are all known at load time (constants, and
#: shapes at the model's input size) are evaluated by ``onnx.reference`` and need no entry (see fold.py).
CONVERTERS: dict[str, tuple[Callable[[Node], tuple[nn.Module, list[int]]], str]] = {
    "Conv": (_conv, "1-D/2-D/3-D, constant weights; strides, dilations, group, pads (asymmetric in 2-D), "
                    "auto_pad NOTSET/VALID/SAME_UPPER/SAME_LOWER -> nn.Conv*d"),
    "ConvTranspose": (_conv_transpose, "1-D/2-D, constant weights; strides, dilations, group, pads (asymmetric "
                                       "in 2-D), output_padding; not output_shape, not auto_pad SAME"),
    "MaxPool": (_pool, "2-D; strides, dilations, pads (asymmetric: -inf padding), auto_pad, ceil_mode; "
                       "not the Indices output -> nn.MaxPool2d"),
    "AveragePool": (_pool, "2-D; strides, pads, auto_pad, ceil_mode, count_include_pad (asymmetric pads need "
                           "count_include_pad=1) -> nn.AvgPool2d"),
    "GlobalAveragePool": (_global_pool, "any rank -> nn.AdaptiveAvgPool2d(1) in 2-D"),
    "GlobalMaxPool": (_global_pool, "any rank -> nn.AdaptiveMaxPool2d(1) in 2-D"),
    "Gemm": (_gemm, "alpha, beta, transA, transB; constant B and 1-D C -> nn.Linear, otherwise a matrix product"),
    "MatMul": (_matmul, "by a constant 2-D matrix -> nn.Linear; otherwise torch.matmul (batched)"),
    "Einsum": (_einsum, "equation -> torch.einsum"),
    "BatchNormalization": (_batch_norm, "inference, constant statistics, epsilon -> BatchNorm module (any rank)"),
    "LayerNormalization": (_layer_norm, "axis, epsilon; constant scale/bias -> nn.LayerNorm; not the Mean / "
                                        "InvStdDev outputs"),
    "InstanceNormalization": (_instance_norm, "epsilon, constant scale and bias"),
    "GroupNormalization": (_group_norm, "num_groups, epsilon, per-group (opset 18) or per-channel (21) scale -> "
                                        "nn.GroupNorm"),
    "LRN": (_module(lambda n: nn.LocalResponseNorm(int(n.attrs["size"]), float(n.attrs.get("alpha", 1e-4)),
                                                   float(n.attrs.get("beta", 0.75)), float(n.attrs.get("bias", 1.0)))),
            "size, alpha, beta, bias -> nn.LocalResponseNorm"),
    "Relu": (_module(lambda n: nn.ReLU()), "-> nn.ReLU (a rectifier for deconv / guided)"),
    "Clip": (_clip, "constant bounds: [0, inf) -> nn.ReLU, [0, 6] -> nn.ReLU6, else torch.clamp (a rectifier)"),
    "LeakyRelu": (_module(lambda n: nn.LeakyReLU(float(n.attrs.get("alpha", 0.01)))), "alpha -> nn.LeakyReLU"),
    "PRelu": (_prelu, "any slope shape"),
    "Elu": (_module(lambda n: nn.ELU(float(n.attrs.get("alpha", 1.0)))), "alpha -> nn.ELU"),
    "Selu": (_module(lambda n: nn.SELU()), "default alpha/gamma -> nn.SELU"),
    "Celu": (_module(lambda n: nn.CELU(float(n.attrs.get("alpha", 1.0)))), "alpha -> nn.CELU"),
    "Sigmoid": (_module(lambda n: nn.Sigmoid()), "-> nn.Sigmoid"),
    "Tanh": (_module(lambda n: nn.Tanh()), "-> nn.Tanh"),
    "Softplus": (_module(lambda n: nn.Softplus()), "-> nn.Softplus"),
    "Softsign": (_module(lambda n: nn.Softsign()), "-> nn.Softsign"),
    "Mish": (_module(lambda n: nn.Mish()), "-> nn.Mish"),
    "HardSwish": (_module(lambda n: nn.Hardswish()), "-> nn.Hardswish"),
    "HardSigmoid": (_hard_sigmoid, "alpha, beta (1/6, 1/2 -> nn.Hardsigmoid)"),
    "Gelu": (_gelu, "approximate none/tanh -> nn.GELU"),
    "Erf": (_function(torch.erf), "torch.erf (GELU as exported before opset 20)"),
    "Softmax": (_softmax, "axis (opset < 13: coerced to 2-D as ONNX says) -> nn.Softmax"),
    "LogSoftmax": (_softmax, "axis -> nn.LogSoftmax"),
    "Dropout": (_module(lambda n: nn.Identity()), "inference: identity; not the mask output"),
    "Identity": (_module(lambda n: nn.Identity()), "-> nn.Identity"),
    "Flatten": (_flatten, "axis"),
    "Reshape": (_reshape, "shape from a constant or a shape chain; allowzero; a batch size of 1 baked in by the "
                          "export is scaled to the batch"),
    "Transpose": (_transpose, "perm"),
    "Squeeze": (_squeeze, "axes (attribute before opset 13, constant input after)"),
    "Unsqueeze": (_unsqueeze, "axes (attribute before opset 13, constant input after)"),
    "Expand": (_expand, "shape from a constant or a shape chain (bidirectional broadcast)"),
    "Concat": (_concat, "axis; inputs exported with batch size 1 are broadcast to the batch"),
    "Split": (_split, "axis, split sizes (attribute or constant input), num_outputs; equal parts by default"),
    "Slice": (_slice, "starts/ends/axes/steps as constants or folded shape chains; steps >= 1"),
    "Gather": (_gather, "axis, indices of any shape, negative indices"),
    "Tile": (_tile, "repeats"),
    "Pad": (_pad, "modes constant/reflect/edge/wrap, pads as constants or folded shape chains, axes input"),
    "Resize": (_resize, "scales or sizes (constants or folded); nearest (asymmetric+floor, half_pixel+"
                        "round_prefer_ceil), linear and cubic (half_pixel, pytorch_half_pixel, align_corners); "
                        "not antialias, not axes"),
    "ConstantOfShape": (_constant_of_shape, "value; a shape computed at run time (batch-sized)"),
    "Cast": (_cast, "to"),
    "CastLike": (_binary(lambda x, like: x.to(like.dtype)), "-> the dtype of the second input"),
    "If": (_if, "a constant condition only: the chosen branch is inlined when the file is loaded"),
    "ReduceMean": (_reduce(torch.mean, 18), "axes (attribute before opset 18, input after), keepdims, "
                                            "noop_with_empty_axes"),
    "ReduceSum": (_reduce(torch.sum, 13), "axes (attribute before opset 13, input after), keepdims"),
    "ReduceMax": (_reduce(torch.amax, 18), "axes, keepdims"),
    "ReduceMin": (_reduce(torch.amin, 18), "axes, keepdims"),
    "ReduceL2": (_reduce(_reduce_l2, 18), "axes, keepdims"),
    "Add": (_binary(torch.add), "broadcasting"),
    "Sub": (_binary(torch.sub), "broadcasting"),
    "Mul": (_binary(torch.mul), "broadcasting"),
    "Div": (_binary(torch.div), "broadcasting (floats)"),
    "Pow": (_binary(torch.pow), "broadcasting"),
    "Max": (_function(lambda *xs: _fold(torch.maximum, xs), variadic=True), "variadic"),
    "Min": (_function(lambda *xs: _fold(torch.minimum, xs), variadic=True), "variadic"),
    "Sum": (_function(lambda *xs: _fold(torch.add, xs), variadic=True), "variadic"),
    "Mean": (_function(lambda *xs: _fold(torch.add, xs) / len(xs), variadic=True), "variadic"),
    "Where": (_function(torch.where, variadic=True), "broadcasting"),
    "Equal": (_binary(torch.eq), "broadcasting"),
    "Less": (_binary(torch.lt), "broadcasting"),
    "LessOrEqual": (_binary(torch.le), "broadcasting"),
    "Greater": (_binary(torch.gt), "broadcasting"),
    "GreaterOrEqual": (_binary(torch.ge), "broadcasting"),
    "And": (_binary(torch.logical_and), "broadcasting"),
    "Or": (_binary(torch.logical_or), "broadcasting"),
    "Not": (_function(torch.logical_not), ""),
    "Sqrt": (_function(torch.sqrt), ""),
    "Exp": (_function(torch.exp), ""),
    "Log": (_function(torch.log), ""),
    "Neg": (_function(torch.neg), ""),
    "Abs": (_function(torch.abs), ""),
    "Sign": (_function(torch.sign), ""),
    "Reciprocal": (_function(torch.reciprocal), ""),
    "Floor": (_function(torch.floor), ""),
    "Ceil": (_function(torch.ceil), ""),
    "Sin": (_function(torch.sin), ""),
    "Cos": (_function(torch.cos), ""),
}


def coverage() -> list[tuple[str, str]]:
    """(operator, what is supported) for every operator deepvis converts, sorted by name."""
    return sorted((op, notes) for op, (_, notes) in CONVERTERS.items())
