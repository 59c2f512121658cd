"""The panes of the live toolbox: a tab's view request, parsed and checked, and everything it shows, rendered.

A tab sends its whole view state with each request (cursor, modes, boosts); :func:`view` answers with every pane
as PNG images and numbers. The computing is the toolbox's (cached forward and backward passes) and render's.

The unit grid carries no selection or frozen-origin rings (the page draws them over it), so it depends only on the
input, the layer, the boosts and what it shows (activations, or the backward diffs of one origin and mode): it is
rendered and encoded once per such key (:func:`grid_pane`), and a cursor move renders only the backward pass and
the enlarged unit. A tab that already shows the grid of a key sends it (``grid_key``) and gets no picture back.
"""

from __future__ import annotations

import base64
import hashlib
import math
import time
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from deepvis.pixels import render
from deepvis.engine.backprop import MODES
from deepvis.core.errors import DeepvisError
from deepvis.pixels.render import FILTERS
from deepvis.core.units import Unit
from deepvis.apps.server.overlays import ATTENTION_METHODS, TRACE_METHODS

if TYPE_CHECKING:
    from deepvis.apps.server.session import Toolbox


@dataclass(frozen=True)
class NextPass:
    """How the next input's forward pass runs, from the last view: traced in ``trace_mode`` when it showed a
    backward pass (so the first backward pass needs no other forward pass; None: a plain forward), keeping the
    graph only from ``trace_from`` (a Grad-CAM overlay without the backward pane), recording attention when it
    showed an attention overlay (references to Q and K; a map is computed when the overlay reads it)."""

    trace_mode: str | None = None
    trace_from: str | None = None
    attention: bool = False


@dataclass
class ViewRequest:
    """A tab's view state: what the panes should show."""

    input: str
    layer: str
    channel: int = 0
    cursor: str = "layers"  # 'layers' (layer list) or 'grid' (unit grid)
    boost_indiv: float = 0.0
    boost_gamma: float = 1.0
    show_back: bool = False  # 'a': the grid shows backward diffs instead of activations
    back_enabled: bool = True
    back_mode: str = "gradient"
    back_filter: str = "raw"
    back_layer: str | None = None  # the backward origin (the selected or the frozen unit)
    back_channel: int | None = None
    back_frozen: bool = False
    highlight: dict = field(default_factory=dict)
    overlay: str | None = None  # the input pane's overlay: an attribution method, 'rollout' or 'attention'; None: off
    overlay_alpha: float = 0.5
    overlay_layer: str | None = None  # the Grad-CAM layer (None: the last spatial layer before the unit's)
    overlay_head: int = 0  # attention: 0 the mean of the heads, k head k - 1 (taken modulo heads + 1)
    overlay_token: list | None = None  # attention: the [y, x] patch-grid position of the token (None: CLS)
    grid_key: str | None = None  # the key of the grid picture the tab shows: not sent again when it is unchanged

    @classmethod
    def from_json(cls, data: dict) -> "ViewRequest":
        if not isinstance(data, dict):
            raise DeepvisError("the view request must be a JSON object")
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if "input" not in known or "layer" not in known:
            raise DeepvisError("the view request needs 'input' (an input id) and 'layer' (a layer name)")
        for name in ("input", "layer", "cursor", "back_mode", "back_filter", "back_layer", "overlay", "overlay_layer",
                     "grid_key"):
            value = known.get(name)
            if value is not None and not isinstance(value, str):
                raise DeepvisError(f"bad view request: '{name}' must be a string, got {value!r:.60}")
        for name in ("show_back", "back_enabled", "back_frozen"):
            value = known.get(name)
            if value is None:
                known.pop(name, None)
            elif not isinstance(value, (bool, int)) or value not in (0, 1):
                raise DeepvisError(f"bad view request: '{name}' must be true or false, got {value!r:.60}")
            else:
                known[name] = bool(value)
        if known.get("highlight") is None or not isinstance(known["highlight"], dict):
            known.pop("highlight", None)
        try:
            request = cls(**known)
            request.channel = _integer(request.channel, "channel")
            request.boost_indiv = float(request.boost_indiv)
            request.boost_gamma = float(request.boost_gamma)
            if request.back_channel is not None:
                request.back_channel = _integer(request.back_channel, "back_channel")
            request.overlay_alpha = float(request.overlay_alpha)
            request.overlay_head = _integer(request.overlay_head, "overlay_head")
            if request.overlay_token is not None:
                if not isinstance(request.overlay_token, list) or len(request.overlay_token) != 2:
                    raise ValueError(f"'overlay_token' must be [y, x], got {request.overlay_token!r:.60}")
                request.overlay_token = [_integer(v, "overlay_token") for v in request.overlay_token]
        except (TypeError, ValueError, OverflowError) as exc:
            raise DeepvisError(f"bad view request: {exc}") from None
        if request.cursor not in ("layers", "grid"):
            raise DeepvisError(f"bad view request: 'cursor' must be 'layers' or 'grid', got {request.cursor!r:.60}")
        if request.back_channel is not None and request.back_channel < 0:
            raise DeepvisError(f"bad view request: 'back_channel' must be a non-negative integer, "
                               f"got {request.back_channel}")
        if request.back_channel is not None and request.back_layer is None:
            request.back_channel = None
        if request.back_mode not in MODES:
            raise DeepvisError(f"unknown backward mode {request.back_mode!r}: use one of {', '.join(MODES)}")
        if request.back_filter not in FILTERS:
            raise DeepvisError(f"unknown filter {request.back_filter!r}: use one of {', '.join(FILTERS)}")
        if not 0.0 <= request.overlay_alpha <= 1.0 or request.overlay_head < 0:
            raise DeepvisError("overlay_alpha must be in [0, 1] and overlay_head a non-negative integer")
        if not 0.0 <= request.boost_indiv <= 1.0 or not 0.05 <= request.boost_gamma <= 4.0:
            raise DeepvisError("boost_indiv must be in [0, 1] and boost_gamma in [0.05, 4]")
        return request


