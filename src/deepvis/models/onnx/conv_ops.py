"""Converters of convolutions and pools (``Conv``, ``ConvTranspose``, ``MaxPool``, ``AveragePool``, global pools):
the usual PyTorch modules, with subclasses for ONNX's asymmetric pads."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from deepvis.models.onnx.node import Node
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


def conv(node: Node) -> tuple[nn.Module, list[int]]:
    """``Conv`` -> ``nn.Conv1d/2d/3d`` (``PaddedConv2d`` for asymmetric pads)."""
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


def conv_transpose(node: Node) -> tuple[nn.Module, list[int]]:
    """``ConvTranspose`` -> ``nn.ConvTranspose1d/2d`` (cropped for asymmetric pads)."""
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


def pool(node: Node) -> tuple[nn.Module, list[int]]:
    """``MaxPool`` / ``AveragePool`` (2-D) -> ``nn.MaxPool2d`` / ``nn.AvgPool2d``, asymmetric pads padded first."""
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


def global_pool(node: Node) -> tuple[nn.Module, list[int]]:
    """``GlobalAveragePool`` / ``GlobalMaxPool`` -> an adaptive pool to 1x1 (2-D), a mean / max otherwise."""
    rank = len(node.shape(0)) - 2
    if node.op == "GlobalAveragePool":
        return (nn.AdaptiveAvgPool2d(1) if rank == 2 else _op(node.op, lambda x: x.mean(
            dim=tuple(range(2, x.dim())), keepdim=True))), [0]
    return (nn.AdaptiveMaxPool2d(1) if rank == 2 else _op(node.op, lambda x: x.amax(
        dim=tuple(range(2, x.dim())), keepdim=True))), [0]
