"""Converters of the linear algebra (``Gemm``, ``MatMul``, ``Einsum``): ``nn.Linear`` where the matrix is a constant."""

from __future__ import annotations

import torch
from torch import nn

from deepvis.models.onnx.node import Node
from deepvis.models.onnx.node import op as _op


def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    module = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    module.weight.data.copy_(weight)
    if bias is not None:
        module.bias.data.copy_(bias.expand(weight.shape[0]))
    return module


def gemm(node: Node) -> tuple[nn.Module, list[int]]:
    """``Gemm`` -> ``nn.Linear`` when B is a constant and C at most 1-D, else the product of its inputs."""
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


def matmul(node: Node) -> tuple[nn.Module, list[int]]:
    """``MatMul`` -> ``nn.Linear`` by a constant float 2-D matrix, else ``torch.matmul``."""
    weight = node.const(1)
    if weight is not None and weight.dim() == 2 and weight.is_floating_point():
        return _linear(weight.t(), None), [0]
    return _op("MatMul", torch.matmul), [0, 1]


def einsum(node: Node) -> tuple[nn.Module, list[int]]:
    """``Einsum`` -> ``torch.einsum`` of its equation."""
    equation = node.text("equation", "")
    return _op("Einsum", lambda *xs: torch.einsum(equation, *xs)), list(range(len(node.inputs)))