def _integer(value, name: str) -> int:
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(f"'{name}' must be an integer, got {value!r}")
    if isinstance(value, (bool, list, dict)) or value is None:
        raise ValueError(f"'{name}' must be an integer, got {value!r:.60}")
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"'{name}' must be an integer, got {value!r:.60}") from None


def _b64png(image: np.ndarray, strategy: int = zlib.Z_DEFAULT_STRATEGY) -> str:
    return base64.b64encode(render.png_bytes(image, strategy)).decode("ascii")


@dataclass
class GridPane:
    """A rendered unit grid without rings: its picture (base64 PNG), its layout, and the key that names both."""

    key: str
    png: str
    grid: render.TileGrid
    diffs: bool

    def to_json(self, shown_key: str | None) -> dict:
        """The grid pane of a view answer; no picture when the tab already shows this one (``shown_key``)."""
        grid = self.grid
        return {"key": self.key, "png": None if shown_key == self.key else self.png, "rows": grid.rows,
                "cols": grid.cols, "tile_h": grid.tile_height, "tile_w": grid.tile_width, "pad": grid.pad,
                "diffs": self.diffs}


def grid_pane(toolbox: "Toolbox", item, request: ViewRequest, origin: Unit,
              layer_diffs: torch.Tensor | None) -> GridPane:
    """The unit grid of a view, from the toolbox's cache when it was rendered before: the layer's activations, or
    with ``show_back`` the backward diffs at the layer from ``origin`` (zeros while no backward pass runs)."""
    if request.show_back:
        source = ("diffs", str(origin), request.back_mode) if layer_diffs is not None else ("zeros",)
    else:
        source = ("activations",)
    key = (item.id, request.layer, request.boost_indiv, request.boost_gamma, source)
    cached = toolbox.grids.fetch(key)
    if cached is not None:
        return cached
    shown = item.activations[request.layer]
    if request.show_back:
        shown = torch.zeros_like(shown) if layer_diffs is None else layer_diffs
    grid = render.tile_layer(shown, request.boost_indiv, request.boost_gamma, diffs=request.show_back)
    png = _b64png(grid.image, zlib.Z_RLE)  # faster than the default on every layer tried, smaller on rectified maps
    pane = GridPane(hashlib.sha1(repr(key).encode()).hexdigest()[:16], png, grid, request.show_back)
    toolbox.grids.put(key, pane, len(png) + grid.image.nbytes)  # a bound: a gray grid holds a third of that
    return pane


