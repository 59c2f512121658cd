"""Attention probabilities of vision transformers, recorded during any forward pass; attention rollout.

What is recorded (:class:`record_attention`, or ``Trace(..., attention=True)``):

- every call of ``F.scaled_dot_product_attention`` (timm, Hugging Face transformers, hand-written ViTs), seen by a
  wrapper that stands in for it while recording, for the recording thread only: the call itself runs unchanged
  (its output is the model's; code that imported the function by name before recording is not seen),
  and ``softmax(Q K^T * scale + mask)`` is computed from the same Q and K, detached, in float32, honouring
  ``attn_mask`` (bool: True attends; float: added), ``is_causal``, ``scale`` and ``enable_gqa``; ``dropout_p`` is
  ignored (eval). Rows whose keys are all masked out are zeros.
- every call of an ``nn.MultiheadAttention`` module (torchvision's ViT and many hand-written ones): the module runs
  as it would without recording (its fast path is kept and the outputs stay bitwise equal), then its weights are
  computed by the module itself, with ``need_weights=True, average_attn_weights=False``, from the same inputs
  (or taken from its output when the call asked for exactly those). Calls of SDPA made inside it are not recorded twice.
  ``nn.TransformerEncoderLayer`` / ``nn.TransformerEncoder`` keep their fast paths the same way; where that path
  skips the layer's ``self_attn``, its weights are asked of ``self_attn`` afterwards (named ``<layer>.self_attn``).

Recording is lazy: the forward pass keeps references to each call's inputs (Q, K, mask, flags; for
``nn.MultiheadAttention`` its arguments), and a layer's probabilities are computed when they are first read
(:class:`AttentionMaps`), or only the heads and query rows asked for (``maps.probs(layer, heads, queries)``, a
view's one token). Inputs changed in place before the read are refused; ``record_attention(model, eager=True)``
computes every map during the pass instead.

Each map is ``(batch, heads, N_query, N_key)`` and is named by the layer (dotted ``named_modules()`` name) whose
forward made the call: ``blocks.3.attn`` for timm, ``blocks.3.attn.attn`` for an ``nn.MultiheadAttention`` inside
it. A layer that attends more than once per forward pass gives ``layer``, ``layer#1``, ``layer#2``, ... in call order.
Windowed attention (Swin) is recorded as called: ``(batch * windows, heads, n, n)``, with n the tokens of one window.
``maps`` holds the latest forward pass of the model (a new top-level call starts afresh), in call order.

Rollout (Abnar & Zuidema 2020, :func:`rollout`): each layer's heads are fused (mean, max or min), optionally the
lowest ``discard`` fraction of the fused entries are set to 0 (never a token's attention to itself), the identity is
added for the residual connection, ``A = 0.5 * W + 0.5 * I``, rows are renormalized to sum to 1, and the layers are
multiplied in order: ``R = A_L ... A_2 A_1``. Row t of R is how much token t at the top draws on each input token.
"""

from __future__ import annotations

import inspect
import math
import sys
import threading
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Mapping, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from deepvis.pixels import render
from deepvis.core.errors import DeepvisError, UnitError
from deepvis.models.model import Model, as_model

HEAD_FUSIONS = ("mean", "max", "min")

_SDPA = F.scaled_dot_product_attention
#: Modules with a fast path that a torch-function mode disables: the mode steps aside while they run.
_FAST_PATHS = (nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerEncoder)
_SDPA_PARAMS = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")


def _net(model: Model | nn.Module) -> nn.Module:
    return model.net if isinstance(model, Model) else model


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


