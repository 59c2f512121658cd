"""Small stand-ins of today's vision families, from plain torch modules, named as timm names them.

timm and torchvision do not import beside this torch, so the tests build their architectures here: the module
paths (``patch_embed.proj``, ``blocks.3.mlp.act``, ``stages.1.blocks.0.conv_dw``, ``layers.0.blocks.1.attn``) and
tensor layouts (tokens with CLS / distillation / register tokens, channels-last ConvNeXt MLPs, NHWC Swin stages)
are theirs; the sizes are small so that CPU tests stay fast. Weights are random but seeded: every factory returns
the same network each time. Usable as model specs: ``tests/zoo.py:vit``.
"""

from __future__ import annotations

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
