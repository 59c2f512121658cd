"""The operator table: one converter per ONNX operator, turning a node into a module of its run-time inputs.

Weighted nodes become the usual PyTorch modules (``Conv``: ``nn.Conv2d``, ``Gemm`` / ``MatMul`` by a constant
matrix: ``nn.Linear``, ``BatchNormalization``, ``LayerNormalization``, ``LRN``, pools) and activations ``nn.ReLU``
& co., so the backward modes treat them exactly like the source network's (rectifiers stay modules that call
``F.relu`` / ``clamp``); the other operators are small functions of their inputs (:class:`OnnxOp`, subclassed per
operator so the catalog shows the operator type).

A converter takes a :class:`Node` and returns ``(module, indices of the node inputs the module is called with)``;
inputs that are constants when the file is loaded (see ``fold.py``) are read with :meth:`Node.const` and baked in.
The converters are grouped by kind: ``conv_ops.py`` (convolutions, pools), ``linear_ops.py``, ``norm_ops.py``,
``activation_ops.py`` and ``shape_ops.py`` (operators that move, select and reshape values); :class:`Node` is in
``node.py``; this module holds the table.
:func:`coverage` lists the table with what each converter supports (``docs/onnx-coverage.md`` is made from it).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from deepvis.models.onnx import activation_ops as acts
from deepvis.models.onnx import conv_ops as convs
from deepvis.models.onnx import linear_ops as linalg
from deepvis.models.onnx import norm_ops as norms
from deepvis.models.onnx import shape_ops as shapes
from deepvis.models.onnx.conv_ops import CroppedConvTranspose2d, PaddedConv2d, PaddedMaxPool2d  # noqa: F401  (moved)
from deepvis.models.onnx.norm_ops import BatchNorm  # noqa: F401  (moved to norm_ops)
from deepvis.models.onnx.node import Node, OnnxOp  # noqa: F401  (OnnxOp: the type of function nodes, re-exported)
from deepvis.models.onnx.node import op as _op


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


#: operator -> (converter, what it supports). Operators whose inputs are all known at load time (constants, and
#: shapes at the model's input size) are evaluated by ``onnx.reference`` and need no entry (see fold.py).
CONVERTERS: dict[str, tuple[Callable[[Node], tuple[nn.Module, list[int]]], str]] = {
    "Conv": (convs.conv, "1-D/2-D/3-D, constant weights; strides, dilations, group, pads (asymmetric in 2-D), "
                         "auto_pad NOTSET/VALID/SAME_UPPER/SAME_LOWER -> nn.Conv*d"),
    "ConvTranspose": (convs.conv_transpose, "1-D/2-D, constant weights; strides, dilations, group, pads (asymmetric "
                                            "in 2-D), output_padding; not output_shape, not auto_pad SAME"),
    "MaxPool": (convs.pool, "2-D; strides, dilations, pads (asymmetric: -inf padding), auto_pad, ceil_mode; "
                            "not the Indices output -> nn.MaxPool2d"),
    "AveragePool": (convs.pool, "2-D; strides, pads, auto_pad, ceil_mode, count_include_pad (asymmetric pads need "
                                "count_include_pad=1) -> nn.AvgPool2d"),
    "GlobalAveragePool": (convs.global_pool, "any rank -> nn.AdaptiveAvgPool2d(1) in 2-D"),
    "GlobalMaxPool": (convs.global_pool, "any rank -> nn.AdaptiveMaxPool2d(1) in 2-D"),
    "Gemm": (linalg.gemm, "alpha, beta, transA, transB; constant B and 1-D C -> nn.Linear, otherwise a matrix product"),
    "MatMul": (linalg.matmul, "by a constant 2-D matrix -> nn.Linear; otherwise torch.matmul (batched)"),
    "Einsum": (linalg.einsum, "equation -> torch.einsum"),
    "BatchNormalization": (norms.batch_norm, "inference, constant statistics, epsilon -> BatchNorm module (any rank)"),
    "LayerNormalization": (norms.layer_norm, "axis, epsilon; constant scale/bias -> nn.LayerNorm; not the Mean / "
                                             "InvStdDev outputs"),
    "InstanceNormalization": (norms.instance_norm, "epsilon, constant scale and bias"),
    "GroupNormalization": (norms.group_norm, "num_groups, epsilon, per-group (opset 18) or per-channel (21) scale -> "
                                             "nn.GroupNorm"),
    "LRN": (_module(lambda n: nn.LocalResponseNorm(int(n.attrs["size"]), float(n.attrs.get("alpha", 1e-4)),
                                                   float(n.attrs.get("beta", 0.75)), float(n.attrs.get("bias", 1.0)))),
            "size, alpha, beta, bias -> nn.LocalResponseNorm"),
    "Relu": (_module(lambda n: nn.ReLU()), "-> nn.ReLU (a rectifier for deconv / guided)"),
    "Clip": (acts.clip, "constant bounds: [0, inf) -> nn.ReLU, [0, 6] -> nn.ReLU6, else torch.clamp (a rectifier)"),
    "LeakyRelu": (_module(lambda n: nn.LeakyReLU(float(n.attrs.get("alpha", 0.01)))), "alpha -> nn.LeakyReLU"),
    "PRelu": (acts.prelu, "any slope shape"),
    "Elu": (_module(lambda n: nn.ELU(float(n.attrs.get("alpha", 1.0)))), "alpha -> nn.ELU"),
    "Selu": (_module(lambda n: nn.SELU()), "default alpha/gamma -> nn.SELU"),
    "Celu": (_module(lambda n: nn.CELU(float(n.attrs.get("alpha", 1.0)))), "alpha -> nn.CELU"),
    "Sigmoid": (_module(lambda n: nn.Sigmoid()), "-> nn.Sigmoid"),
    "Tanh": (_module(lambda n: nn.Tanh()), "-> nn.Tanh"),
    "Softplus": (_module(lambda n: nn.Softplus()), "-> nn.Softplus"),
    "Softsign": (_module(lambda n: nn.Softsign()), "-> nn.Softsign"),
    "Mish": (_module(lambda n: nn.Mish()), "-> nn.Mish"),
    "HardSwish": (_module(lambda n: nn.Hardswish()), "-> nn.Hardswish"),
    "HardSigmoid": (acts.hard_sigmoid, "alpha, beta (1/6, 1/2 -> nn.Hardsigmoid)"),
    "Gelu": (acts.gelu, "approximate none/tanh -> nn.GELU"),
    "Erf": (_function(torch.erf), "torch.erf (GELU as exported before opset 20)"),
    "Softmax": (acts.softmax, "axis (opset < 13: coerced to 2-D as ONNX says) -> nn.Softmax"),
    "LogSoftmax": (acts.softmax, "axis -> nn.LogSoftmax"),
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