class _Call:
    """One recorded attention call: its probabilities, computed from what the call was given when first read.

    ``compute(heads, queries)`` makes them; ``tensors`` are those it reads (kept by reference, no copies), whose
    version counters must not move before it runs (an in-place change would give other probabilities)."""

    def __init__(self, compute: Callable[[Pick, Pick], torch.Tensor] | None, tensors: Iterable = (),
                 full: torch.Tensor | None = None, shape: tuple[int, int, int, int] | None = None):
        self.compute, self.full, self._shape = compute, full, shape
        self.tensors = [t for t in tensors if isinstance(t, torch.Tensor)]
        self._versions = [(t, t._version) for t in self.tensors if not t.is_inference()]  # those keep no versions

    def probs(self, layer: str, heads: Pick = None, queries: Pick = None) -> torch.Tensor:
        if self.full is not None:
            return _pick(self.full, heads, queries)
        if any(t._version != version for t, version in self._versions):
            raise DeepvisError(f"the inputs of attention layer '{layer}' (its query, key, mask or weights) were "
                               "changed in place after the forward pass: read its maps before changing them, or "
                               "record with record_attention(model, eager=True)")
        return self.compute(heads, queries)

    def shape(self, layer: str) -> tuple[int, int, int, int]:
        return tuple(self.full.shape) if self.full is not None else self._shape or tuple(self.materialize(layer).shape)

    def materialize(self, layer: str) -> torch.Tensor:
        if self.full is None:
            self.full = self.probs(layer)
            self.compute, self.tensors, self._versions = None, [], []  # drop the references to Q, K, ...
        return self.full


class AttentionMaps(Mapping):
    """Layer name -> (batch, heads, N_query, N_key) attention probabilities of one forward pass, in call order.

    Recording keeps each call's inputs (Q, K, mask: references, which autograd keeps anyway when it records) and
    computes a layer's probabilities when it is first read (``maps[layer]``, then kept); :meth:`probs` computes
    only some heads or query rows, e.g. one token's row for a view, without keeping anything."""

    def __init__(self) -> None:
        self._calls: dict[str, _Call] = {}

    def __getitem__(self, layer: str) -> torch.Tensor:
        return self._calls[layer].materialize(layer)

    def __iter__(self) -> Iterator[str]:
        return iter(self._calls)

    def __len__(self) -> int:
        return len(self._calls)

    def __repr__(self) -> str:
        done = sum(call.full is not None for call in self._calls.values())
        return f"AttentionMaps({list(self._calls)}, {done} computed)"

    def nbytes(self) -> int:
        """The memory these maps hold: computed maps and the storages of the inputs kept (not the model's weights)."""
        storages = {}
        for call in self._calls.values():
            for t in [call.full] if call.full is not None else call.tensors:
                if not isinstance(t, nn.Parameter):
                    storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return sum(storages.values())

    def shape(self, layer: str) -> tuple[int, int, int, int]:
        """(batch, heads, N_query, N_key) of ``layer``'s map, without computing it where the call tells."""
        if layer not in self._calls:
            raise UnitError(_unknown_attention_layer(layer, list(self._calls)))
        return self._calls[layer].shape(layer)

    def probs(self, layer: str, heads: Pick = None, queries: Pick = None) -> torch.Tensor:
        """The probabilities of ``layer`` for the chosen ``heads`` and ``queries`` only (an int, a list or a slice;
        dimensions kept: (batch, len(heads), len(queries), N_key)); from the whole map when it is computed."""
        if layer not in self._calls:
            raise UnitError(_unknown_attention_layer(layer, list(self._calls)))
        return self._calls[layer].probs(layer, heads, queries)


