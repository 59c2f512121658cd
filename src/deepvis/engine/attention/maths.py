"""The maths of attention: a call's probabilities from its Q, K and mask, the heads' fusion, and rollout.

Rollout (Abnar & Zuidema 2020, :func:`rollout`): each layer's heads are fused (mean, max or min), optionally the
lowest ``discard`` fraction of the fused entries are set to 0 (never a token's attention to itself), the identity is
added for the residual connection, ``A = 0.5 * W + 0.5 * I``, rows are renormalized to sum to 1, and the layers are
multiplied in order: ``R = A_L ... A_2 A_1``. Row t of R is how much token t at the top draws on each input token.
"""

from __future__ import annotations

import difflib
import math
from typing import Iterable, Mapping, Sequence, Union

import torch

from deepvis.core.errors import DeepvisError, UnitError

HEAD_FUSIONS = ("mean", "max", "min")


def _as_batch_heads(probs: torch.Tensor) -> torch.Tensor:
    """(..., L, S) -> (batch, heads, L, S): 2-D gets batch and head 1, 3-D is (batch, L, S) with one head, more
    than 4 dimensions fold the leading ones into the batch."""
    if probs.dim() == 2:
        return probs[None, None]
    if probs.dim() == 3:
        return probs[:, None]
    return probs.reshape(-1, *probs.shape[-3:])


#: Which heads or query tokens to compute: all (None), one (an int), a list of them, or a slice.
Pick = Union[int, Sequence[int], slice, None]


def _index(pick: Pick):
    return slice(None) if pick is None else [pick] if isinstance(pick, int) else pick


def _pick(probs: torch.Tensor, heads: Pick, queries: Pick) -> torch.Tensor:
    """The chosen heads and query rows of (batch, heads, L, S) probabilities (dimensions kept)."""
    if heads is not None:
        probs = probs[:, _index(heads)]
    return probs if queries is None else probs[:, :, _index(queries)]


def attention_probs(query: torch.Tensor, key: torch.Tensor, attn_mask: torch.Tensor | None = None,
                    is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False,
                    heads: Pick = None, queries: Pick = None) -> torch.Tensor:
    """The attention probabilities of a ``F.scaled_dot_product_attention`` call, ``softmax(Q K^T * scale + mask)``,
    detached, float32, as (batch, heads, L, S). Bool masks: True attends; float masks are added; ``is_causal``
    masks keys after the query (top-left aligned, as SDPA); fully masked rows are zeros.

    ``heads`` / ``queries``: compute only those heads / query rows (an int, a list or a slice; the dimensions are
    kept), e.g. one token's row of one head, which costs 1/(heads * L) of the whole map."""
    q, k = query.detach().float(), key.detach().float()
    if enable_gqa and q.dim() >= 3 and k.shape[-3] != q.shape[-3]:
        k = k.repeat_interleave(q.shape[-3] // k.shape[-3], dim=-3)
    mask = None if attn_mask is None else attn_mask.detach()
    if q.dim() > 4:  # leading dimensions beyond (batch, heads): all rows, then the chosen ones
        return _pick(attention_probs(q, k, mask, is_causal, scale), heads, queries)
    if q.dim() < 4:  # (L, E) or (batch, L, E): one head
        q, k = (q[None, None], k[None, None]) if q.dim() == 2 else (q[:, None], k[:, None])
        if mask is not None and mask.dim() == 3:
            mask = mask[:, None]
    length, source = q.shape[-2], k.shape[-2]
    if heads is not None:
        q = q[:, _index(heads)]
        k = k[:, _index(heads)] if k.shape[1] > 1 else k
        if mask is not None and mask.dim() >= 3 and mask.shape[-3] > 1:
            mask = mask[..., _index(heads), :, :]
    rows = torch.arange(length, device=q.device)[_index(queries)] if queries is not None else None
    if rows is not None:
        q = q[:, :, rows]
        if mask is not None and mask.shape[-2] > 1:
            mask = mask[..., rows, :]
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    logits = torch.matmul(q, k.transpose(-2, -1)).mul_(scale)  # one pass fewer than (q @ k^T) * scale
    if is_causal:  # key j is seen by query i when j <= i
        i = torch.arange(length, device=q.device) if rows is None else rows
        logits.masked_fill_(torch.arange(source, device=q.device) > i[:, None], float("-inf"))
    if mask is not None:
        if mask.dtype == torch.bool:
            logits.masked_fill_(~mask, float("-inf"))
        else:
            logits.add_(mask.float())
    probs = torch.softmax(logits, dim=-1)
    if mask is not None:  # a fully masked row is all -inf: NaN after softmax, zeros as SDPA gives
        probs = probs.nan_to_num_(0.0)
    return probs


def fuse_heads(attention: torch.Tensor, head_fusion: str = "mean") -> torch.Tensor:
    """(batch, heads, N, N) -> (batch, N, N): the heads' mean, max or min."""
    if head_fusion == "mean":
        return attention.mean(dim=1)
    if head_fusion == "max":
        return attention.amax(dim=1)
    if head_fusion == "min":
        return attention.amin(dim=1)
    raise DeepvisError(f"unknown head fusion {head_fusion!r}: use one of {', '.join(HEAD_FUSIONS)}")


def _discard_lowest(fused: torch.Tensor, discard: float) -> torch.Tensor:
    """Zero the lowest ``discard`` fraction of each map's N*N entries, except the diagonal (self) entries."""
    batch, n, _ = fused.shape
    count = int(n * n * discard)
    if count == 0:
        return fused
    flat = fused.reshape(batch, -1).clone()
    lowest = flat.topk(count, dim=-1, largest=False).indices
    drop = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, lowest, True)
    drop.view(batch, n, n).diagonal(dim1=1, dim2=2).fill_(False)
    return flat.masked_fill(drop, 0.0).view(batch, n, n)


