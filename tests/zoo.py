"""Small stand-ins of today's vision families, from plain torch modules, named as timm names them.

timm and torchvision do not import beside this torch, so the tests build their architectures here: the module
paths (``patch_embed.proj``, ``blocks.3.mlp.act``, ``stages.1.blocks.0.conv_dw``, ``layers.0.blocks.1.attn``) and
tensor layouts (tokens with CLS / distillation / register tokens, channels-last ConvNeXt MLPs, NHWC Swin stages)
are theirs; the sizes are small so that CPU tests stay fast. Weights are random but seeded: every factory returns
the same network each time. Usable as model specs: ``tests/zoo.py:vit``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


# ------------------------------------------------------------------------------------------------ ViT / DeiT
class PatchEmbed(nn.Module):
    """timm's PatchEmbed: a strided conv, then (N, C, gh, gw) -> (N, gh*gw, C)."""

    def __init__(self, patch: int, dim: int, channels: int = 3):
        super().__init__()
        self.patch_size = (patch, patch)
        self.proj = nn.Conv2d(channels, dim, patch, stride=patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """timm's Attention: fused qkv, ``F.scaled_dot_product_attention``, output projection."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.num_heads, self.head_dim = heads, dim // heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(batch, tokens, dim))


class MHAttention(nn.Module):
    """The same block with ``nn.MultiheadAttention`` (torchvision's and many hand-written ViTs)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, x):
        return self.attn(x, x, x, need_weights=False)[0]


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float = 2.0, attention: str = "sdpa"):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads) if attention == "sdpa" else MHAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """timm's VisionTransformer: ``cls_token`` (+ ``dist_token`` for DeiT, + ``reg_token`` registers) before the
    patches, learned ``pos_embed``, ``blocks.N``, final ``norm``, ``head`` on the CLS token (DeiT: mean of ``head``
    and ``head_dist`` on the distillation token)."""

    def __init__(self, img_size=(64, 64), patch: int = 16, dim: int = 32, depth: int = 2, heads: int = 4,
                 classes: int = 10, registers: int = 0, distilled: bool = False, attention: str = "sdpa",
                 mlp_ratio: float = 2.0, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.patch_embed = PatchEmbed(patch, dim)
        grid = (img_size[0] // patch, img_size[1] // patch)
        self.num_prefix_tokens = 1 + int(distilled) + registers
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.dist_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02) if distilled else None
        self.reg_token = nn.Parameter(torch.randn(1, registers, dim) * 0.02) if registers else None
        self.pos_embed = nn.Parameter(torch.randn(1, self.num_prefix_tokens + grid[0] * grid[1], dim) * 0.02)
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp_ratio, attention) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)
        self.head_dist = nn.Linear(dim, classes) if distilled else None

    def forward(self, x):
        x = self.patch_embed(x)
        prefix = [self.cls_token.expand(x.shape[0], -1, -1)]
        if self.dist_token is not None:
            prefix.append(self.dist_token.expand(x.shape[0], -1, -1))
        if self.reg_token is not None:
            prefix.append(self.reg_token.expand(x.shape[0], -1, -1))
        x = torch.cat(prefix + [x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        if self.head_dist is not None:
            return (self.head(x[:, 0]) + self.head_dist(x[:, 1])) / 2
        return self.head(x[:, 0])


def vit(**options) -> VisionTransformer:
    """A ViT with a CLS token on a 64x64 input (4x4 patches of 16 pixels)."""
    return VisionTransformer(**options).eval()


def vit_registers(**options) -> VisionTransformer:
    """CLS + 4 register tokens, non-square 48x80 input (3x5 patches)."""
    return VisionTransformer(img_size=(48, 80), registers=4, **options).eval()


def deit(**options) -> VisionTransformer:
    """DeiT-style: CLS + distillation tokens."""
    return VisionTransformer(distilled=True, **options).eval()


def vit_mha(**options) -> VisionTransformer:
    """Attention through ``nn.MultiheadAttention``."""
    return VisionTransformer(attention="mha", **options).eval()


def vit_base_shape(**options) -> VisionTransformer:
    """224x224 input, 16-pixel patches, 256 features: a layer shows 256 tiles of 14x14, as ViTs do."""
    return VisionTransformer(img_size=(224, 224), dim=256, depth=2, heads=4, classes=1000, **options).eval()


def vit_tiny_shape(**options) -> VisionTransformer:
    """ViT-Ti/16's shape (DeiT-Tiny): 224x224 input, 16-pixel patches, 192 features, 12 blocks of 3 heads, MLP ratio
    4, 1000 classes: a stand-in of realistic cost for benchmarks."""
    return VisionTransformer(img_size=(224, 224), dim=192, depth=12, heads=3, classes=1000, mlp_ratio=4.0,
                             **options).eval()


# ------------------------------------------------------------------------------------------------ ConvNeXt
class LayerNorm2d(nn.LayerNorm):
    """timm's LayerNorm2d: LayerNorm over the channels of an NCHW map."""

    def forward(self, x):
        return F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias,
                            self.eps).permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    """Depthwise 7x7 conv, then channels-last LayerNorm and a Linear MLP (NHWC), layer scale, residual."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv_dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, 4 * dim)
        self.gamma = nn.Parameter(torch.full((dim,), 0.5))

    def forward(self, x):
        shortcut = x
        x = self.norm(self.conv_dw(x).permute(0, 2, 3, 1))
        x = self.mlp(x) * self.gamma
        return shortcut + x.permute(0, 3, 1, 2)


class ConvNeXtStage(nn.Module):
    def __init__(self, dim_in: int, dim: int, depth: int):
        super().__init__()
        self.downsample = (nn.Sequential(LayerNorm2d(dim_in), nn.Conv2d(dim_in, dim, 2, stride=2))
                           if dim_in != dim else nn.Identity())
        self.blocks = nn.Sequential(*[ConvNeXtBlock(dim) for _ in range(depth)])

    def forward(self, x):
        return self.blocks(self.downsample(x))


class ConvNeXt(nn.Module):
    def __init__(self, dims=(16, 32, 48), depths=(1, 1, 1), classes: int = 10, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.stem = nn.Sequential(nn.Conv2d(3, dims[0], 4, stride=4), LayerNorm2d(dims[0]))
        self.stages = nn.Sequential(*[ConvNeXtStage(dims[max(i - 1, 0)], dims[i], depths[i])
                                      for i in range(len(dims))])
        self.head = nn.Sequential()
        self.head.add_module("global_pool", nn.AdaptiveAvgPool2d(1))
        self.head.add_module("flatten", nn.Flatten(1))
        self.head.add_module("norm", nn.LayerNorm(dims[-1]))
        self.head.add_module("fc", nn.Linear(dims[-1], classes))

    def forward(self, x):
        return self.head(self.stages(self.stem(x)))


def convnext(**options) -> ConvNeXt:
    """A ConvNeXt-shaped net on 64x64 inputs: NCHW blocks whose MLPs run channels-last (NHWC)."""
    return ConvNeXt(**options).eval()


# ------------------------------------------------------------------------------------------------ Swin
def window_partition(x, window: int):
    batch, height, width, channels = x.shape
    x = x.view(batch, height // window, window, width // window, window, channels)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, channels)


def window_reverse(windows, window: int, height: int, width: int):
    channels = windows.shape[-1]
    x = windows.view(-1, height // window, width // window, window, window, channels)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, height, width, channels)


class WindowAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.num_heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(batch, tokens, dim))


class SwinBlock(nn.Module):
    """timm's SwinTransformerBlock on (N, H, W, C): windowed attention (shifted on odd blocks), MLP."""

    def __init__(self, dim: int, heads: int, window: int, shift: int):
        super().__init__()
        self.window, self.shift = window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, 2 * dim)

    def forward(self, x):
        batch, height, width, channels = x.shape
        shortcut = x
        x = self.norm1(x)
        if self.shift:
            x = torch.roll(x, (-self.shift, -self.shift), dims=(1, 2))
        x = window_reverse(self.attn(window_partition(x, self.window)), self.window, height, width)
        if self.shift:
            x = torch.roll(x, (self.shift, self.shift), dims=(1, 2))
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    """(N, H, W, C) -> (N, H/2, W/2, 2C)."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x):
        batch, height, width, channels = x.shape
        x = x.reshape(batch, height // 2, 2, width // 2, 2, channels).permute(0, 1, 3, 4, 2, 5).flatten(3)
        return self.reduction(self.norm(x))


class SwinStage(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, window: int, downsample: bool):
        super().__init__()
        self.downsample = PatchMerging(dim // 2) if downsample else nn.Identity()
        self.blocks = nn.Sequential(*[SwinBlock(dim, heads, window, shift=(window // 2) * (i % 2))
                                      for i in range(depth)])

    def forward(self, x):
        return self.blocks(self.downsample(x))


class SwinPatchEmbed(nn.Module):
    def __init__(self, patch: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, stride=patch)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class SwinTransformer(nn.Module):
    def __init__(self, dim: int = 16, depths=(2, 2), heads=(2, 4), window: int = 4, classes: int = 10,
                 seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.patch_embed = SwinPatchEmbed(4, dim)
        self.layers = nn.Sequential(*[SwinStage(dim * 2 ** i, depths[i], heads[i], window, downsample=i > 0)
                                      for i in range(len(depths))])
        self.norm = nn.LayerNorm(dim * 2 ** (len(depths) - 1))
        self.head = nn.Linear(dim * 2 ** (len(depths) - 1), classes)

    def forward(self, x):
        x = self.norm(self.layers(self.patch_embed(x)))
        return self.head(x.mean(dim=(1, 2)))


def swin(**options) -> SwinTransformer:
    """A Swin-shaped net on 64x64 inputs: NHWC stages (16x16, then 8x8), windows of 4, shifted every other block."""
    return SwinTransformer(**options).eval()


# ------------------------------------------------------------------------------------------------ ResNet
class BasicBlock(nn.Module):
    """torchvision's / timm's BasicBlock: conv-bn-relu, conv-bn, optional 1x1 downsample, residual, relu."""

    def __init__(self, dim_in: int, dim: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(dim_in, dim, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(dim)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(dim, dim, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(dim)
        self.downsample = (nn.Sequential(nn.Conv2d(dim_in, dim, 1, stride=stride, bias=False), nn.BatchNorm2d(dim))
                           if stride != 1 or dim_in != dim else None)

    def forward(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(x)) + shortcut)


class ResNet(nn.Module):
    """torchvision's ResNet layout (``conv1``, ``bn1``, ``relu``, ``maxpool``, ``layer1..``, ``fc``), small."""

    def __init__(self, dims=(8, 16, 24), classes: int = 10, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv1 = nn.Conv2d(3, dims[0], 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(dims[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        for i, dim in enumerate(dims):
            self.add_module(f"layer{i + 1}", nn.Sequential(BasicBlock(dims[max(i - 1, 0)], dim, 1 if i == 0 else 2),
                                                           BasicBlock(dim, dim)))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(dims[-1], classes)
        _randomize_batchnorm(self)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _randomize_batchnorm(net: nn.Module) -> None:
    """Non-trivial BatchNorm statistics, so a folded or mis-converted BatchNorm shows in the outputs."""
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.3, 0.3)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)


def resnet(**options) -> ResNet:
    """A ResNet-shaped net (BasicBlocks with BatchNorm, in-place ReLU modules, strided 1x1 shortcuts) on 64x64."""
    return ResNet(**options).eval()


# ------------------------------------------------------------------------------------------------ MobileNetV3
class SqueezeExcite(nn.Module):
    """torchvision's SqueezeExcitation: pool, 1x1 conv, ReLU, 1x1 conv, Hardsigmoid, scale."""

    def __init__(self, dim: int, squeeze: int):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(dim, squeeze, 1)
        self.activation = nn.ReLU()
        self.fc2 = nn.Conv2d(squeeze, dim, 1)
        self.scale_activation = nn.Hardsigmoid()

    def forward(self, x):
        return x * self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))


