"""How a layer's raw output maps to channels x height x width: the one place that knows.

- ``maps``: (N, C, H, W), convolution maps (also (N, C, L) sequences, kept as they are);
- ``nhwc``: (N, H, W, C), channels last (ConvNeXt MLPs, Swin stages, a ``Linear`` over the last dim of a 4-D tensor);
- ``tokens``: (N, T, D) with T = E extra tokens (CLS, distillation, registers) + a gh x gw patch grid: D channels on
  the grid, the extra tokens beside it (before the patches, as timm, HF transformers and torchvision put them,
  unless a model config says ``extra_first = false``);
- ``vector``: (N, C), fully connected features.

:func:`to_view` turns a raw output into the (N, C, H, W) view (or (N, C) for vectors) and :func:`extra_view` gives
the extra tokens as (N, C, E); both are differentiable views of the raw tensor, so a backward pass can start from
them. Every consumer (tiles, units, start signals, find-max, crops, receptive fields, objectives, the server) reads
layers through them: the :class:`~deepvis.engine.probe.Probe` records views.

Layouts are found once when the layer catalog is built (:func:`detect_layout`): the dimensions that grow when the
input grows are the spatial ones (so ``(H, W, C)`` is told from ``(C, H, W)`` whatever the sizes), and a 2-D
output whose length is the patch grid plus a few tokens is a token sequence. A model config file can state a
layer's layout where detection cannot tell.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from deepvis.core.errors import ModelError

#: How a layer's raw output is laid out (a :class:`Layout`'s ``kind``; not a store's picture kinds).
LAYOUT_KINDS = ("maps", "nhwc", "tokens", "vector")
#: The most extra tokens a token layer may have (CLS, distillation and register tokens; DINOv2 uses 1 + 4).
MAX_EXTRA_TOKENS = 64


@dataclass(frozen=True)
class Layout:
    """A layer's layout: its kind (one of :data:`LAYOUT_KINDS`) and, for token layers, the patch grid and the number
    of extra tokens."""

    kind: str = "maps"
    grid: tuple[int, int] | None = None  # tokens: (gh, gw)
    extra_tokens: int = 0  # tokens: E
    extra_first: bool = True  # tokens: the extra tokens come before the patches

    def __post_init__(self):
        if self.kind not in LAYOUT_KINDS:
            raise ModelError(f"unknown layout {self.kind!r}: use one of {', '.join(LAYOUT_KINDS)}")

    def view_shape(self, raw_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The (C, H, W) (or (C,)) shape of the view of a raw output shape (no batch dimension)."""
        if self.kind == "nhwc":
            height, width, channels = raw_shape
            return channels, height, width
        if self.kind == "tokens":
            return (raw_shape[1],) + tuple(self.grid)
        return tuple(raw_shape)

    def describe(self, raw_shape: tuple[int, ...]) -> str:
        """``maps 80x14x14``, ``nhwc 128x56x56``, ``tokens 256x14x14 +1``, ``vector 1000``."""
        text = f"{self.kind} {'x'.join(map(str, self.view_shape(raw_shape)))}"
        if self.kind == "tokens" and self.extra_tokens:
            text += f" +{self.extra_tokens}" if self.extra_first else f" +{self.extra_tokens} after"
        return text

    def to_json(self) -> dict:
        data: dict = {"kind": self.kind}
        if self.kind == "tokens":
            data.update(grid=list(self.grid), extra_tokens=self.extra_tokens, extra_first=self.extra_first)
        return data

    @classmethod
    def from_json(cls, data: dict | str | None) -> "Layout":
        if data is None:
            return cls()
        if isinstance(data, str):
            return cls(data)
        grid = data.get("grid")
        return cls(data.get("kind", "maps"), tuple(grid) if grid else None, int(data.get("extra_tokens", 0)),
                   bool(data.get("extra_first", True)))


MAPS = Layout()


def to_view(raw: torch.Tensor, layout: Layout) -> torch.Tensor:
    """The (N, C, H, W) view of a layer's raw output (batch first), or the raw output where it already is one."""
    if layout.kind == "nhwc":
        return raw.permute(0, 3, 1, 2)
    if layout.kind == "tokens":  # views all the way (no copy): (N, T, D) -> (N, gh, gw, D) -> (N, D, gh, gw)
        patches = raw.shape[1] - layout.extra_tokens
        start = layout.extra_tokens if layout.extra_first else 0
        return raw.narrow(1, start, patches).unflatten(1, tuple(layout.grid)).permute(0, 3, 1, 2)
    return raw


def extra_view(raw: torch.Tensor, layout: Layout) -> torch.Tensor | None:
    """A token layer's extra tokens as (N, C, E), None for other layouts (or none there)."""
    if layout.kind != "tokens" or not layout.extra_tokens:
        return None
    start = 0 if layout.extra_first else raw.shape[1] - layout.extra_tokens
    return raw.narrow(1, start, layout.extra_tokens).transpose(1, 2)


