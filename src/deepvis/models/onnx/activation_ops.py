"""Converters of the activations that take settings (``Clip``, ``HardSigmoid``, ``Softmax`` / ``LogSoftmax``,
``PRelu``, ``Gelu``): rectifiers stay modules (``nn.ReLU``) or ``clamp`` calls, so the backward modes know them."""

from __future__ import annotations

import torch
from torch import nn

from deepvis.models.onnx.node import Node
from deepvis.models.onnx.node import op as _op


def clip(node: Node) -> tuple[nn.Module, list[int]]:
    """``Clip`` -> ``nn.ReLU`` / ``nn.ReLU6`` for those bounds, else ``torch.clamp`` (a rectifier for backprop)."""
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


def hard_sigmoid(node: Node) -> tuple[nn.Module, list[int]]:
    """``HardSigmoid`` -> ``nn.Hardsigmoid`` for PyTorch's alpha and beta, else min/max of the line."""
    alpha, beta = float(node.attrs.get("alpha", 0.2)), float(node.attrs.get("beta", 0.5))
    if abs(alpha - 1 / 6) < 1e-6 and beta == 0.5:
        return nn.Hardsigmoid(), [0]

    def hard_sigmoid(x):  # min/max, not clamp: the backward modes leave it alone, as they do nn.Hardsigmoid
        y = alpha * x + beta
        return torch.minimum(torch.maximum(y, y.new_zeros(())), y.new_ones(()))
    return _op("HardSigmoid", hard_sigmoid), [0]


def softmax(node: Node) -> tuple[nn.Module, list[int]]:
    """``Softmax`` / ``LogSoftmax`` over ``axis`` (before opset 13: over every axis from ``axis`` on)."""
    axis = int(node.attrs.get("axis", 1 if node.opset < 13 else -1))
    module = nn.Softmax(axis) if node.op == "Softmax" else nn.LogSoftmax(axis)
    rank = len(node.shape(0))
    if node.opset >= 13 or axis % rank == rank - 1:
        return module, [0]
    flat = nn.Softmax(-1) if node.op == "Softmax" else nn.LogSoftmax(-1)  # before 13: over all axes from axis on
    return _op(node.op, lambda x: flat(x.reshape(*x.shape[:axis % rank], -1)).reshape(x.shape)), [0]


def prelu(node: Node) -> tuple[nn.Module, list[int]]:
    """``PRelu`` with a slope input of any shape."""
    return _op("PRelu", lambda x, slope: torch.where(x >= 0, x, x * slope)), [0, 1]


def gelu(node: Node) -> tuple[nn.Module, list[int]]:
    """``Gelu`` -> ``nn.GELU`` (``approximate`` none or tanh)."""
    return nn.GELU(approximate=node.text("approximate", "none")), [0]
