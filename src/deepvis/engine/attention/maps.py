"""The recorded attention of one forward pass: each call's inputs kept, its probabilities computed when read."""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, Mapping

import torch
from torch import nn

from deepvis.core.errors import DeepvisError, UnitError
from deepvis.engine.attention.maths import Pick, _pick, _unknown_attention_layer


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