def patch_grid(modules: dict[str, nn.Module], shapes: dict[str, tuple[int, ...] | None],
               order: list[str]) -> tuple[int, int] | None:
    """The patch grid of a vision transformer: the output size of the first convolution (in forward order) whose
    stride equals its kernel and is larger than 1 (timm's ``patch_embed.proj``, HF's ``patch_embeddings.projection``,
    torchvision's ``conv_proj``). None when the network has none."""
    for name in order:
        module = modules.get(name)
        if isinstance(module, nn.Conv2d) and tuple(module.stride) == tuple(module.kernel_size) \
                and max(module.stride) > 1:
            shape = shapes.get(name)
            if shape is not None and len(shape) == 3:
                return shape[1], shape[2]
    return None


def _grid_like(a: int, b: int, input_size: tuple[int, int] | None) -> bool:
    """Whether (a, b) can be the spatial grid of an ``input_size`` input: one integer stride for both sides."""
    if input_size is None or a < 1 or b < 1:
        return False
    stride_h, stride_w = input_size[0] / a, input_size[1] / b
    return abs(stride_h - stride_w) <= 0.25 * max(stride_h, stride_w) and max(stride_h, stride_w) >= 1


def detect_layout(module: nn.Module, shape: tuple[int, ...] | None, grown: tuple[int, ...] | None,
                  grid: tuple[int, int] | None, grown_grid: tuple[int, int] | None = None,
                  input_size: tuple[int, int] | None = None, before: Layout | None = None) -> Layout:
    """A layer's layout from its output shape at the model's input size (``shape``) and, where the network also
    runs at a larger input, its shape there (``grown``); ``grid`` / ``grown_grid``: the patch grid at both sizes.

    Dimensions that grow with the input are spatial: (C, H, W) grows in its last two, (H, W, C) in its first two.
    A 2-D output of E + gh * gw rows (E small) is a token sequence. A network that runs at one size only (a learned
    position embedding, an ONNX graph) is read from the shape: the pair of dimensions that fits the input with one
    stride is the grid; where both pairs fit (C = H = W), a ``Linear`` or ``LayerNorm`` over the last dimension is
    channels-last, and an output shaped as the layer before it (``before``: an activation after a Linear) keeps
    that layer's layout.
    """
    if shape is None:
        return MAPS
    if len(shape) == 1:
        return Layout("vector")
    if len(shape) == 3:
        if grown is not None and len(grown) == 3:
            growing = tuple(g != s for g, s in zip(grown, shape))
            if growing == (True, True, False):
                return Layout("nhwc")
            if growing == (False, True, True):
                return MAPS
        last, first = _grid_like(shape[0], shape[1], input_size), _grid_like(shape[1], shape[2], input_size)
        if last != first:
            return Layout("nhwc") if last else MAPS
        if isinstance(module, (nn.Linear, nn.LayerNorm)):
            return Layout("nhwc")
        if before is not None and before.kind == "nhwc":
            return before
        return MAPS
    if len(shape) == 2 and grid is not None:
        extra = shape[0] - grid[0] * grid[1]
        if 0 <= extra <= MAX_EXTRA_TOKENS:
            if grown is not None and grown_grid is not None and len(grown) == 2 \
                    and grown[0] - grown_grid[0] * grown_grid[1] != extra:
                return MAPS  # its length does not follow the patch grid: not tokens
            return Layout("tokens", tuple(grid), extra)
    return MAPS


def parse_layout(text: str, grid: tuple[int, int] | None, layer: str = "") -> Layout:
    """A layout as a model config file states it: ``maps``, ``nhwc``, ``vector``, ``tokens`` (no extra tokens),
    ``tokens+E`` (E extra tokens before the patches) or ``tokens+E after``; token layouts use the patch grid."""
    words = str(text).strip().lower().split()
    layout_kind, _, extra = (words[0] if words else "").partition("+")
    after = words[1:] == ["after"]
    if layout_kind not in LAYOUT_KINDS or (words[1:] and not after) or (layout_kind != "tokens" and (extra or after)) \
            or (extra and not extra.isdigit()):
        raise ModelError(f"layout of layer '{layer}': expected maps, nhwc, vector, tokens, tokens+E or "
                         f"'tokens+E after', got {text!r}")
    if layout_kind != "tokens":
        return Layout(layout_kind)
    if grid is None:
        raise ModelError(f"layout of layer '{layer}': tokens need a patch grid, and the network has no patch "
                         "embedding (a convolution whose stride equals its kernel)")
    return Layout("tokens", tuple(grid), int(extra or 0), not after)
