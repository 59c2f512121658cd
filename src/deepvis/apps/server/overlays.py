"""The input pane's overlay: an attribution map or the attention of the selected unit, over the input.

Computed through the engine (:mod:`deepvis.attribution`, :mod:`deepvis.attention`), cached per input: heat maps
by (input, unit, method, settings), the attention maps of an input (one forward pass, on demand) in a small LRU,
and Grad-CAM taken from the toolbox's kept trace of the input (a backward pass to the Grad-CAM layer, no forward
pass): the gradient-mode trace the next frame gets while a Grad-CAM overlay is on, or the backward pane's trace in
any mode whose rules change no rectifier between the Grad-CAM layer and the unit
(:func:`deepvis.attribution.plain_gradient_at`).
"""

from __future__ import annotations

import base64
import threading
import time

import numpy as np

from deepvis.core.errors import DeepvisError
from deepvis.core.units import Unit
from deepvis.engine import attention, attribution
from deepvis.models.model import Model
from deepvis.pixels import render
from deepvis.apps.server.cache import LRU
from deepvis.apps.server.inputs import Input
from deepvis.apps.server.requests import ViewRequest

ATTENTION_METHODS = ("rollout", "attention")
#: The live toolbox's settings of the batched methods (smaller than the CLI's: one view should stay interactive).
LIVE_STEPS = 16
LIVE_SAMPLES = 16
#: Methods whose Grad-CAM comes from the toolbox's kept trace of the input (traced in gradient mode when asked).
TRACE_METHODS = ("gradcam", "gradcam++")


