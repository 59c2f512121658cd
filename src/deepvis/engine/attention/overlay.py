"""One image's attention: every layer's maps, one token's map on the patch grid (raw or rolled out), overlays."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from deepvis.core.errors import DeepvisError, UnitError
from deepvis.engine.attention.grid import token_grid
from deepvis.engine.attention.maps import AttentionMaps
from deepvis.engine.attention.maths import HEAD_FUSIONS, _unknown_attention_layer, fuse_heads, rollout
from deepvis.engine.attention.recorder import record_attention
from deepvis.models.model import Model, as_model
from deepvis.pixels import render

_rollout = rollout  # attention_map's argument of that name hides the function


def attention_maps(model: Model | nn.Module, image, resize: str | None = None) -> AttentionMaps:
    """The attention probabilities of every attention layer for one image (path, PIL, array; a tensor is taken as
    preprocessed), each (batch, heads, N, N) as recorded (see :func:`record_attention`)."""
    model = as_model(model)
    x = model.input(image, resize)
    with torch.no_grad(), record_attention(model) as rec:
        model.net(x)
    return rec.maps


jet = render.jet  # the colour map lives in deepvis.render (attribution overlays use it too)


def attention_overlay(image, attention, alpha: float = 0.5) -> np.ndarray:
    """A (gh, gw) attention map upsampled (bilinear) to the HxWx3 ``image`` in [0, 1], scaled to [0, 1] and
    coloured (jet), blended over it: ``(1 - alpha) * image + alpha * colour``. HxWx3 float in [0, 1]."""
    heat = np.asarray(attention, dtype=np.float32)
    if heat.ndim != 2:
        raise DeepvisError(f"an attention overlay needs a 2-D map, got shape {tuple(heat.shape)}")
    pixels = image.detach().cpu() if isinstance(image, torch.Tensor) else image
    return render.heat_overlay(pixels, heat, alpha)


@dataclass
class AttentionMap:
    """What one token attends to on the patch grid, for one image: ``map`` (gh, gw) float32, ``image`` the input as
    the model saw it (HxWx3 in [0, 1]), and how it was made."""

    map: np.ndarray
    image: np.ndarray
    layer: str
    head: int | None
    token: int
    rollout: bool
    head_fusion: str
    discard: float
    extra_tokens: int

    def overlay(self, alpha: float = 0.5) -> np.ndarray:
        """The map in jet colours over the image: HxWx3 float in [0, 1]."""
        return attention_overlay(self.image, self.map, alpha)


def attention_map(model: Model | nn.Module, image, layer: str | None = None, head: int | None = None,
                  token: int = 0, rollout: bool = False, head_fusion: str = "mean", discard: float = 0.0,
                  resize: str | None = None) -> AttentionMap:
    """What ``token`` (default 0: CLS) attends to over the patch grid for one image.

    Raw (default): the attention row of ``token`` at ``layer`` (default: the last attention layer), one ``head`` or
    the heads fused by ``head_fusion``. ``rollout=True``: the rollout row of ``token`` through the layers up to and
    including ``layer`` (default: all), heads fused by ``head_fusion``, ``discard`` of the lowest entries dropped.
    """
    model = as_model(model)
    if head_fusion not in HEAD_FUSIONS:
        raise DeepvisError(f"unknown head fusion {head_fusion!r}: use one of {', '.join(HEAD_FUSIONS)}")
    x = model.input(image, resize)
    with torch.no_grad(), record_attention(model) as rec:
        model.net(x)
    maps = rec.maps
    names = list(maps)
    if not names:
        raise DeepvisError(f"model '{model.spec}' made no attention call (F.scaled_dot_product_attention or "
                           "nn.MultiheadAttention) on this image")
    layer = names[-1] if layer is None else layer
    if layer not in maps:
        raise UnitError(_unknown_attention_layer(layer, names))
    attention = maps[layer]
    heads, tokens = attention.shape[1], attention.shape[-1]
    if head is not None and not 0 <= head < heads:
        raise UnitError(f"head {head} is out of range: layer '{layer}' has {heads} heads (0-{heads - 1})")
    if head is not None and rollout:
        raise DeepvisError("a rollout fuses the heads of every layer: give --head-fusion, not a head")
    if not 0 <= token < tokens:
        raise UnitError(f"token {token} is out of range: layer '{layer}' attends over {tokens} tokens "
                        f"(0-{tokens - 1})")
    extra, (gh, gw) = token_grid(model, tuple(x.shape[-2:]))
    if tokens != extra + gh * gw or attention.shape[-2] != tokens:
        raise DeepvisError(f"layer '{layer}' attends over {tokens} tokens, not the {extra} extra + {gh}x{gw} patch "
                           "tokens of the input's grid (windowed attention, as in Swin, has no one map per image)")
    if rollout:
        row = _rollout(maps, head_fusion, discard, names[:names.index(layer) + 1], token)[0]
    else:
        row = (attention[:, head] if head is not None else fuse_heads(attention, head_fusion))[0, token]
    grid = row[extra:].reshape(gh, gw).cpu().numpy().astype(np.float32)
    pixels = model.preprocessing.denormalize(x[0].float()).clamp(0, 1).permute(1, 2, 0).cpu().numpy()
    return AttentionMap(grid, pixels, layer, head, token, rollout, head_fusion, discard, extra)
