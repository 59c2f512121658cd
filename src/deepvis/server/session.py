"""What the live toolbox computes: inputs, their cached forward pass, backward passes, and the rendered panes.

One :class:`Toolbox` serves every browser tab. Tabs keep their own view state (cursor, modes, boosts) and send it
with each request, so the server holds only caches: a forward pass per input (moving the cursor on a still image
never reruns it) and a few backward passes. The model is used by one request at a time.
"""

from __future__ import annotations

import base64
import hashlib
import math
import struct
import threading
import time
import zlib
from collections import OrderedDict
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .. import render
from ..backprop import MODES, start_signal, backprop_batch, rectifier_rules
from ..errors import DeepvisError
from ..store import Store
from ..images import find_images, load_image
from ..models.model import Model
from ..predict import Prediction, output_probabilities, top_predictions
from ..probe import Probe
from ..render import FILTERS
from ..units import Unit

#: Where the app serves the store (server/app.py): a store URL is this plus :meth:`Store.url`.
STORE_URL = "/store/"
#: Largest upload accepted, and largest decoded image (pixels), by default.
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 40_000_000
#: Forward passes kept with their autograd graph (about 80 MB each for EfficientNet-Lite0 at 224x224), so the
#: backward pass of a new unit on the same input needs no forward pass.
GRAPHS = 2
#: Webcam tabs remembered (each one's latest frame is dropped from the cache when its next frame comes).
TABS = 256


@dataclass
class Input:
    """One image as the network sees it, with its forward pass."""

    id: str
    name: str
    image: Image.Image  # fitted to the input size, RGB
    x: torch.Tensor  # (1, C, H, W) on the model's device
    activations: dict[str, torch.Tensor]  # default layers, no batch dim, on the CPU
    predictions: list[Prediction]
    forward_ms: float
    nbytes: int = 0

    def info(self) -> dict:
        return {"input": self.id, "name": self.name, "forward_ms": round(self.forward_ms, 2),
                "predictions": [p.to_json() for p in self.predictions]}


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

    @classmethod
    def from_json(cls, data: dict) -> "ViewRequest":
        if not isinstance(data, dict):
            raise DeepvisError("the view request must be a JSON object")
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if "input" not in known or "layer" not in known:
            raise DeepvisError("the view request needs 'input' (an input id) and 'layer' (a layer name)")
        for name in ("input", "layer", "cursor", "back_mode", "back_filter", "back_layer"):
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


def _png(image: np.ndarray, strategy: int = zlib.Z_DEFAULT_STRATEGY) -> bytes:
    """A float HxWx3 (or HxW) image in [0, 1] as an 8-bit PNG, encoded for speed: no row filters, zlib level 1,
    grayscale when the three channels are equal (a third of the data).

    Several times faster than Pillow's default (level 6, adaptive filters) for about 15% more bytes, which on
    the loopback or a LAN costs far less than the encoding time saved: rendering is on every frame's path.
    ``strategy``: ``zlib.Z_RLE`` is faster and smaller for noise-like images (backward signals).
    """
    pixels = render.to_uint8(image)
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    elif (pixels.ndim == 3 and pixels.shape[2] == 3 and np.array_equal(pixels[:, :, 0], pixels[:, :, 1])
          and np.array_equal(pixels[:, :, 1], pixels[:, :, 2])):
        pixels = pixels[:, :, 0]
    height, width = pixels.shape[:2]
    color = 0 if pixels.ndim == 2 else 2
    rows = np.zeros((height, 1 + pixels[0].size), np.uint8)  # each row: filter type 0 (none), then the pixels
    rows[:, 1:] = pixels.reshape(height, -1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, color, 0, 0, 0)
    compressor = zlib.compressobj(1, zlib.DEFLATED, 15, 8, strategy)
    data = compressor.compress(rows.tobytes()) + compressor.flush()
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def _b64png(image: np.ndarray, strategy: int = zlib.Z_DEFAULT_STRATEGY) -> str:
    return base64.b64encode(_png(image, strategy)).decode("ascii")


