"""The panes of the live toolbox: everything a tab's view shows, rendered.

A tab sends its whole view state with each request (cursor, modes, boosts: :class:`.requests.ViewRequest`);
:func:`view` answers with every pane as PNG images and numbers. The computing is the toolbox's (cached forward and
backward passes) and render's.

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
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from deepvis.core.units import Unit
from deepvis.core.errors import DeepvisError
from deepvis.models.model import Model
from deepvis.pixels import render
from deepvis.apps.server.cache import LRU
from deepvis.apps.server.inputs import Input
from deepvis.apps.server.overlays import ATTENTION_METHODS, TRACE_METHODS, Overlays
from deepvis.apps.server.passes import NextPass
from deepvis.apps.server.requests import ViewRequest

__all__ = ["GridPane", "NextPass", "ViewRequest", "ViewSource", "grid_pane", "view"]


class ViewSource(Protocol):
    """What the panes use of the live toolbox (:class:`deepvis.apps.server.toolbox.Toolbox` is one): its model, the
    layers it shows, its caches and overlays, and the passes it runs."""

    model: Model
    layer_names: set[str]
    grids: LRU  # (input id, layer, boosts, source) -> GridPane
    overlays: Overlays

    def get_input(self, input_id: str) -> Input: ...

    def label_layer(self, layer: str) -> bool: ...

    def plan_next(self, input_id: str, plan: NextPass) -> None: ...

    def backward(self, item: Input, origin: Unit, mode: str,
                 layer: str | None = None) -> tuple[torch.Tensor, torch.Tensor | None, bool, float]: ...


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


def grid_pane(toolbox: ViewSource, item: Input, request: ViewRequest, origin: Unit,
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


def view(toolbox: ViewSource, request: ViewRequest) -> dict:
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
    backward_ms, layer_diffs = 0.0, None
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
