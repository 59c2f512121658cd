"""Recording the attention probabilities of every attention call during forward passes (what is recorded: see
:mod:`deepvis.engine.attention`).

Two hook styles, both owned here: ``F.scaled_dot_product_attention`` is replaced, while any recorder is inside its
context, by one wrapper shared by all of them (installed by the first to enter, removed by the last to exit, in
whatever order they exit); each recorder registers and removes its own module hooks (a new pass; the modules with
a fast path). A failed ``__enter__`` leaves nothing behind.
"""

from __future__ import annotations

import inspect
import math
import sys
import threading
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from deepvis.core.errors import DeepvisError
from deepvis.engine.attention.maps import AttentionMaps, _Call
from deepvis.engine.attention.maths import Pick, _as_batch_heads, _pick, attention_probs
from deepvis.models.model import Model

#: Modules with a fast path that a torch-function mode disables: the mode steps aside while they run.
_FAST_PATHS = (nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerEncoder)
_SDPA_PARAMS = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")

# SDPA calls are seen through ``F.scaled_dot_product_attention`` itself, replaced while recording by a wrapper
# that hands each call to the recorders of the calling thread: no function mode, so no Python dispatch on every
# other operation of the forward pass (a mode cost about 10-15% of a ViT's forward). Modules look the function up
# when they call it (timm, transformers, torch's own multi_head_attention_forward).
_lock = threading.Lock()
_recorders: list["AttentionRecorder"] = []  # those inside their context now, in the order they entered
_wrapper: Callable | None = None  # the wrapper installed while _recorders is not empty


def _install() -> None:
    """Put the recording wrapper in place of ``F.scaled_dot_product_attention`` (called under ``_lock``)."""
    global _wrapper
    original = F.scaled_dot_product_attention

    def scaled_dot_product_attention(*args, **kwargs):
        out = original(*args, **kwargs)
        if _recorders:
            thread = threading.get_ident()
            for recorder in tuple(_recorders):
                if recorder._thread == thread and not recorder._mha_depth:  # an nn.MultiheadAttention records itself
                    recorder._record_sdpa(args, kwargs)
        return out

    scaled_dot_product_attention.__wrapped__ = original
    F.scaled_dot_product_attention = _wrapper = scaled_dot_product_attention


def _uninstall() -> None:
    """Put the function found by :func:`_install` back (called under ``_lock``). Should other code have replaced
    it since, by a wrapper of its own around ours, that stays, and ours passes calls through until it is gone."""
    global _wrapper
    if _wrapper is not None and F.scaled_dot_product_attention is _wrapper:
        F.scaled_dot_product_attention = _wrapper.__wrapped__
    _wrapper = None


class AttentionRecorder:
    """Records the attention probabilities of every attention call during forward passes of ``model`` (see
    :mod:`deepvis.engine.attention`) into ``maps`` (:class:`AttentionMaps`); the model's outputs are unchanged, and
    hooks and the wrapper are removed on exit, even on errors. Made by :func:`record_attention`.

    The forward pass only keeps references: each layer's probabilities are computed when first read, so a pass
    whose maps are never read costs about what an unrecorded one costs. ``eager=True`` computes them during the
    pass instead (for models that change Q, K or the mask in place afterwards, or weights trained in between).

    Recorders nest, and may exit in any order: each removes its own hooks, and the others keep recording.
    """

    def __init__(self, model: Model | nn.Module, eager: bool = False):
        self.net = model.net if isinstance(model, Model) else model
        self.eager = eager
        self.maps = AttentionMaps()
        self._handles: list = []
        self._thread: int | None = None  # the thread that entered: only its calls are recorded
        self._names: dict[int, str] = {}  # id(module) -> its layer name, to name an attention call's caller
        self._stack: list[str] = []  # the fast-path modules running now, innermost last
        self._self_attn_calls: list[int] = []  # per running fast-path module: its self_attn's calls before it ran
        self._mha_depth = 0  # nn.MultiheadAttention modules running now (they record themselves)
        self._counts: dict[str, int] = {}  # calls recorded per layer in this pass

    # --------------------------------------------------------------------------------------- hooks and wrapper
    def __enter__(self) -> "AttentionRecorder":
        if any(recorder is self for recorder in _recorders):
            raise DeepvisError("this attention recorder is recording already: make a new one to nest")
        try:
            if not isinstance(self.net, torch.jit.ScriptModule):  # compiled code calls no Python functions to see
                # Hooks only where needed (a new pass; fast-path modules): an attention call finds the module that
                # made it by walking up the Python stack, so ordinary modules run with no extra Python work at all.
                self._names = {id(module): name for name, module in self.net.named_modules()}
                self._handles.append(self.net.register_forward_pre_hook(self._new_pass))
                for name, module in self.net.named_modules():
                    if isinstance(module, _FAST_PATHS):
                        self._handles.append(module.register_forward_pre_hook(self._pre_hook(name),
                                                                              with_kwargs=True))
                        self._handles.append(module.register_forward_hook(self._post_hook(name), with_kwargs=True,
                                                                          always_call=True))
            self._thread = threading.get_ident()
            with _lock:
                if not _recorders:
                    _install()
                _recorders.append(self)
        except BaseException:  # nothing of a failed entry stays: hooks removed, the wrapper only if ours alone
            self._remove_hooks()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._remove_hooks()
        with _lock:
            if any(recorder is self for recorder in _recorders):
                _recorders[:] = [recorder for recorder in _recorders if recorder is not self]
                if not _recorders:
                    _uninstall()

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


def record_attention(model: Model | nn.Module, eager: bool = False) -> AttentionRecorder:
    """A context that records the attention probabilities of every attention call during forward passes of
    ``model`` into its ``maps`` (see :class:`AttentionRecorder`).

    >>> with record_attention(model) as rec:
    ...     model.net(x)
    >>> rec.maps["blocks.0.attn"].shape      # (batch, heads, tokens, tokens)
    """
    return AttentionRecorder(model, eager)
