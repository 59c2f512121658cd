"""What the live toolbox holds: inputs with their cached forward pass, traces for backward passes, tab state.

One :class:`Toolbox` serves every browser tab. Tabs keep their own view state (cursor, modes, boosts) and send it
with each request (:mod:`.requests`), so the server holds only caches: a forward pass per input (moving the
cursor on a still image never reruns it), a few traces (forward passes with their graph, so a new unit's backward
pass needs no forward pass) and a few backward passes. The model is used by one request at a time.
"""

from __future__ import annotations

import hashlib
import io
import threading
import time
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from deepvis.core.errors import DeepvisError
from deepvis.core.units import Unit
from deepvis.pixels.images import DEFAULT_MAX_PIXELS, find_images, load_image
from deepvis.pixels.images import max_pixels as current_max_pixels
from deepvis.pixels.render import FILTERS, FROZEN_COLOR, SELECTED_COLOR, to_uint8
from deepvis.models.model import Model
from deepvis.engine.backprop import MODES
from deepvis.engine.predict import Prediction, output_probabilities, top_predictions
from deepvis.engine.probe import layer_info
from deepvis.store import Store
from deepvis.jobs.export import site_page_url
from deepvis.apps.server import panes, passes
from deepvis.apps.server.cache import LRU
from deepvis.apps.server.inputs import Input, InputNotFound
from deepvis.apps.server.overlays import Overlays
from deepvis.apps.server.passes import NextPass
from deepvis.apps.server.requests import ViewRequest
from deepvis.apps.server.stores import check_store, store_hint
from deepvis.apps.server.stores import store_images as images_of_store

__all__ = ["EXPORT_URL", "Input", "STORE_URL", "Toolbox", "ViewRequest"]

#: Where the app serves the store (server/app.py): a store URL is this plus :meth:`Store.url`.
STORE_URL = "/store/"
#: Where the app serves the store's exported site (``deepvis export``; server/app.py).
EXPORT_URL = "/export/"
#: Largest upload accepted by default. Decoded images are limited as everywhere else (``--max-pixels``,
#: :func:`deepvis.images.max_pixels`).
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_PIXELS = DEFAULT_MAX_PIXELS
#: Traces kept (forward passes with their graph, about 80 MB each for EfficientNet-Lite0 at 224x224), so the
#: backward pass of a new unit on the same input needs no forward pass.
TRACES = 2
#: Unit grids kept (rendered pictures without rings, see :func:`panes.grid_pane`), and their bytes at most: a cursor
#: move on a still image shows the grid it showed before.
GRIDS, GRID_BYTES = 16, 64 * 1024 * 1024
#: Webcam tabs remembered (each one's latest frame is dropped from the cache when its next frame comes).
TABS = 256


def _css(color: tuple[float, float, float]) -> str:
    return "rgb({}, {}, {})".format(*to_uint8(np.asarray(color)).tolist())