class _LRU(OrderedDict):
    """A least-recently-used cache bounded in items (and optionally in bytes); safe to share between threads."""

    def __init__(self, max_items: int, max_bytes: int | None = None):
        super().__init__()
        self.max_items, self.max_bytes, self.bytes = max_items, max_bytes, 0
        self._guard = threading.RLock()

    def put(self, key, value, nbytes: int = 0) -> None:
        with self._guard:
            if key in self:
                self.bytes -= super().pop(key)[1]
            super().__setitem__(key, (value, nbytes))
            self.bytes += nbytes
            while len(self) > self.max_items or (self.max_bytes and self.bytes > self.max_bytes and len(self) > 1):
                _, (_, size) = self.popitem(last=False)
                self.bytes -= size

    def fetch(self, key):
        with self._guard:
            if key not in self:
                return None
            self.move_to_end(key)
            return super().__getitem__(key)[0]

    def drop(self, key) -> None:
        with self._guard:
            if key in self:
                self.bytes -= super().pop(key)[1]


@dataclass
class _Graph:
    """A forward pass kept with its autograd graph: backward passes from any recorded layer need no forward pass."""

    x: torch.Tensor  # the input, requires grad
    activations: dict[str, torch.Tensor]  # attached to the graph, with the batch dimension
    mode: str
    modified: dict[str, int]  # per layer: rectifiers given the mode's backward rule before it (as backprop_batch)
    versions: dict[str, int]  # per layer: its output's version when recorded (changed later in place: not used)


