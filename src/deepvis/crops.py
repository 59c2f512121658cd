"""Per-unit pictures from a find-max store: the receptive-field crop of each top image and its backward images.

For unit ``layer:channel`` and each of its k top images, the crop is the part of the input (as the network saw
it) inside the unit's receptive field at the recorded position, padded black where the field leaves the image;
its ``deconv`` / ``gradient`` / ``guided`` images start from a one-hot at that position. Montages of the k crops
per kind, and a sprite of every channel's best crop per layer and kind (the toolbox's pattern mode), complete it.

Zeiler & Fergus's deconv takes its image-specific information only from max-pooling switches, so in a network
without max pooling every top image of a unit gets nearly the same deconv picture: there the default kinds are
``image guided`` (see :func:`default_kinds`).
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.overrides import TorchFunctionMode

from . import render
from .backprop import backprop_batch
from .errors import DeepvisError
from .images import load_image
from .models.model import Model, weights_hash
from .probe import layer_info
from .progress import Progress
from .receptive_field import EFFECTIVE_ABOVE, ReceptiveField, effective_receptive_fields, field_from_json
from .store import CROP_KINDS, Store, check_model
from .units import Unit, check_unit, clamp_channels

KINDS = CROP_KINDS
_MAX_POOL_MODULES = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
                     nn.AdaptiveMaxPool3d, nn.FractionalMaxPool2d, nn.FractionalMaxPool3d)
_MAX_POOL_FUNCTIONS = {F.max_pool1d, F.max_pool2d, F.max_pool3d, F.max_pool1d_with_indices, F.max_pool2d_with_indices,
                       F.max_pool3d_with_indices, F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d,
                       F.adaptive_max_pool1d_with_indices, F.adaptive_max_pool2d_with_indices,
                       F.adaptive_max_pool3d_with_indices, F.fractional_max_pool2d, F.fractional_max_pool3d,
                       torch.max_pool1d, torch.max_pool2d, torch.max_pool3d, torch.max_pool1d_with_indices,
                       torch.adaptive_max_pool1d}


class _MaxPoolSeen(TorchFunctionMode):
    """Notes whether a forward pass calls a max-pooling function."""

    seen = False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in _MAX_POOL_FUNCTIONS:
            self.seen = True
        return func(*args, **(kwargs or {}))


def has_max_pooling(model: Model) -> bool:
    """Whether the network max-pools anywhere: a max-pooling module, or a max-pooling function called in a forward
    pass (Caffe imports and functional code)."""
    names = {cls.__name__ for cls in _MAX_POOL_MODULES}
    for module in model.net.modules():
        if isinstance(module, _MAX_POOL_MODULES) or getattr(module, "original_name", None) in names:
            return True
    height, width = model.preprocessing.input_size
    x = torch.zeros(1, model.preprocessing.channels, height, width, device=model.device)
    watch = _MaxPoolSeen()
    try:
        with torch.no_grad(), watch:
            model.net(x)
    except Exception:  # a network that cannot run here: its modules said no max pooling
        return False
    return watch.seen


def default_kinds(model: Model) -> tuple[str, ...]:
    """``image deconv`` for a network with max pooling, else ``image guided``: without max-pooling switches,
    deconv has no image-specific information and draws about the same picture for every top image."""
    return ("image", "deconv") if has_max_pooling(model) else ("image", "guided")


def crop_box(array: np.ndarray, box: tuple[int, int, int, int], fill: float = 0.0) -> np.ndarray:
    """``array[top:bottom, left:right]`` of an HxWxC array, padded with ``fill`` where the box leaves it."""
    top, left, bottom, right = box
    height, width = array.shape[:2]
    out = np.full((bottom - top, right - left) + array.shape[2:], fill, dtype=array.dtype)
    y0, x0, y1, x1 = max(top, 0), max(left, 0), min(bottom, height), min(right, width)
    if y1 > y0 and x1 > x0:
        out[y0 - top:y1 - top, x0 - left:x1 - left] = array[y0:y1, x0:x1]
    return out


def unit_box(field: ReceptiveField | None, y: int, x: int, input_size: tuple[int, int],
             effective: ReceptiveField | None = None) -> tuple[int, int, int, int]:
    """The box to crop for a unit at (y, x): its receptive field; its effective receptive field where the
    theoretical one is the whole input or covers more than ``EFFECTIVE_ABOVE`` of it (vision transformers after
    attention, deep CNNs); the whole input for fully connected units and where neither says more."""
    height, width = input_size
    if y < 0:
        return 0, 0, height, width
    large = field is None or field.size[0] * field.size[1] > EFFECTIVE_ABOVE * height * width
    if large and effective is not None and effective.size[0] * effective.size[1] < 0.95 * height * width:
        return effective.box(y, x)
    if field is None or field.size[0] >= height or field.size[1] >= width:
        return 0, 0, height, width
    return field.box(y, x)


def _jpeg(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    render.to_pil(image).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _same_size(images: list[np.ndarray]) -> list[np.ndarray]:
    height = max(i.shape[0] for i in images)
    width = max(i.shape[1] for i in images)
    return [i if i.shape[:2] == (height, width) else
            np.asarray(render.to_pil(i).resize((width, height), Image.BILINEAR), np.float32) / 255.0 for i in images]


class _Inputs:
    """Preprocessed images by index, with a small cache (a unit's top images often repeat across channels)."""

    def __init__(self, model: Model, files: list[Path], size: int = 256):
        self.model, self.files, self.cache, self.size = model, files, OrderedDict(), size

    def get(self, index: int) -> tuple[torch.Tensor, np.ndarray]:
        if index in self.cache:
            self.cache.move_to_end(index)
            return self.cache[index]
        fitted = self.model.preprocessing.fit(load_image(self.files[index]))
        item = (self.model.preprocessing.to_tensor(fitted, "stretch"), np.asarray(fitted, np.float32) / 255.0)
        self.cache[index] = item
        if len(self.cache) > self.size:
            self.cache.popitem(last=False)
        return item


def make_crops(model: Model, store: str | Path, layers: list[str] | None = None,
               kinds: tuple[str, ...] | None = None, channels: range | None = None,
               force: bool = False, progress: bool = True) -> Store:
    """Write crops, backward images, montages and sprites for the units of a find-max store. ``kinds``: any of
    :data:`KINDS`; by default :func:`default_kinds`. ``channels`` past a layer's last are left out (with a note).

    Each unit's pictures are followed by a record of what they were made from (its top-k, the layer's receptive
    fields, the network and preprocessing, the kinds); a unit whose record says these kinds from the current top-k
    is skipped, any other is (re)made and its stale pictures removed. The model must be the store's (its weights
    hash and preprocessing; :func:`deepvis.store.check_model`): ``force`` uses another one anyway, and redoes every
    unit asked for."""
    store = Store(store)
    manifest = store.read_manifest()
    check_model(store, model, force=force, manifest=manifest)
    kinds = tuple(kinds) if kinds is not None else default_kinds(model)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise DeepvisError(f"unknown kind {unknown[0]!r}: use any of {', '.join(KINDS)}")
    layers = layers or list(manifest.layers)
    missing = [name for name in layers if name not in manifest.layers]
    if missing:
        raise DeepvisError(f"layer '{missing[0]}' is not in the store (it has {', '.join(manifest.layers)})")
    if manifest.input_size != tuple(model.preprocessing.input_size):
        raise DeepvisError(f"the store was made at input size {list(manifest.input_size)}, the model "
                           f"now has {list(model.preprocessing.input_size)}: use the same --input-size")
    root = Path(manifest.image_root)
    files = [root / p for p in store.read_image_list()]
    inputs = _Inputs(model, files)
    wanted = {name: clamp_channels(channels, manifest.layers[name].channels, name, "crops") for name in layers}
    total = sum(len(wanted[n]) for n in layers)
    bar = Progress(total, "crops", unit="units", enabled=progress)
    network = weights_hash(model)
    current_count = 0
    for name in layers:
        field = field_from_json(manifest.layers[name].receptive_field)
        effective = _effective_field(model, inputs, name, field, manifest.layers[name].shape)
        top = store.read_topk(name)
        hashes = store.topk_hashes(name)
        made_from = {"basis": store.crops_basis(manifest, name), "network": network}
        count = manifest.layers[name].channels
        for channel in wanted[name]:
            check_unit(Unit(name, channel), tuple(manifest.layers[name].shape))
            record = {"topk": hashes[channel], **made_from}
            saved = store.read_crops_record(name, channel) or {}
            current = all(saved.get(key) == value for key, value in record.items())
            if force or not current or not set(kinds) <= set(saved.get("kinds", [])):
                _unit_crops(model, inputs, store, name, channel, top, (field, effective), kinds, record)
            else:
                current_count += 1
            bar.update(1)
        current = [c for c in range(count) if _current(store.read_crops_record(name, c), hashes[c], made_from)]
        digest = hashlib.sha256(json.dumps([made_from, [hashes[c] for c in current]]).encode()).hexdigest()[:16]
        for kind in kinds:
            store.write_sprite(name, count, kind, [c for c in current
                                                   if kind in store.read_crops_record(name, c)["kinds"]], digest)
    bar.close()
    if progress and current_count:
        print(f"crops: {current_count} of {total} units were already made from their current top-k (--force redoes "
              "them)", file=sys.stderr, flush=True)
    return store


def _effective_field(model: Model, inputs: _Inputs, layer: str, field: ReceptiveField | None,
                     shape: list[int], count: int = 8) -> ReceptiveField | None:
    """The layer's effective receptive field, measured on ``count`` of the store's images spread over the set,
    where its theoretical field is the whole input or most of it (else None: the theoretical one is used)."""
    height, width = model.preprocessing.input_size
    if len(shape) != 3 or (field is not None and field.size[0] * field.size[1] <= EFFECTIVE_ABOVE * height * width):
        return None
    total, images = len(inputs.files), []
    for index in dict.fromkeys((i * total) // count for i in range(count)):
        try:
            images.append(inputs.get(index)[0])
        except DeepvisError:  # an image find-max skipped
            continue
    if not images:
        return None
    return effective_receptive_fields(model, [layer], torch.stack(images).to(model.device))[layer]


def _current(record: dict | None, topk: str, made_from: dict) -> bool:
    return record is not None and record.get("topk") == topk and all(record.get(k) == v for k, v in made_from.items())


def _unit_crops(model, inputs: _Inputs, store: Store, layer: str, channel: int, top: dict, fields, kinds,
                record: dict) -> None:
    ranks = [r for r in range(top["images"].shape[1]) if top["images"][channel, r] >= 0]
    if not ranks:
        store.remove_crops(layer, channel)
        return
    size = model.preprocessing.input_size
    loaded = [inputs.get(int(top["images"][channel, r])) for r in ranks]
    positions = [(int(top["y"][channel, r]), int(top["x"][channel, r])) for r in ranks]
    boxes = [unit_box(fields[0], y, x, size, fields[1]) for y, x in positions]
    pictures: dict[str, list[np.ndarray]] = {}
    if "image" in kinds:
        pictures["image"] = [crop_box(pixels, box) for (_, pixels), box in zip(loaded, boxes)]
    backward = [k for k in kinds if k != "image"]
    if backward:
        x = torch.stack([t for t, _ in loaded]).to(model.device)
        # each image's one-hot at its own top position (a fully connected unit: its one value, by 'argmax')
        units = [Unit(layer, channel, (y, x_pos) if y >= 0 else None) for y, x_pos in positions]
        for kind in backward:
            grads = backprop_batch(model, x, units, kind, signal="argmax").input_grad
            rgb = model.preprocessing.to_rgb(grads).permute(0, 2, 3, 1).cpu().numpy()
            pictures[kind] = [render.back_image(crop_box(g, box), "raw") for g, box in zip(rgb, boxes)]
    files: dict[tuple[str, int | None], bytes] = {}
    for kind, images in pictures.items():
        for rank, image in zip(ranks, images):
            files[(kind, rank)] = _jpeg(image)
        files[(kind, None)] = _jpeg(render.montage(_same_size(images), pad=2))
    store.write_crops(layer, channel, files, record)