class Toolbox:
    """The model, the image list and the caches behind the web app; every pane is one call (:func:`panes.view`)."""

    def __init__(self, model: Model, images: str | Path | None = None, store: str | Path | None = None,
                 max_upload_bytes: int = MAX_UPLOAD_BYTES, max_pixels: int | None = None,
                 cache_bytes: int = 512 * 1024 * 1024, store_images: bool = False,
                 layers: list[str] | None = None):
        self.model = model
        if store is not None:
            check_store(Store(Path(store).expanduser()))
        elif model.store:  # the model's own store (a config file's `store`): shown when it is there
            if Path(model.store).expanduser().is_dir():
                store = model.store
            else:
                warnings.warn(f"the store '{model.store}' of model {model.spec!r} is not there: serving without it")
        self.store = Path(store).expanduser().resolve() if store else None
        store_files = images_of_store(Store(self.store)) if store_images and images is None and self.store else None
        self.image_root, self.image_files = store_files or find_images(images)
        self.max_upload_bytes = max_upload_bytes
        self.max_pixels = current_max_pixels() if max_pixels is None else max_pixels
        # ``layers``: the layer list to show instead of the model's default layers (``serve --layers``)
        self.layers = [layer_info(model, n) for n in dict.fromkeys(layers)] if layers else \
            [i for i in model.layers() if i.default]
        if not self.layers:
            raise DeepvisError(f"model {model.spec!r} has no layers that can be shown")
        self.layer_names = {i.name for i in self.layers}
        # recorded in each forward pass: the shown layers, and the layer holding the class probabilities
        prob_layer = [model.prob_layer] if model.prob_layer else []
        self._recorded = list(dict.fromkeys([i.name for i in self.layers] + prob_layer))
        self._inputs = LRU(64, cache_bytes)
        self._backward = LRU(32)
        self._traces = LRU(TRACES)  # input id -> Trace
        self.grids = LRU(GRIDS, GRID_BYTES)  # (input id, layer, boosts, source) -> panes.GridPane
        # How new inputs' forward passes run, as the last view asked (:class:`NextPass`): per webcam tab (a frame is
        # traced as its own tab's last view needs, whatever other tabs show), and for inputs of no tab
        self.next_pass = NextPass()
        self._next_by_tab: OrderedDict[str, NextPass] = OrderedDict()
        self._frames: OrderedDict[str, str] = OrderedDict()  # tab -> its latest webcam input id
        self._frames_lock = threading.Lock()
        self._lock = threading.Lock()  # the model: one pass at a time
        # the input pane's attribution and attention overlays
        self.overlays = Overlays(model, self._recorded, self._lock, self._traces)

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
                        "label_layer": self.label_layer(i.name), "tokens": i.layout.kind == "tokens"}
                       for i in self.layers],
            "images": [{"index": n, "name": self._display_name(p)} for n, p in enumerate(self.image_files)],
            "store": str(self.store) if self.store else None,
            "modes": list(MODES),
            "filters": list(FILTERS),
            # the page rings the selected tile and the frozen backward origin over the grid, in the original's colours
            "rings": {"selected": _css(SELECTED_COLOR), "frozen": _css(FROZEN_COLOR)},
            "overlays": self.overlays.info(),
            "limits": {"max_upload_bytes": self.max_upload_bytes, "max_pixels": self.max_pixels},
            "random_weights": bool(getattr(self.model, "random_weights", False)),
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
            if previous:  # the trace of the frame this one replaces: freed before the next forward pass, not after
                self._traces.drop(previous)
        plan = self._next_by_tab.get(tab, self.next_pass) if tab is not None else self.next_pass
        item = self._add(load_image(data, self.max_pixels, name=name), name, resize, plan)
        if tab is not None:
            with self._frames_lock:
                previous = self._frames.pop(tab, None)
                self._frames[tab] = item.id
                while len(self._frames) > TABS:
                    self._frames.popitem(last=False)
                # two tabs can show the same picture (a still camera): keep it while any tab still shows it
                if previous and previous != item.id and previous not in self._frames.values():
                    self._inputs.drop(previous)
                    self._traces.drop(previous)
        return item

    def plan_next(self, input_id: str, plan: NextPass) -> None:
        """What a view of ``input_id`` asks of the next forward passes: of the webcam tabs showing it, and of inputs
        of no tab."""
        with self._frames_lock:
            for tab, shown in self._frames.items():
                if shown == input_id:
                    self._next_by_tab[tab] = plan
            while len(self._next_by_tab) > TABS:
                self._next_by_tab.popitem(last=False)
        self.next_pass = plan

    def get_input(self, input_id: str) -> Input:
        item = self._inputs.fetch(input_id) if isinstance(input_id, str) else None
        if item is None:
            raise InputNotFound(f"unknown input {str(input_id)[:100]!r}: it may have been dropped from the cache; "
                                "send the image again")
        return item

    def _add(self, image: Image.Image, name: str, resize: str | None, plan: NextPass | None = None) -> Input:
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
        with self._lock:
            done = passes.forward(self.model, x, self._recorded, plan or self.next_pass)
        forward_ms = (time.perf_counter() - start) * 1000
        acts = {k: v[0].detach().float().cpu() for k, v in done.activations.items() if k in self.layer_names}
        predictions = self._predictions(done.output, done.activations)
        nbytes = sum(a.numel() * 4 for a in acts.values()) + x.numel() * 4 + \
            (done.attention.nbytes() if done.attention else 0)
        item = Input(digest, name, fitted, x, acts, predictions, forward_ms, nbytes, attention=done.attention)
        self._inputs.put(digest, item, nbytes)
        if done.traced is not None:
            self._traces.put(digest, done.traced)
        return item

    def _predictions(self, out, activations: dict[str, torch.Tensor], top: int = 5) -> list[Prediction]:
        probs = output_probabilities(self.model, out, activations)
        return [] if probs is None else top_predictions(self.model, probs[0], top)

    # ---------------------------------------------------------------- backward
    def backward(self, item: Input, origin: Unit, mode: str,
                 layer: str | None = None) -> tuple[torch.Tensor, torch.Tensor | None, bool, float]:
        """(input_grad, grad at ``layer`` or None, rectifiers modified, milliseconds) of one unit, cached: from
        the input's kept trace when it has one in ``mode`` (no forward pass), else from a new one that is kept."""
        key = (item.id, str(origin), mode, layer)
        cached = self._backward.fetch(key)
        if cached is not None:
            return cached + (0.0,)
        start = time.perf_counter()
        with self._lock:
            kept = self._traces.fetch(item.id)
            traced, result = passes.backward(self.model, item.x, self._recorded, kept, origin, mode, layer)
            if traced is not kept:
                self._traces.put(item.id, traced)
        self._backward.put(key, result)
        return result + ((time.perf_counter() - start) * 1000,)

    # ---------------------------------------------------------------- panes
    def view(self, request: ViewRequest) -> dict:
        """Every pane for one view state (see :func:`panes.view`)."""
        return panes.view(self, request)

    def input_png(self, input_id: str) -> bytes:
        """An input as the network sees it (fitted to the input size), as a PNG."""
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
        found = ({} if store is None else
                 {kind: self._url(store, path) for kind, path in store.unit_pictures(source, channel).items()})
        page = site_page_url(store, source, channel) if store else None  # the unit's page in the store's export
        return {"channel": channel, **self.layer_sprites(layer), "images": found, "export": page and EXPORT_URL + page,
                "hint": None if found else store_hint(store, source, channel)}