class record_attention:
    """Records the attention probabilities of every attention call during forward passes of ``model`` (see the
    module docstring) into ``maps`` (:class:`AttentionMaps`); the model's outputs are unchanged, and hooks and the
    wrapper are removed on exit, even on errors.

    The forward pass only keeps references: each layer's probabilities are computed when first read, so a pass
    whose maps are never read costs about what an unrecorded one costs. ``eager=True`` computes them during the
    pass instead (for models that change Q, K or the mask in place afterwards, or weights trained in between).

    >>> with record_attention(model) as rec:
    ...     model.net(x)
    >>> rec.maps["blocks.0.attn"].shape      # (batch, heads, tokens, tokens)
    """

    def __init__(self, model: Model | nn.Module, eager: bool = False):
        self.net = _net(model)
        self.eager = eager
        self._original = None
        self.maps = AttentionMaps()
        self._handles: list = []
        self._names: dict[int, str] = {}  # id(module) -> its layer name, to name an attention call's caller
        self._stack: list[str] = []  # the fast-path modules running now, innermost last
        self._self_attn_calls: list[int] = []  # per running fast-path module: its self_attn's calls before it ran
        self._mha_depth = 0  # nn.MultiheadAttention modules running now (they record themselves)
        self._counts: dict[str, int] = {}  # calls recorded per layer in this pass
        self._active = False

    # --------------------------------------------------------------------------------------- hooks and wrapper
    def __enter__(self) -> "record_attention":
        if not isinstance(self.net, torch.jit.ScriptModule):  # compiled code calls no Python functions to see
            # Hooks only where needed (a new pass; fast-path modules): an attention call finds the module that
            # made it by walking up the Python stack, so ordinary modules run with no extra Python work at all.
            self._names = {id(module): name for name, module in self.net.named_modules()}
            self._handles.append(self.net.register_forward_pre_hook(self._new_pass))
            for name, module in self.net.named_modules():
                if isinstance(module, _FAST_PATHS):
                    self._handles.append(module.register_forward_pre_hook(self._pre_hook(name), with_kwargs=True))
                    self._handles.append(module.register_forward_hook(self._post_hook(name), with_kwargs=True,
                                                                      always_call=True))
        # SDPA calls are seen through ``F.scaled_dot_product_attention`` itself, replaced while recording by a
        # wrapper that records only this thread's calls: no function mode, so no Python dispatch on every other
        # operation of the forward pass (a mode cost about 10-15% of a ViT's forward). Modules look the function up
        # when they call it (timm, transformers, torch's own multi_head_attention_forward).
        recorder, thread, original = self, threading.get_ident(), F.scaled_dot_product_attention

        def scaled_dot_product_attention(*args, **kwargs):
            out = original(*args, **kwargs)
            if recorder._active and not recorder._mha_depth and threading.get_ident() == thread:
                recorder._record_sdpa(args, kwargs)  # inside an nn.MultiheadAttention it records itself
            return out

        scaled_dot_product_attention.__wrapped__ = original
        self._original = original
        F.scaled_dot_product_attention = scaled_dot_product_attention
        self._active = True
        return self

    def __exit__(self, *exc) -> None:
        self._remove_hooks()
        self._active = False
        if getattr(F.scaled_dot_product_attention, "__wrapped__", None) is self._original:
            F.scaled_dot_product_attention = self._original

    def _remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._stack.clear()
        self._self_attn_calls.clear()
        self._mha_depth = 0

    def _new_pass(self, _module, _args) -> None:
        if not self._stack:  # a forward pass of the network from outside: a new set of maps
            self.maps, self._counts = AttentionMaps(), {}

    def _caller(self, depth: int = 2) -> str:
        """The layer name of the innermost module of the network whose ``forward`` is on the Python stack (from
        ``depth`` frames up: above this method and the recording wrapper)."""
        frame = sys._getframe(depth)
        while frame is not None:
            owner = frame.f_locals.get("self")
            if owner is not None and id(owner) in self._names:
                return self._names[id(owner)]
            frame = frame.f_back
        return ""

    def _pre_hook(self, name: str):
        def hook(module, args, kwargs):
            self._stack.append(name)
            self._self_attn_calls.append(self._counts.get(f"{name}.self_attn", 0))
            self._mha_depth += isinstance(module, nn.MultiheadAttention)
        return hook

    def _post_hook(self, name: str):
        def hook(module, args, kwargs, output):
            if not self._stack or self._stack[-1] != name:
                return None
            try:
                if output is not None:  # None: the forward pass failed
                    self._record_fast_path(name, module, args, kwargs, output)
            finally:
                self._self_attn_calls.pop()
                self._mha_depth -= isinstance(module, nn.MultiheadAttention)
                self._stack.pop()
            return None
        return hook

    def _record_fast_path(self, name: str, module: nn.Module, args: tuple, kwargs: dict, output) -> None:
        tensors = [*args, *kwargs.values(), *module.parameters()]
        if isinstance(module, nn.MultiheadAttention):
            weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
            if weights is not None and _per_head_weights(module, args, kwargs):  # asked for: nothing to compute
                self._record(name, _Call(None, full=_as_batch_heads(weights.detach().float())))
            else:
                self._record(name, _Call(lambda heads, queries: _pick(_mha_weights(module, args, kwargs), heads,
                                                                      queries), tensors))
        elif isinstance(module, nn.TransformerEncoderLayer):
            attn = f"{name}.self_attn"
            src = args[0] if args else kwargs.get("src")
            # its fast path did not call self_attn (no nested tensors: a padding mask can make them): ask it
            if self._counts.get(attn, 0) == self._self_attn_calls[-1] and not getattr(src, "is_nested", False):
                self._record(attn, _Call(lambda heads, queries: _pick(_encoder_layer_weights(module, args, kwargs),
                                                                      heads, queries), tensors))

    def _record_sdpa(self, args: tuple, kwargs: dict) -> None:
        bound = dict(zip(_SDPA_PARAMS, args), **kwargs)
        query, key = bound["query"].detach(), bound["key"].detach()  # views sharing their version counters
        mask = bound.get("attn_mask")
        mask = mask.detach() if isinstance(mask, torch.Tensor) else None
        causal, scale = bool(bound.get("is_causal", False)), bound.get("scale")
        gqa = bool(bound.get("enable_gqa", False))

        def compute(heads: Pick, queries: Pick) -> torch.Tensor:
            return attention_probs(query, key, mask, causal, scale, gqa, heads, queries)

        lead = query.shape[:-2]  # (batch, heads) as attention_probs folds them
        batch, heads = (1, 1) if not lead else (lead[0], 1) if len(lead) == 1 else (math.prod(lead[:-1]), lead[-1])
        shape = (batch, heads, query.shape[-2], key.shape[-2])
        self._record(self._caller(3), _Call(compute, (query, key, mask), shape=shape))

    def _record(self, layer: str, call: _Call) -> None:
        n = self._counts.get(layer, 0)
        self._counts[layer] = n + 1
        name = f"{layer}#{n}" if n else layer
        self.maps._calls[name] = call
        if self.eager:
            call.materialize(name)


