"""What the live toolbox computes: inputs, their cached forward pass, backward passes, and the rendered panes.

One :class:`Toolbox` serves every browser tab. Tabs keep their own view state (cursor, modes, boosts) and send it
with each request, so the server holds only caches: a forward pass per input (moving the cursor on a still image
never reruns it) and a few backward passes. The model is used by one request at a time.
"""

from __future__ import annotations

import base64
import hashlib
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .. import render
from ..backprop import MODES, backprop_batch
from ..errors import DeepvisError
from ..images import IMAGE_EXTENSIONS, load_image
from ..models.model import Model
from ..predict import Prediction
from ..probe import Probe
from ..render import FILTERS
from ..units import Unit

#: Largest upload accepted, and largest decoded image (pixels), by default.
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 40_000_000


def find_images(source: str | Path | None) -> tuple[Path | None, list[Path]]:
    """The image root and its image files: a directory (recursive, sorted, by extension, any case) or a list file
    (one path per line, relative to the list file, an optional label after whitespace)."""
    if source is None:
        from ..samples import sample_images

        files = sample_images()
        return (files[0].parent if files else None), files
    path = Path(source).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        return path.resolve(), [p.resolve() for p in files]
    if path.is_file():
        root = path.parent.resolve()
        files = []
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            entry = line.strip().split()[0] if line.strip() and not line.lstrip().startswith("#") else ""
            if entry:
                files.append((root / entry).resolve())
        return root, files
    raise DeepvisError(f"--images '{source}' is neither a directory nor a list file")


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
        try:
            request = cls(**known)
            request.channel = int(request.channel)
            request.boost_indiv = float(request.boost_indiv)
            request.boost_gamma = float(request.boost_gamma)
            if request.back_channel is not None:
                request.back_channel = int(request.back_channel)
        except (TypeError, ValueError) as exc:
            raise DeepvisError(f"bad view request: {exc}") from None
        if request.back_mode not in MODES:
            raise DeepvisError(f"unknown backward mode {request.back_mode!r}: use one of {', '.join(MODES)}")
        if request.back_filter not in FILTERS:
            raise DeepvisError(f"unknown filter {request.back_filter!r}: use one of {', '.join(FILTERS)}")
        if not 0.0 <= request.boost_indiv <= 1.0 or not 0.05 <= request.boost_gamma <= 4.0:
            raise DeepvisError("boost_indiv must be in [0, 1] and boost_gamma in [0.05, 4]")
        return request


def _b64png(image: np.ndarray) -> str:
    return base64.b64encode(render.png_bytes(image)).decode("ascii")


class _LRU(OrderedDict):
    def __init__(self, max_items: int, max_bytes: int | None = None):
        super().__init__()
        self.max_items, self.max_bytes, self.bytes = max_items, max_bytes, 0

    def put(self, key, value, nbytes: int = 0) -> None:
        if key in self:
            self.bytes -= self.pop(key)[1]
        super().__setitem__(key, (value, nbytes))
        self.bytes += nbytes
        while len(self) > self.max_items or (self.max_bytes and self.bytes > self.max_bytes and len(self) > 1):
            _, (_, size) = self.popitem(last=False)
            self.bytes -= size

    def fetch(self, key):
        if key not in self:
            return None
        self.move_to_end(key)
        return super().__getitem__(key)[0]