class Overlays:
    """Overlay heat maps of a toolbox's inputs, cached."""

    def __init__(self, model: Model, recorded: list[str], lock: threading.Lock, traces: LRU):
        """Overlays of ``model``'s inputs: ``recorded`` the layers each forward pass records, ``lock`` the model's
        (one pass at a time), ``traces`` the kept traces by input id (Grad-CAM from the trace of an input)."""
        self.model = model
        self.recorded = recorded
        self.lock = lock
        self.traces = traces
        self.tokens = [i for i in model.layers() if i.layout.kind == "tokens"]
        self.methods = attribution.METHODS + (ATTENTION_METHODS if self.tokens else ())
        self._heat = LRU(64)
        self._maps = LRU(8)  # input id -> its AttentionMaps, for inputs that did not record them
        order = model.layer_names()
        self._order = {name: n for n, name in enumerate(order)}

    def info(self) -> dict:
        """What the page is told of the overlays: the methods it may ask for, and whether attention maps exist."""
        return {"methods": list(self.methods), "attention": bool(self.tokens)}

    # ---------------------------------------------------------------- heat maps
    def _cam_layer(self, unit: Unit, layer: str | None) -> str:
        if layer:
            return layer
        return attribution.default_cam_layer(self.model, unit, candidates=self.recorded)

    def graph_from(self, request: ViewRequest, unit: Unit) -> str | None:
        """The layer a new input's trace needs its graph from for this view's overlay when no backward pane needs
        more (its Grad-CAM layer, when the trace records it), else None."""
        if request.overlay not in TRACE_METHODS:
            return None
        try:
            layer = self._cam_layer(unit, request.overlay_layer)
        except DeepvisError:
            return None
        return layer if layer in self.recorded else None

    def _attribution(self, item: Input, unit: Unit, method: str, layer: str | None) -> tuple[np.ndarray, str]:
        layer = self._cam_layer(unit, layer) if method in attribution.CAM_METHODS else None
        key = (item.id, str(unit), method, layer)
        cached = self._heat.fetch(key)
        if cached is not None:
            return cached
        if layer is not None:
            attribution.check_cam_layer(self.model, unit, layer)
        with self.lock:
            traced = self.traces.fetch(item.id) if method in TRACE_METHODS else None
            if traced is not None and {layer, unit.layer} <= set(traced.activations) \
                    and attribution.plain_gradient_at(traced, layer, unit.layer):
                # the per-frame path: a backward pass to the layer of the kept trace, nothing else
                cam = attribution.gradcam_from_trace(traced, unit, layer, plus=method == "gradcam++")
                heat = attribution.upsample(cam, tuple(item.x.shape[-2:]))[0, 0].float().cpu().numpy()
            else:
                heat = attribution.attribute(self.model, item.x, unit, method, layer, steps=LIVE_STEPS,
                                             samples=LIVE_SAMPLES).map
        caption = f"{method} of {unit}" + (f" at {layer}" if layer else "")
        self._heat.put(key, (heat, caption))
        return heat, caption

    def attention_maps(self, item: Input) -> attention.AttentionMaps:
        """The attention maps of an input: recorded in its own forward pass when it was, else one more pass."""
        if item.attention is not None:
            return item.attention
        maps = self._maps.fetch(item.id)
        if maps is None:
            with self.lock:
                maps = attention.attention_maps(self.model, item.x)
            self._maps.put(item.id, maps)
        return maps

    def _attention_layer(self, names: list[str], selected: str) -> str:
        """The last attention layer that runs at or before the selected layer (the first when none does)."""
        at = self._order.get(selected, len(self._order))
        before = [name for name in names if self._order.get(name.partition("#")[0], -1) <= at]
        return before[-1] if before else names[0]

    def _attention(self, item: Input, request: ViewRequest, rollout: bool) -> tuple[np.ndarray, str]:
        maps = self.attention_maps(item)
        names = list(maps)
        if not names:
            raise DeepvisError("the model made no attention call on this input")
        layer = self._attention_layer(names, request.layer)
        extra, (gh, gw) = attention.token_grid(self.model, tuple(item.x.shape[-2:]))
        _, heads, length, count = maps.shape(layer)
        if count != extra + gh * gw or length != count:
            raise DeepvisError(f"layer '{layer}' attends over {count} tokens, not the {extra} + {gh}x{gw} of the "
                               "patch grid (windowed attention has no one map per image)")
        token, where = 0, "CLS" if extra else "token 0"
        if request.overlay_token is not None:
            y, x = request.overlay_token
            if not (0 <= y < gh and 0 <= x < gw):
                raise DeepvisError(f"token position {y},{x} is outside the {gh}x{gw} patch grid")
            token, where = extra + y * gw + x, f"token @{y},{x}"
        head = request.overlay_head % (heads + 1) - 1  # 0: the mean of the heads, k: head k - 1
        if rollout:
            row = attention.rollout(maps, layers=names[:names.index(layer) + 1], token=token)[0]
            caption = f"rollout of {where} up to {layer}"
        else:  # only the row shown is computed: one token, one head or all heads for their mean
            rows = maps.probs(layer, heads=head if head >= 0 else None, queries=token)
            row = rows[0, 0, 0] if head >= 0 else attention.fuse_heads(rows, "mean")[0, 0]
            caption = f"attention of {where} at {layer}, {f'head {head}' if head >= 0 else 'mean of heads'}"
        return row[extra:].reshape(gh, gw).float().cpu().numpy(), caption

    # ---------------------------------------------------------------- the pane
    def render(self, item: Input, request: ViewRequest, unit: Unit) -> dict:
        """The overlay of a view: ``{png, method, caption, ms}``, or ``{error}`` when it cannot be made."""
        method = request.overlay
        start = time.perf_counter()
        try:
            if method not in self.methods:
                raise DeepvisError(f"overlay {method!r} is not available for this model: use one of "
                                   f"{', '.join(self.methods)}")
            if method in ATTENTION_METHODS:
                heat, caption = self._attention(item, request, rollout=method == "rollout")
            else:
                heat, caption = self._attribution(item, unit, method, request.overlay_layer)
        except DeepvisError as exc:
            return {"method": method, "error": str(exc).splitlines()[0]}
        pixels = np.asarray(item.image, dtype=np.float32) / 255.0
        image = render.heat_overlay(pixels, heat, request.overlay_alpha)
        # stored, not compressed: a 224-px photo under a colour map shrinks by ~18% at zlib level 1 for 2.5-3 ms
        # (~10% with Z_RLE for 1 ms), 5-10% of a webcam frame's time; the stored PNG takes 0.15 ms
        png = base64.b64encode(render.png_bytes(image, level=0)).decode("ascii")
        return {"png": png, "method": method, "caption": caption, "alpha": request.overlay_alpha,
                "ms": round((time.perf_counter() - start) * 1000, 2)}