def _per_head_weights(module: nn.MultiheadAttention, args: tuple, kwargs: dict) -> bool:
    """Whether a call of ``module`` asked for its weights per head (``average_attn_weights=False``)."""
    bound = inspect.signature(module.forward).bind(*args, **kwargs)
    return bound.arguments.get("average_attn_weights", True) is False


def _encoder_layer_weights(module: nn.TransformerEncoderLayer, args: tuple, kwargs: dict) -> torch.Tensor:
    """The per-head weights of an ``nn.TransformerEncoderLayer`` whose fast path skipped its ``self_attn``: that
    module asked from the same input (after ``norm1`` when ``norm_first``) and masks."""
    bound = inspect.signature(module.forward).bind(*args, **kwargs)
    bound.apply_defaults()
    src = bound.arguments["src"]
    with torch.no_grad():
        x = module.norm1(src) if module.norm_first else src
        _, weights = module.self_attn.forward(x, x, x, attn_mask=bound.arguments["src_mask"],
                                              key_padding_mask=bound.arguments["src_key_padding_mask"],
                                              need_weights=True, average_attn_weights=False,
                                              is_causal=bound.arguments["is_causal"])
    return _as_batch_heads(weights.detach().float())


def _mha_weights(module: nn.MultiheadAttention, args: tuple, kwargs: dict) -> torch.Tensor:
    """The per-head weights of one ``nn.MultiheadAttention`` call, computed by the module from the same inputs."""
    bound = inspect.signature(module.forward).bind(*args, **kwargs)
    bound.arguments["need_weights"] = True
    bound.arguments["average_attn_weights"] = False
    with torch.no_grad():
        _, weights = module.forward(*bound.args, **bound.kwargs)
    return _as_batch_heads(weights.detach().float())


