"""Converters of the normalizations (``BatchNormalization``, ``LayerNormalization``, ``InstanceNormalization``,
``GroupNormalization``): PyTorch's modules where the statistics and scales are constants."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from deepvis.models.onnx.node import Node
from deepvis.models.onnx.node import op as _op


class BatchNorm(nn.modules.batchnorm._BatchNorm):
    """ONNX BatchNormalization (inference) on inputs of any rank."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"BatchNormalization expects (N, C, ...) input, got shape {tuple(x.shape)}")


def batch_norm(node: Node) -> tuple[nn.Module, list[int]]:
    """``BatchNormalization`` (inference, constant statistics) -> :class:`BatchNorm`."""
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


def layer_norm(node: Node) -> tuple[nn.Module, list[int]]:
    """``LayerNormalization`` -> ``nn.LayerNorm`` with constant scale and bias, else ``F.layer_norm`` times them."""
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


def instance_norm(node: Node) -> tuple[nn.Module, list[int]]:
    """``InstanceNormalization`` with constant scale and bias -> ``F.instance_norm``."""
    scale, bias = node.const(1), node.const(2)
    eps = float(node.attrs.get("epsilon", 1e-5))
    if scale is None or bias is None:
        raise node.fail("scale and bias must be constants")
    return _op("InstanceNormalization", lambda x: F.instance_norm(
        x, weight=scale.to(x.device, x.dtype), bias=bias.to(x.device, x.dtype), eps=eps)), [0]


def group_norm(node: Node) -> tuple[nn.Module, list[int]]:
    """``GroupNormalization`` -> ``nn.GroupNorm`` (a per-group scale, opset 18, repeated per channel)."""
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