class Toolbox:
    """The model, the image list and the caches behind the web app; every pane is one method call."""

    def __init__(self, model: Model, images: str | Path | None = None, store: str | Path | None = None,
                 max_upload_bytes: int = MAX_UPLOAD_BYTES, max_pixels: int = MAX_PIXELS,
                 cache_bytes: int = 512 * 1024 * 1024):
        self.model = model
        self.image_root, self.image_files = find_images(images)
        self.store = Path(store).resolve() if store else None
        self.max_upload_bytes, self.max_pixels = max_upload_bytes, max_pixels
        self.layers = [i for i in model.layers() if i.default]
        if not self.layers:
            raise DeepvisError(f"model {model.spec!r} has no layers that can be shown")
        self._layer_names = {i.name for i in self.layers}
        self._inputs = _LRU(64, cache_bytes)
        self._backward = _LRU(32)
        self._frames: dict[str, str] = {}  # tab -> its latest webcam input id
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- description
    def pretty(self, layer: str) -> str:
        return self.model.pretty_names.get(layer, layer)

    def label_layer(self, layer: str) -> bool:
        info = next((i for i in self.layers if i.name == layer), None)
        return bool(self.model.labels and info and info.shape == (len(self.model.labels),))

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
        item = self._add(load_image(data, self.max_pixels), name, resize)
        if tab is not None:
            previous = self._frames.get(tab)
            if previous and previous != item.id:
                self._inputs.pop(previous, None)
            self._frames[tab] = item.id
        return item

    def get_input(self, input_id: str) -> Input:
        item = self._inputs.fetch(input_id)
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
        x = self.model.preprocessing.to_tensor(fitted, "stretch").unsqueeze(0).to(self.model.device)
        start = time.perf_counter()
        with self._lock, torch.no_grad(), Probe(self.model, [i.name for i in self.layers]) as probe:
            out = probe.run(x)
        forward_ms = (time.perf_counter() - start) * 1000
        acts = {k: v[0].float().cpu() for k, v in probe.activations.items()}
        predictions = self._predictions(out)
        nbytes = sum(a.numel() * 4 for a in acts.values()) + x.numel() * 4
        item = Input(digest, name, fitted, x, acts, predictions, forward_ms, nbytes)
        self._inputs.put(digest, item, nbytes)
        return item

    def _predictions(self, out, top: int = 5) -> list[Prediction]:
        if not isinstance(out, torch.Tensor) or out.dim() != 2:
            return []
        probs = out[0].float() if self.model.outputs == "probs" else out[0].float().softmax(0)
        values, indices = probs.topk(min(top, probs.numel()))
        return [Prediction(int(i), self.model.label(int(i)), float(v)) for v, i in zip(values, indices)]

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
            grad, act, layer_grads, modified = backprop_batch(self.model, item.x, origin, mode, layers=extra)
        if layer == origin.layer:
            layer_grad = torch.zeros_like(act[0])
            layer_grad[origin.channel] = act[0, origin.channel]
        else:
            layer_grad = layer_grads[layer][0] if layer else None
        result = (grad[0].float().cpu(), None if layer_grad is None else layer_grad.float().cpu(), modified)
        self._backward.put(key, result)
        return result + ((time.perf_counter() - start) * 1000,)

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
            "values": [round(v, 4) for v in flat.max(dim=1).values.tolist()],
            "unit": None,
            "back": None,
            "predictions": [p.to_json() for p in item.predictions],
        }
        if in_grid:
            unit_image = render.unit_image(grid_source, channel, request.boost_indiv, request.boost_gamma, diffs)
            response["unit"] = {"png": _b64png(unit_image), "unit": f"{request.layer}:{channel}",
                                "value": float(flat[channel].max()),
                                "label": self.model.label(channel) if self.label_layer(request.layer) else None}
        if need_back and back_visible:
            rgb = self.model.preprocessing.to_rgb(grad).permute(1, 2, 0).numpy()
            response["back"] = {"png": _b64png(render.back_image(rgb, request.back_filter)),
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
    def unit_images(self, layer: str, channel: int) -> dict:
        """Which precomputed per-unit images the store has for a unit (URLs), or a hint how to make them."""
        from urllib.parse import quote

        hint = (f"not computed yet — run `deepvis find-max IMAGES --out STORE --layers {layer}` and "
                f"`deepvis optimize --out STORE --layers {layer}`, then `deepvis serve --store STORE`")
        if self.store is None:
            return {"images": {}, "hint": hint}
        folder = Path(quote(layer, safe="._-")) / f"{channel:04d}"
        found = {}
        for kind, name in (("optimized", "optimized.png"), ("images", "image.jpg"), ("deconv", "deconv.jpg")):
            if (self.store / folder / name).is_file():
                found[kind] = f"/store/{folder.as_posix()}/{name}"
        return {"images": found, "hint": None if found else hint}