class Toolbox:
    """The model, the image list and the caches behind the web app; every pane is one method call."""

    def __init__(self, model: Model, images: str | Path | None = None, store: str | Path | None = None,
                 max_upload_bytes: int = MAX_UPLOAD_BYTES, max_pixels: int = MAX_PIXELS,
                 cache_bytes: int = 512 * 1024 * 1024):
        self.model = model
        self.image_root, self.image_files = find_images(images)
        store = store or model.store  # the model's own store (a config file's `store`) unless one is given
        self.store = Path(store).expanduser().resolve() if store else None
        self.max_upload_bytes, self.max_pixels = max_upload_bytes, max_pixels
        self.layers = [i for i in model.layers() if i.default]
        if not self.layers:
            raise DeepvisError(f"model {model.spec!r} has no layers that can be shown")
        self._layer_names = {i.name for i in self.layers}
        # recorded in each forward pass: the shown layers, and the layer holding the class probabilities
        prob_layer = [model.prob_layer] if model.prob_layer else []
        self._recorded = list(dict.fromkeys([i.name for i in self.layers] + prob_layer))
        self._modules = dict(model.net.named_modules())
        self._inputs = _LRU(64, cache_bytes)
        self._backward = _LRU(32)
        self._graphs = _LRU(GRAPHS)  # input id -> _Graph
        # The backward mode of the last view that showed a backward pass (None: the last one showed none): new
        # inputs get a forward pass with the graph in that mode, so their first backward pass needs no other.
        self._graph_mode: str | None = None
        self._graphless_modes: set[str] = set()  # modes whose kept graphs failed once (in-place models): not tried
        if isinstance(model.net, torch.jit.ScriptModule) or not set(self._recorded) <= set(self._modules):
            self._graphless_modes = set(MODES)  # no module hooks (TorchScript): backprop_batch every time
        self._frames: OrderedDict[str, str] = OrderedDict()  # tab -> its latest webcam input id
        self._frames_lock = threading.Lock()
        self._lock = threading.Lock()  # the model: one pass at a time

    # ---------------------------------------------------------------- description
    def pretty(self, layer: str) -> str:
        return self.model.pretty_names.get(layer, layer)

    def label_layer(self, layer: str) -> bool:
        info = next((i for i in self.layers if i.name == layer), None)
        return info is not None and self.model.is_label_layer(layer, info.shape)

    def info(self) -> dict:
        """Everything a tab needs to set itself up."""
        return {
            "model": self.model.spec,
            "input_size": list(self.model.preprocessing.input_size),
            "resize": self.model.preprocessing.resize,
            "layers": [{"name": i.name, "pretty": self.pretty(i.name), "type": i.type, "shape": list(i.shape),
                        "label_layer": self.label_layer(i.name)} for i in self.layers],
            "images": [{"index": n, "name": self._display_name(p)} for n, p in enumerate(self.image_files)],
            "store": str(self.store) if self.store else None,
            "modes": list(MODES),
            "filters": list(FILTERS),
            "limits": {"max_upload_bytes": self.max_upload_bytes, "max_pixels": self.max_pixels},
        }

    def _display_name(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.image_root)) if self.image_root else path.name
        except ValueError:
            return path.name

    # ---------------------------------------------------------------- inputs
    def input_from_file(self, index: int, resize: str | None = None) -> Input:
        """The ``index``-th image of the image list (wrapping around)."""
        if not self.image_files:
            raise DeepvisError("no images: start the server with --images DIR, or upload one")
        path = self.image_files[index % len(self.image_files)]
        return self._add(load_image(path, self.max_pixels), self._display_name(path), resize)

    def input_from_bytes(self, data: bytes, name: str = "upload", resize: str | None = None,
                         tab: str | None = None) -> Input:
        """An uploaded file or a webcam frame; a tab's previous webcam frame is dropped from the cache."""
        if len(data) > self.max_upload_bytes:
            raise DeepvisError(f"'{name}' is {len(data):,} bytes, over the upload limit of {self.max_upload_bytes:,}")
        if tab is not None:
            tab = str(tab)[:200]
            previous = self._frames.get(tab)
            if previous:  # the graph of the frame this one replaces: freed before the next forward pass, not after
                self._graphs.drop(previous)
        item = self._add(load_image(data, self.max_pixels), name, resize)
        if tab is not None:
            with self._frames_lock:
                previous = self._frames.pop(tab, None)
                self._frames[tab] = item.id
                while len(self._frames) > TABS:
                    self._frames.popitem(last=False)
                # two tabs can show the same picture (a still camera): keep it while any tab still shows it
                if previous and previous != item.id and previous not in self._frames.values():
                    self._inputs.drop(previous)
                    self._graphs.drop(previous)
        return item

    def get_input(self, input_id: str) -> Input:
        item = self._inputs.fetch(input_id) if isinstance(input_id, str) else None
        if item is None:
            raise KeyError(input_id)
        return item

    def _add(self, image: Image.Image, name: str, resize: str | None) -> Input:
        resize = resize or self.model.preprocessing.resize
        if resize not in ("crop", "stretch"):
            raise DeepvisError(f"resize must be 'crop' or 'stretch', got {resize!r}")
        fitted = self.model.preprocessing.fit(image, resize)
        digest = hashlib.sha1(fitted.tobytes() + self.model.spec.encode()).hexdigest()[:16]
        cached = self._inputs.fetch(digest)
        if cached is not None:
            return cached
        # the device of the first parameter (Model.device lists them all: milliseconds on every frame)
        device = next(iter(self.model.net.parameters()), None)
        device = device.device if device is not None else self.model.device
        x = self.model.preprocessing.to_tensor(fitted, "stretch").unsqueeze(0).to(device)
        start = time.perf_counter()
        mode = self._graph_mode if self._graph_mode not in self._graphless_modes else None
        with self._lock:
            if mode is None:
                with torch.no_grad(), Probe(self.model, self._recorded) as probe:
                    out = probe.run(x)
                activations, graph = probe.activations, None
            else:  # the next view will likely show a backward pass: one forward pass serves both
                out, graph = self._graph_forward(x, mode)
                activations = graph.activations
        forward_ms = (time.perf_counter() - start) * 1000
        acts = {k: v[0].detach().float().cpu() for k, v in activations.items() if k in self._layer_names}
        predictions = self._predictions(out, activations)
        nbytes = sum(a.numel() * 4 for a in acts.values()) + x.numel() * 4
        item = Input(digest, name, fitted, x, acts, predictions, forward_ms, nbytes)
        self._inputs.put(digest, item, nbytes)
        if graph is not None:
            self._graphs.put(digest, graph)
        return item

    def _graph_forward(self, x: torch.Tensor, mode: str):
        """(output, _Graph): a forward pass recording every shown layer with the autograd graph, rectifiers
        following ``mode``. Call with ``self._lock`` held."""
        x = x.detach().clone().requires_grad_(True)
        # as backprop_batch's first try: no extra work in the forward pass
        rules = rectifier_rules(mode, save_like_autograd=True)
        acts: dict[str, torch.Tensor] = {}
        modified: dict[str, int] = {}
        versions: dict[str, int] = {}

        # The shown layers are known to be probeable (one call, one tensor): plain hooks, lighter than a Probe.
        def recorder(name: str):
            def hook(_module, _inputs, output) -> None:  # returns None: the output stays as it is
                if isinstance(output, torch.Tensor) and name not in acts:
                    acts[name], modified[name], versions[name] = output, rules.modified, output._version
            return hook

        handles = [self._modules[name].register_forward_hook(recorder(name)) for name in self._recorded]
        try:
            with torch.enable_grad(), rules if rules.rule is not None else nullcontext():
                out = self.model.net(x)
        finally:
            for handle in handles:
                handle.remove()
        return out, _Graph(x, acts, mode, modified, versions)

    def _predictions(self, out, activations: dict[str, torch.Tensor], top: int = 5) -> list[Prediction]:
        probs = output_probabilities(self.model, out, activations)
        return [] if probs is None else top_predictions(self.model, probs[0], top)

    # ---------------------------------------------------------------- backward
    def backward(self, item: Input, origin: Unit, mode: str, layer: str | None = None):
        """(input_grad, grad at ``layer`` or None, rectifiers modified) of one unit, cached."""
        key = (item.id, str(origin), mode, layer)
        cached = self._backward.fetch(key)
        if cached is not None:
            return cached + (0.0,)
        start = time.perf_counter()
        extra = [layer] if layer and layer != origin.layer else []
        with self._lock:
            graph = self._graphs.fetch(item.id)
            if (graph is None or graph.mode != mode) and mode not in self._graphless_modes:
                # one forward pass with the graph: the next units of this input need no forward pass at all
                self._graphs.put(item.id, self._graph_forward(item.x, mode)[1])
            found = self._backward_from_graph(item, origin, mode, extra)
            if found is None:
                found = backprop_batch(self.model, item.x, origin, mode, layers=extra)
        grad, act, layer_grads, modified = found
        if layer == origin.layer:
            layer_grad = torch.zeros_like(act[0])
            layer_grad[origin.channel] = act[0, origin.channel]
        else:
            layer_grad = layer_grads[layer][0] if layer else None
        result = (grad[0].float().cpu(), None if layer_grad is None else layer_grad.float().cpu(), modified)
        self._backward.put(key, result)
        return result + ((time.perf_counter() - start) * 1000,)

    def _backward_from_graph(self, item: Input, origin: Unit, mode: str, layers: list[str]):
        """What ``backprop_batch`` returns, from the input's kept graph; None without a usable one."""
        graph = self._graphs.fetch(item.id)
        if graph is None or graph.mode != mode:
            return None
        act = graph.activations.get(origin.layer)
        if act is None or not act.requires_grad or any(name not in graph.activations for name in layers):
            return None
        if any(graph.activations[name]._version != graph.versions.get(name) for name in [origin.layer, *layers]):
            return None  # changed in place after it was recorded: backprop_batch stops the forward pass there
        start = start_signal(act, origin, "map")
        targets = [graph.x] + [graph.activations[name] for name in layers]
        try:
            with torch.enable_grad():
                grads = torch.autograd.grad(act, targets, grad_outputs=start, retain_graph=True, allow_unused=True)
        except RuntimeError:  # e.g. the model changed a kept tensor in place: backprop_batch knows what to do
            self._graphs.drop(item.id)
            self._graphless_modes.add(mode)
            return None
        input_grad = grads[0] if grads[0] is not None else torch.zeros_like(graph.x)
        layer_grads = {name: (g if g is not None else torch.zeros_like(graph.activations[name])).detach()
                       for name, g in zip(layers, grads[1:])}
        modified = max(graph.modified.get(name, 0) for name in [origin.layer, *layers])
        return input_grad.detach(), act.detach(), layer_grads, modified

    # ---------------------------------------------------------------- panes
    def view(self, request: ViewRequest) -> dict:
        """Render every pane for one view state: grid, per-channel values, selected unit, backward image."""
        item = self.get_input(request.input)
        if request.layer not in self._layer_names:
            raise DeepvisError(f"unknown layer '{request.layer}'")
        acts = item.activations[request.layer]
        channels = acts.shape[0]
        channel = min(max(request.channel, 0), channels - 1)
        start = time.perf_counter()
        in_grid = request.cursor == "grid"
        back_visible = request.back_enabled and (in_grid or request.back_frozen)
        origin = None
        if request.back_layer is not None and request.back_channel is not None:
            if request.back_layer not in self._layer_names:
                raise DeepvisError(f"unknown layer '{request.back_layer}'")
            origin = Unit(request.back_layer, request.back_channel)
        if origin is None:
            origin = Unit(request.layer, channel)
        need_back = back_visible or (request.show_back and request.back_enabled)
        self._graph_mode = request.back_mode if need_back else None  # how the next input's forward pass runs
        backward_ms, back, layer_diffs = 0.0, None, None
        if need_back:
            grad, layer_diffs, modified, backward_ms = self.backward(
                item, origin, request.back_mode, request.layer if request.show_back else None)
        render_start = time.perf_counter()
        highlights = {}
        if in_grid:
            highlights[channel] = render.SELECTED_COLOR
        if request.back_frozen and origin.layer == request.layer:
            highlights[origin.channel] = render.FROZEN_COLOR
        if request.show_back:
            if layer_diffs is None:
                grid_source, diffs = torch.zeros_like(acts), True
            else:
                grid_source, diffs = layer_diffs, True
        else:
            grid_source, diffs = acts, False
        grid = render.tile_layer(grid_source, request.boost_indiv, request.boost_gamma, diffs=diffs,
                                 highlights=highlights)
        flat = acts.reshape(channels, -1)
        response = {
            "layer": request.layer,
            "channel": channel,
            "grid": {"png": _b64png(grid.image), "rows": grid.rows, "cols": grid.cols, "tile_h": grid.tile_height,
                     "tile_w": grid.tile_width, "pad": grid.pad, "diffs": diffs},
            "values": [round(v, 4) if math.isfinite(v) else None for v in flat.max(dim=1).values.tolist()],
            "unit": None,
            "back": None,
            "predictions": [p.to_json() for p in item.predictions],
        }
        if in_grid:
            # the selected unit is its tile of the grid (render.unit_image, without normalizing the layer again)
            row, col = divmod(channel, grid.cols)
            top, left = row * grid.cell[0] + grid.pad, col * grid.cell[1] + grid.pad
            unit_image = grid.image[top:top + grid.tile_height, left:left + grid.tile_width]
            if acts.dim() == 1:  # a fully connected layer's tiles are enlarged; its unit is one value
                unit_image = unit_image[:1, :1]
            value = float(flat[channel].max())
            response["unit"] = {"png": _b64png(unit_image), "unit": f"{request.layer}:{channel}",
                                "value": value if math.isfinite(value) else None,
                                "label": self.model.label(channel) if self.label_layer(request.layer) else None}
        if need_back and back_visible:
            rgb = self.model.preprocessing.to_rgb(grad).permute(1, 2, 0).numpy()
            strategy = zlib.Z_RLE if request.back_filter == "raw" else zlib.Z_DEFAULT_STRATEGY  # raw: noise-like
            response["back"] = {"png": _b64png(render.back_image(rgb, request.back_filter), strategy),
                                "origin": str(origin), "mode": request.back_mode, "filter": request.back_filter,
                                "rectifiers_modified": modified}
        response["timing"] = {"forward_ms": round(item.forward_ms, 2), "backward_ms": round(backward_ms, 2),
                              "render_ms": round((time.perf_counter() - render_start) * 1000, 2),
                              "total_ms": round((time.perf_counter() - start) * 1000, 2)}
        return response

    def input_png(self, input_id: str) -> bytes:
        import io

        buffer = io.BytesIO()
        self.get_input(input_id).image.save(buffer, format="PNG")
        return buffer.getvalue()

    # ---------------------------------------------------------------- store
    def _store_source(self, layer: str) -> tuple[Store | None, str]:
        """The store, and the layer whose pictures ``layer`` shows (e.g. pool1 shows conv1's)."""
        if not isinstance(layer, str) or layer not in set(self.model.layer_names()):
            raise DeepvisError(f"unknown layer {str(layer)[:100]!r}")
        return (Store(self.store) if self.store else None), self.model.store_remap.get(layer, layer)

    @staticmethod
    def _url(store: Store, path: Path) -> str:
        return STORE_URL + store.url(path)

    def layer_sprites(self, layer: str) -> dict:
        """The store's sprites of a layer for pattern mode (URLs): ``sprite`` the one to show, ``sprites`` by kind."""
        store, source = self._store_source(layer)
        if store is None:
            return {"layer": layer, "sprite": None, "sprites": {}}
        sprite = store.sprite(source)
        return {"layer": layer, "sprite": self._url(store, sprite) if sprite else None,
                "sprites": {kind: self._url(store, path) for kind, path in store.sprites(source).items()}}

    def unit_images(self, layer: str, channel: int) -> dict:
        """Which precomputed per-unit images the store has for a unit (URLs), the layer's sprites, or a hint how to
        make them."""
        store, source = self._store_source(layer)
        hint = (f"not computed yet — run `deepvis find-max IMAGES --out STORE --layers {layer}` "
                f"then `deepvis crops STORE --layers {layer}`, and/or `deepvis optimize --out STORE --layers {layer}`, "
                "and restart with `deepvis serve --store STORE`")
        found = ({} if store is None else
                 {kind: self._url(store, path) for kind, path in store.unit_pictures(source, channel).items()})
        return {"channel": channel, **self.layer_sprites(layer), "images": found, "hint": None if found else hint}