def rollout(maps: Mapping[str, torch.Tensor] | Sequence[torch.Tensor], head_fusion: str = "mean",
            discard: float = 0.0, layers: Iterable[str] | None = None, token: int | None = None) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema 2020) through ``maps`` in order (a dict from :func:`record_attention`,
    or a list of (batch, heads, N, N) tensors): ``R = A_L ... A_1``, ``A = rownorm(0.5 * fuse(W) + 0.5 * I)``.

    ``head_fusion``: ``mean`` (the paper), ``max`` or ``min``; ``discard``: the fraction of each fused map's lowest
    entries set to 0 first (never the diagonal); ``layers``: the names to multiply (default all, in recording
    order), e.g. only the last few. Returns (batch, N, N): row t is what token t at the top draws on each input token;
    with ``token``, only that row, (batch, N), multiplied from the top down (vector times matrix, not matrix products).
    """
    if not 0.0 <= discard < 1.0:
        raise DeepvisError(f"discard ratio must be in [0, 1), got {discard}")
    if isinstance(maps, Mapping):
        names = list(maps) if layers is None else list(layers)
        unknown = [name for name in names if name not in maps]
        if unknown:
            raise UnitError(_unknown_attention_layer(unknown[0], list(maps)))
        chain = [maps[name] for name in names]
    else:
        chain = list(maps)
    if not chain:
        raise DeepvisError("no attention maps to roll out: the model made no attention calls")
    steps = []
    for attention in chain:
        if attention.dim() != 4 or attention.shape[-1] != attention.shape[-2]:
            raise DeepvisError(f"rollout needs (batch, heads, N, N) self-attention maps, got {tuple(attention.shape)}")
        if steps and attention.shape[-1] != steps[-1].shape[-1]:
            raise DeepvisError(f"rollout needs the same tokens in every layer, got {steps[-1].shape[-1]} then "
                               f"{attention.shape[-1]} (windowed or merging attention cannot be rolled out)")
        precise = attention.to(torch.promote_types(attention.dtype, torch.float32))  # float32, or float64 kept
        fused = _discard_lowest(fuse_heads(precise, head_fusion), discard)
        eye = torch.eye(fused.shape[-1], dtype=fused.dtype, device=fused.device)
        a = 0.5 * fused + 0.5 * eye
        a = a / a.sum(dim=-1, keepdim=True)
        if steps and a.shape[0] != steps[-1].shape[0]:
            raise DeepvisError(f"rollout needs the same batch in every layer, got {steps[-1].shape[0]} then {a.shape[0]}")
        steps.append(a)
    if token is not None:  # row t of A_L ... A_1: e_t A_L, then times A_(L-1), ..., A_1
        if not 0 <= token < steps[-1].shape[-1]:
            raise UnitError(f"token {token} is out of range: the maps attend over {steps[-1].shape[-1]} tokens")
        row = steps[-1][:, token:token + 1]
        for a in reversed(steps[:-1]):
            row = row @ a
        return row[:, 0]
    result = steps[0]
    for a in steps[1:]:
        result = a @ result
    return result


_rollout = rollout  # attention_map's argument of that name hides the function


def _unknown_attention_layer(layer: str, names: list[str]) -> str:
    close = difflib.get_close_matches(layer, names, n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(repr(c) for c in close)}?" if close else \
        f"the attention layers are {', '.join(names) if names else '(none: the model made no attention calls)'}"
    return f"layer '{layer}' made no attention call; {hint}"