def view(toolbox: "Toolbox", request: ViewRequest) -> dict:
    """Render every pane for one view state: grid, per-channel values, selected unit, backward image."""
    item = toolbox.get_input(request.input)
    if request.layer not in toolbox.layer_names:
        raise DeepvisError(f"unknown layer '{request.layer}'")
    acts = item.activations[request.layer]
    channels = acts.shape[0]
    channel = min(max(request.channel, 0), channels - 1)
    start = time.perf_counter()
    in_grid = request.cursor == "grid"
    back_visible = request.back_enabled and (in_grid or request.back_frozen)
    origin = None
    if request.back_layer is not None and request.back_channel is not None:
        if request.back_layer not in toolbox.layer_names:
            raise DeepvisError(f"unknown layer '{request.back_layer}'")
        origin = Unit(request.back_layer, request.back_channel)
    if origin is None:
        origin = Unit(request.layer, channel)
    need_back = back_visible or (request.show_back and request.back_enabled)
    # how the next input's forward pass runs: traced for a backward pass, or for a Grad-CAM overlay
    toolbox.plan_next(item.id, NextPass(
        trace_mode=request.back_mode if need_back else "gradient" if request.overlay in TRACE_METHODS else None,
        trace_from=None if need_back else toolbox.overlays.graph_from(request, origin),
        attention=request.overlay in ATTENTION_METHODS and bool(toolbox.overlays.tokens)))
    backward_ms, back, layer_diffs = 0.0, None, None
    if need_back:
        grad, layer_diffs, modified, backward_ms = toolbox.backward(
            item, origin, request.back_mode, request.layer if request.show_back else None)
    render_start = time.perf_counter()
    grid = grid_pane(toolbox, item, request, origin, layer_diffs)
    maxima, values = item.channel_maxima(request.layer)
    response = {
        "layer": request.layer,
        "channel": channel,
        "grid": grid.to_json(request.grid_key),
        "values": values,
        "unit": None,
        "back": None,
        "predictions": [p.to_json() for p in item.predictions],
    }
    if in_grid:
        # the selected unit is its tile of the grid (render.unit_image, without normalizing the layer again)
        tiles = grid.grid
        row, col = divmod(channel, tiles.cols)
        top, left = row * tiles.cell[0] + tiles.pad, col * tiles.cell[1] + tiles.pad
        unit_image = tiles.image[top:top + tiles.tile_height, left:left + tiles.tile_width]
        if acts.dim() == 1:  # a fully connected layer's tiles are enlarged; its unit is one value
            unit_image = unit_image[:1, :1]
        value = float(maxima[channel])
        response["unit"] = {"png": _b64png(unit_image), "unit": f"{request.layer}:{channel}",
                            "value": value if math.isfinite(value) else None,
                            "label": toolbox.model.label(channel) if toolbox.label_layer(request.layer) else None}
    if need_back and back_visible:
        rgb = toolbox.model.preprocessing.to_rgb(grad).permute(1, 2, 0).numpy()
        # noise-like pictures (every filter but the blurred one) gain nothing from zlib's string matching: Huffman
        # coding alone is as small and the fastest
        strategy = zlib.Z_DEFAULT_STRATEGY if request.back_filter == "normblur" else zlib.Z_HUFFMAN_ONLY
        response["back"] = {"png": _b64png(render.back_image(rgb, request.back_filter), strategy),
                            "origin": str(origin), "mode": request.back_mode, "filter": request.back_filter,
                            "rectifiers_modified": modified}
    response["overlay"] = toolbox.overlays.render(item, request, origin) if request.overlay else None
    response["timing"] = {"forward_ms": round(item.forward_ms, 2), "backward_ms": round(backward_ms, 2),
                          "render_ms": round((time.perf_counter() - render_start) * 1000, 2),
                          "total_ms": round((time.perf_counter() - start) * 1000, 2)}
    return response
