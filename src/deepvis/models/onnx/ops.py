"""The operator table: one converter per ONNX operator, turning a node into a module of its run-time inputs.

Weighted nodes become the usual PyTorch modules (``Conv``: ``nn.Conv2d``, ``Gemm`` / ``MatMul`` by a constant
matrix: ``nn.Linear``, ``BatchNormalization``, ``LayerNormalization``, ``LRN``, pools) and activations ``nn.ReLU``
& co., so the backward modes treat them exactly like the source network's (rectifiers stay modules that call
``F.relu`` / ``clamp``); the other operators are small functions of their inputs (:class:`OnnxOp`, subclassed per
operator so the catalog shows the operator type).

A converter takes a :class:`Node` and returns ``(module, indices of the node inputs the module is called with)``;
inputs that are constants when the file is loaded (see ``fold.py``) are read with :meth:`Node.const` and baked in.
Operators that move, select and reshape values are in ``shape_ops.py``; :class:`Node` is in ``node.py``.
:func:`coverage` lists the table with what each converter supports (``docs/onnx-coverage.md`` is made from it).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from deepvis.models.onnx import shape_ops as shapes
from deepvis.models.onnx.node import Node, OnnxOp  # noqa: F401  (OnnxOp: the type of function nodes, re-exported)
from deepvis.models.onnx.node import op as _op


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
    "Flatten": (shapes.flatten, "axis"),
    "Reshape": (shapes.reshape, "shape from a constant or a shape chain; allowzero; a batch size of 1 baked in by the "
                          "export is scaled to the batch"),
    "Transpose": (shapes.transpose, "perm"),
    "Squeeze": (shapes.squeeze, "axes (attribute before opset 13, constant input after)"),
    "Unsqueeze": (shapes.unsqueeze, "axes (attribute before opset 13, constant input after)"),
    "Expand": (shapes.expand, "shape from a constant or a shape chain (bidirectional broadcast)"),
    "Concat": (shapes.concat, "axis; inputs exported with batch size 1 are broadcast to the batch"),
    "Split": (shapes.split, "axis, split sizes (attribute or constant input), num_outputs; equal parts by default"),
    "Slice": (shapes.slice_, "starts/ends/axes/steps as constants or folded shape chains; steps >= 1"),
    "Gather": (shapes.gather, "axis, indices of any shape, negative indices"),
    "Tile": (shapes.tile, "repeats"),
    "Pad": (shapes.pad, "modes constant/reflect/edge/wrap, pads as constants or folded shape chains, axes input"),
    "Resize": (shapes.resize, "scales or sizes (constants or folded); nearest (asymmetric+floor, half_pixel+"
                        "round_prefer_ceil), linear and cubic (half_pixel, pytorch_half_pixel, align_corners); "
                        "not antialias, not axes"),
    "ConstantOfShape": (shapes.constant_of_shape, "value; a shape computed at run time (batch-sized)"),
    "Cast": (shapes.cast, "to"),
    "CastLike": (_binary(lambda x, like: x.to(like.dtype)), "-> the dtype of the second input"),
    "If": (shapes.if_, "a constant condition only: the chosen branch is inlined when the file is loaded"),
    "ReduceMean": (shapes.reduce(torch.mean, 18), "axes (attribute before opset 18, input after), keepdims, "
                                            "noop_with_empty_axes"),
    "ReduceSum": (shapes.reduce(torch.sum, 13), "axes (attribute before opset 13, input after), keepdims"),
    "ReduceMax": (shapes.reduce(torch.amax, 18), "axes, keepdims"),
    "ReduceMin": (shapes.reduce(torch.amin, 18), "axes, keepdims"),
    "ReduceL2": (shapes.reduce(shapes.reduce_l2, 18), "axes, keepdims"),
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