# ------------------------------------------------------------------------------------------------ rollout
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
    """Attention rollout (Abnar & Zuidema 2020) through ``maps`` in order (a dict from :class:`record_attention`,
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
    import difflib

    close = difflib.get_close_matches(layer, names, n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(repr(c) for c in close)}?" if close else \
        f"the attention layers are {', '.join(names) if names else '(none: the model made no attention calls)'}"
    return f"layer '{layer}' made no attention call; {hint}"


# ------------------------------------------------------------------------------------------------ token grid
def token_grid(model: Model | nn.Module, input_size: tuple[int, int] | None = None) -> tuple[int, tuple[int, int]]:
    """The patch grid of a vision transformer on an ``input_size`` (H, W) input: ``(extra_tokens, (gh, gw))``.

    The grid is the output size of the patch embedding, found as the first ``Conv2d`` whose stride equals its
    kernel and that is applied to the input itself (timm's ``patch_embed.proj``, torchvision's ``conv_proj``,
    Hugging Face's ``embeddings.patch_embeddings.projection``). The extra tokens (CLS, distillation, registers) are
    how many more tokens than ``gh * gw`` the largest (batch, tokens, features) tensor between modules holds, with
    features the patch embedding's channels. One forward pass of zeros, no gradients.
    """
    net = _net(model)
    if input_size is None:
        if not isinstance(model, Model):
            raise DeepvisError("token_grid of a bare module needs input_size (H, W)")
        input_size = model.preprocessing.input_size
    input_size = tuple(int(v) for v in input_size)
    if isinstance(model, Model) and input_size == tuple(model.preprocessing.input_size):
        tokens = [info.layout for info in model.layers() if info.layout.kind == "tokens"]
        if tokens:  # the layer catalog read them already (deepvis.layouts)
            widest = max(tokens, key=lambda layout: layout.extra_tokens)
            return widest.extra_tokens, tuple(widest.grid)
    patch_convs = [m for m in net.modules() if isinstance(m, nn.Conv2d) and tuple(m.stride) == tuple(m.kernel_size)
                   and max(m.kernel_size) > 1]
    if not patch_convs:
        raise DeepvisError("no patch embedding found: the model has no Conv2d whose stride equals its kernel")
    channels = model.preprocessing.channels if isinstance(model, Model) else patch_convs[0].in_channels
    found: dict[str, object] = {}
    tokens: list[int] = []

    def on_conv(module, args, output):
        if "grid" not in found and args and args[0].dim() == 4 and tuple(args[0].shape[-2:]) == input_size:
            found["grid"], found["dim"] = tuple(output.shape[-2:]), output.shape[1]

    def on_any(module, args, output):
        if "grid" not in found:
            return
        for t in (args[0] if args else None, output):
            if isinstance(t, torch.Tensor) and t.dim() == 3 and t.shape[0] == 1 and t.shape[2] == found["dim"]:
                tokens.append(t.shape[1])

    handles = [m.register_forward_hook(on_conv) for m in patch_convs]
    handles += [m.register_forward_hook(on_any) for m in net.modules() if m not in patch_convs]
    device = next((p.device for p in net.parameters()), torch.device("cpu"))
    try:
        with torch.no_grad():
            net(torch.zeros(1, channels, *input_size, device=device))
    except Exception as exc:
        raise DeepvisError(f"cannot run the model on a {input_size[0]}x{input_size[1]} input to find its patch grid: "
                           f"{type(exc).__name__}: {exc}") from None
    finally:
        for handle in handles:
            handle.remove()
    if "grid" not in found:
        raise DeepvisError("no patch embedding found: no Conv2d with stride equal to its kernel is applied to the input")
    gh, gw = found["grid"]
    counts = [n for n in tokens if n >= gh * gw]
    return (max(counts) - gh * gw if counts else 0), (int(gh), int(gw))


# ------------------------------------------------------------------------------------------------ one image
def attention_maps(model: Model | nn.Module, image, resize: str | None = None) -> AttentionMaps:
    """The attention probabilities of every attention layer for one image (path, PIL, array; a tensor is taken as
    preprocessed), each (batch, heads, N, N) as recorded (see :class:`record_attention`)."""
    model = _model(model)
    x = model.input(image, resize)
    with torch.no_grad(), record_attention(model) as rec:
        model.net(x)
    return rec.maps


def _model(model: Model | nn.Module) -> Model:
    return as_model(model)


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
    model = _model(model)
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