class InvertedResidual(nn.Module):
    """Expand 1x1, depthwise kxk, optional squeeze-excite, project 1x1; residual when shapes allow."""

    def __init__(self, dim_in: int, hidden: int, dim: int, kernel: int, stride: int, se: bool, act: type):
        super().__init__()
        layers = [nn.Conv2d(dim_in, hidden, 1, bias=False), nn.BatchNorm2d(hidden), act(),
                  nn.Conv2d(hidden, hidden, kernel, stride, kernel // 2, groups=hidden, bias=False),
                  nn.BatchNorm2d(hidden), act()]
        if se:
            layers.append(SqueezeExcite(hidden, max(8, hidden // 4)))
        layers += [nn.Conv2d(hidden, dim, 1, bias=False), nn.BatchNorm2d(dim)]
        self.block = nn.Sequential(*layers)
        self.use_res_connect = stride == 1 and dim_in == dim

    def forward(self, x):
        return x + self.block(x) if self.use_res_connect else self.block(x)


class MobileNetV3(nn.Module):
    """torchvision's MobileNetV3 layout (``features.N.block``, ``avgpool``, ``classifier``) with Hardswish and
    squeeze-excite, small."""

    def __init__(self, classes: int = 10, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.features = nn.Sequential(
            nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.Hardswish()),
            InvertedResidual(16, 16, 16, 3, 2, se=True, act=nn.ReLU),
            InvertedResidual(16, 48, 24, 3, 2, se=False, act=nn.ReLU),
            InvertedResidual(24, 64, 24, 5, 1, se=True, act=nn.Hardswish),
            nn.Sequential(nn.Conv2d(24, 96, 1, bias=False), nn.BatchNorm2d(96), nn.Hardswish()))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(96, 64), nn.Hardswish(), nn.Dropout(0.2), nn.Linear(64, classes))
        _randomize_batchnorm(self)

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def mobilenetv3(**options) -> MobileNetV3:
    """A MobileNetV3-shaped net (Hardswish, squeeze-excite with Hardsigmoid, depthwise convs) on 64x64."""
    return MobileNetV3(**options).eval()


# ------------------------------------------------------------------------------------------------ TF "same" padding
def pad_same(x, kernel: int, stride: int, dilation: int = 1, value: float = 0.0):
    """timm's ``pad_same``: TensorFlow's SAME padding computed from the input size (asymmetric when odd)."""
    height, width = x.shape[-2:]
    pad_h = max((math.ceil(height / stride) - 1) * stride + (kernel - 1) * dilation + 1 - height, 0)
    pad_w = max((math.ceil(width / stride) - 1) * stride + (kernel - 1) * dilation + 1 - width, 0)
    return F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2], value=value)


class Conv2dSame(nn.Conv2d):
    """timm's Conv2dSame: TF-style SAME padding by ``F.pad`` with pads computed from the input shape."""

    def forward(self, x):
        x = pad_same(x, self.kernel_size[0], self.stride[0], self.dilation[0])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MaxPool2dSame(nn.MaxPool2d):
    def forward(self, x):
        x = pad_same(x, self.kernel_size, self.stride, value=-float("inf"))
        return F.max_pool2d(x, self.kernel_size, self.stride, 0, self.dilation, self.ceil_mode)


class TfSameNet(nn.Module):
    """A TF-ported net (EfficientNet-TF / MnasNet ports in timm): SAME-padded strided convs and pool, SiLU, on
    an odd-sized input so the pads are asymmetric."""

    def __init__(self, classes: int = 10, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv_stem = Conv2dSame(3, 16, 3, stride=2, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.act1 = nn.SiLU()
        self.pool = MaxPool2dSame(3, 2)
        self.conv_dw = Conv2dSame(16, 16, 5, stride=2, groups=16)
        self.act2 = nn.ReLU()
        self.conv_pw = Conv2dSame(16, 24, 1)
        self.act3 = nn.ReLU6()
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(24, classes)
        _randomize_batchnorm(self)

    def forward(self, x):
        x = self.pool(self.act1(self.bn1(self.conv_stem(x))))
        x = self.act3(self.conv_pw(self.act2(self.conv_dw(x))))
        return self.classifier(self.global_pool(x).flatten(1))


def tf_same(**options) -> TfSameNet:
    """TF-style SAME padding (F.pad with pads computed from the input shape); use an odd input such as 61x67."""
    return TfSameNet(**options).eval()


# ------------------------------------------------------------------------------------------------ U-Net
class DoubleConv(nn.Sequential):
    def __init__(self, dim_in: int, dim: int):
        super().__init__(nn.Conv2d(dim_in, dim, 3, padding=1), nn.BatchNorm2d(dim), nn.ReLU(),
                         nn.Conv2d(dim, dim, 3, padding=1), nn.BatchNorm2d(dim), nn.ReLU())


class UNet(nn.Module):
    """A U-Net (``inc``, ``down1..``, ``up1..``, ``outc``): max-pool encoder, a ConvTranspose2d and an
    F.interpolate (bilinear, then nearest) decoder with skip concats; per-pixel class maps as output."""

    def __init__(self, classes: int = 3, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.inc = DoubleConv(3, 8)
        self.down1 = nn.Sequential(nn.MaxPool2d(2), DoubleConv(8, 16))
        self.down2 = nn.Sequential(nn.MaxPool2d(2), DoubleConv(16, 24))
        self.up1 = nn.ConvTranspose2d(24, 16, 2, stride=2)
        self.conv_up1 = DoubleConv(32, 16)
        self.conv_up2 = DoubleConv(24, 8)
        self.outc = nn.Conv2d(8, classes, 1)
        _randomize_batchnorm(self)

    def forward(self, x):
        x1 = self.inc(x)
        x2 = self.down1(x1)
        x3 = self.down2(x2)
        x = self.conv_up1(torch.cat([x2, self.up1(x3)], dim=1))
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        x = self.conv_up2(torch.cat([x1, x], dim=1))
        x = F.interpolate(x, size=(x.shape[-2] // 2, x.shape[-1] // 2), mode="nearest")
        return self.outc(x)


def unet(**options) -> UNet:
    """A U-Net-shaped net on 32x48 inputs: ConvTranspose2d, bilinear and nearest F.interpolate, skip concats."""
    return UNet(**options).eval()


# ------------------------------------------------------------------------------------------------ tiny CNN
def tiny_cnn(input_size: int = 24, labels: bool = False):
    """The optimize and feature-visualization tests' net: conv1 relu1 pool1 conv2 (16 channels) relu2 pool2 flat fc
    (10 outputs), seeded, as a ``deepvis.Model`` on ``input_size`` squares with a non-trivial mean and std, and
    labels ``0`` ... ``9`` when asked (``tests/zoo.py:tiny_cnn``; ``tiny_cnn_32`` for 32 px with labels)."""
    import deepvis

    torch.manual_seed(0)
    net = nn.Sequential()
    net.add_module("conv1", nn.Conv2d(3, 8, 3, padding=1))
    net.add_module("relu1", nn.ReLU())
    net.add_module("pool1", nn.MaxPool2d(2))
    net.add_module("conv2", nn.Conv2d(8, 16, 3, padding=1))
    net.add_module("relu2", nn.ReLU())
    net.add_module("pool2", nn.AdaptiveAvgPool2d(2))
    net.add_module("flat", nn.Flatten())
    net.add_module("fc", nn.Linear(64, 10))
    pre = deepvis.Preprocessing(input_size=(input_size, input_size), mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))
    return deepvis.Model(net=net, preprocessing=pre, labels=[str(i) for i in range(10)] if labels else None)


def tiny_cnn_32():
    """``tiny_cnn(32, labels=True)``, as a model spec: ``tests/zoo.py:tiny_cnn_32``."""
    return tiny_cnn(32, labels=True)


class ConvMeanFC(nn.Module):
    """One strided conv, a ReLU, a global mean and a linear layer: no max pooling, no normalization."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2)
        self.fc = nn.Linear(4, 5)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))
