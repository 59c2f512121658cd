"""Attention probabilities of vision transformers, recorded during any forward pass; attention rollout.

What is recorded (:func:`record_attention`, or ``Trace(..., attention=True)``):

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

Rollout (Abnar & Zuidema 2020, :func:`rollout`): see :mod:`deepvis.engine.attention.maths`.

The package's modules, one idea each: ``maths`` (a call's probabilities, head fusion, rollout), ``maps`` (the lazy
maps of one pass), ``recorder`` (the context that records them), ``grid`` (the patch grid and its extra tokens),
``overlay`` (one image's maps and overlays).
"""

from deepvis.engine.attention.grid import token_grid
from deepvis.engine.attention.maps import AttentionMaps
from deepvis.engine.attention.maths import HEAD_FUSIONS, Pick, attention_probs, fuse_heads, rollout
from deepvis.engine.attention.overlay import AttentionMap, attention_map, attention_maps, attention_overlay, jet
from deepvis.engine.attention.recorder import AttentionRecorder, record_attention

__all__ = ["HEAD_FUSIONS", "AttentionMap", "AttentionMaps", "AttentionRecorder", "Pick", "attention_map",
           "attention_maps", "attention_overlay", "attention_probs", "fuse_heads", "jet", "record_attention",
           "rollout", "token_grid"]
