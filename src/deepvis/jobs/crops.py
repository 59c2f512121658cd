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
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from deepvis.pixels import render
from deepvis.engine.backprop import backprop_batch
from deepvis.core.errors import DeepvisError
from deepvis.models.model import Model, weights_hash
from deepvis.core.progress import Progress
from deepvis.engine.receptive_field import ReceptiveField, field_from_json
from deepvis.jobs.provenance import check_model
from deepvis.store import CROP_KINDS, CROPS_SETTINGS, Store, sprite_tile
from deepvis.core.units import Unit, check_unit, clamp_channels
from deepvis.core.boxes import context_box, crop_box
from deepvis.jobs.fields import effective_field as _effective_field, unit_box
from deepvis.jobs.inputs import CORES, StoreInputs as _Inputs

KINDS = CROP_KINDS
#: Rows (top images) per batched backward pass of :func:`make_crops`.
BATCH_ROWS = 64
#: Threads encoding and writing pictures while the next passes run: one per two cores, at most 4. Creating files
#: costs CPU (kernel) time; more threads than that on 2 cores only slowed torch's own threads down (crops of
#: blocks.2.depthwise.act: 0.64-0.67x the bare passes with 4 writers, 0.70-0.72x with 1 or 2).
WRITERS = max(1, min(4, CORES // 2))
#: Crop-sized windows are used where they hold at most this fraction of the input's pixels.
WINDOW_AT_MOST = 0.5
#: Top images on which a layer's windows are checked against whole images.
WINDOW_CHECKS = 1
#: Units whose sprite tiles (their best pictures, small) are kept in memory for their layer's sprites; the sprites
#: read any others back from the store.
SPRITE_TILES_KEPT = 2048
#: Pixels between the pictures of a unit's montage.
MONTAGE_PAD = 2
#: Rough seconds to encode and write one picture (the progress bar's estimate of work per unit).
SECONDS_PER_PICTURE = 0.002
#: Nominal floating-point operations per second of one backward row (forward + backward ~ 3x the forward's counted
#: operations), turning a layer's counted work into the progress bar's seconds: only the ratios between layers and
#: to the pictures matter, and counted operations, unlike one timed row, are the same on a busy machine.
FLOPS_PER_SECOND = 2e10
#: What a layer's crops plan (the cached receptive-field measurement and window check) depends on besides the store.
PLAN_VERSION = 1
#: The receptive-field box drawn on crops shown with context (yellow).
OUTLINE_COLOUR = (1.0, 0.85, 0.0)
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


def _jpeg(image: np.ndarray) -> bytes:
    """A montage as JPEG, chroma at full resolution (4:4:4): a rank's tile cut from it is closer to the rendered
    picture than a JPEG of the tile alone at 4:2:0, whose colour bleeds across the tiles' edges."""
    buffer = io.BytesIO()
    render.to_pil(image).save(buffer, format="JPEG", quality=90, subsampling=0)
    return buffer.getvalue()


def make_crops(model: Model, store: str | Path, layers: list[str] | None = None,
               kinds: tuple[str, ...] | None = None, channels: range | None = None,
               force: bool = False, progress: bool = True, batch_rows: int = BATCH_ROWS) -> Store:
    """Write crops, backward images, montages and sprites for the units of a find-max store. ``kinds``: any of
    :data:`KINDS`; by default :func:`default_kinds`. ``channels`` past a layer's last are left out (with a note).

    Each unit's pictures are followed by a record of what they were made from (its top-k, the layer's receptive
    fields, the network and preprocessing, the kinds, how crops are drawn); a unit whose record says these kinds from
    the current top-k is skipped, any other is (re)made and its stale pictures removed. The model must be the
    store's (its weights hash and preprocessing; :func:`deepvis.jobs.provenance.check_model`): ``force`` uses another one
    anyway, and redoes every unit asked for.

    Fast: the backward images of several units' top images (about ``batch_rows`` rows) are one batched backward pass
    (each row its own unit), and where a layer's receptive field is small the rows are crop-sized windows of the
    inputs instead of whole images (checked, per layer, to give the same pictures as whole images)."""
    store = Store(store)
    manifest = store.read_manifest()
    network = weights_hash(model)  # hashed once: the check, the plans and every unit's record use it
    check_model(store, model, force=force, manifest=manifest, network=network)
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
    names = store.read_image_list()
    files = [root / p for p in names]
    inputs = _Inputs(model, files)
    wanted = {name: list(dict.fromkeys(clamp_channels(channels, manifest.layers[name].channels, name, "crops")))
              for name in layers}  # each channel once, however often given
    backward = [k for k in kinds if k != "image"]
    # which units need (re)making, first: the progress bar's ETA counts only real work, weighted per layer
    todo: dict[str, list[tuple[int, dict, dict]]] = {}  # (channel, made-from record, its saved record or {})
    tops = {name: store.read_topk(name) for name in layers}
    hashes = {name: store.topk_hashes(name, tops[name], names) for name in layers}
    records: dict[str, dict[int, dict | None]] = {}  # units' crops records known (read, or written by this run)
    current_count = 0
    for name in layers:
        made_from = {"basis": store.crops_basis(manifest, name), "network": network}
        todo[name] = []
        records[name] = store.read_crops_records(name, wanted[name])
        for channel in wanted[name]:
            check_unit(Unit(name, channel), tuple(manifest.layers[name].shape))
            record = {"topk": hashes[name][channel], **made_from}
            saved = records[name][channel] or {}
            current = all(saved.get(key) == value for key, value in record.items())
            if force or not current or not set(kinds) <= set(saved.get("kinds", [])):
                todo[name].append((channel, record, saved))  # saved: the writer needs it, not read again
                del records[name][channel]  # written again (or removed) below
            else:
                current_count += 1
    total = sum(len(wanted[n]) for n in layers)
    plans = {name: _plan(model, inputs, store, manifest, name, backward, network) for name in layers if todo[name]}
    k = max(int(manifest.k), 1)
    costs = {name: plan.cost(k, len(backward)) for name, plan in plans.items()}
    bar = Progress(total, "crops", unit="units", enabled=progress, initial=current_count,
                   total_cost=sum(costs[n] * len(todo[n]) for n in plans))
    per_group = max(1, batch_rows // k)
    groups = {name: [todo[name][s:s + per_group] for s in range(0, len(todo[name]), per_group)] for name in plans}
    needed = dict.fromkeys(int(i) for name in plans for channel, *_ in todo[name]
                           for i in tops[name]["images"][channel] if i >= 0)
    if len(needed) <= inputs.size:  # decoded before the bar starts: a one-off the first batches would otherwise carry
        inputs.prefetch(list(needed))
    # files are written (each atomically) by writer threads while the next passes run; the layers' groups are
    # interleaved in proportion to their work, so the rate is steady from the first minute and the ETA honest
    with ThreadPoolExecutor(max_workers=WRITERS, thread_name_prefix="deepvis-crops-writer") as writer:
        pending: list[tuple[str, Future, tuple, bool]] = []  # (layer, its future, _write_unit's arguments, sprite)
        made: dict[str, dict[int, dict]] = {name: {} for name in plans}  # the sprite tiles of the units made
        asked = dict.fromkeys(plans, 0)  # units whose writers make sprite tiles, per layer: SPRITE_TILES_KEPT at most

        def collect(name: str, result: tuple) -> None:
            channel, record, tiles = result
            records[name][channel] = record
            made[name].update(tiles)

        for name, index in interleave({name: [costs[name] * len(g) for g in gs] for name, gs in groups.items()}):
            group = groups[name][index]
            for unit in _group_crops(model, inputs, store, name, group, tops[name], plans[name], kinds):
                sprite = sum(asked.values()) < SPRITE_TILES_KEPT  # the sprites read the others back
                asked[name] += sprite
                arguments = (store, name, *unit)
                pending.append((name, writer.submit(_write_unit, *arguments, sprite=sprite), arguments, sprite))
            while len(pending) > 4 * per_group:  # bounded: a slow disk holds the passes back
                name_, done, *_ = pending.pop(0)
                collect(name_, done.result())
            bar.update(len(group), cost=costs[name] * len(group))
            if index == len(groups[name]) - 1:  # the layer's last group: its files, then its sprites
                ours = [p[1:] for p in pending if p[0] == name]
                pending = [p for p in pending if p[0] != name]
                for done, arguments, sprite in reversed(ours):  # what no writer has started yet, this thread writes
                    if done.cancel():                             # itself (from the end) instead of waiting idle
                        collect(name, _write_unit(*arguments, sprite=sprite))
                for done, *_ in ours:
                    if not done.cancelled():
                        collect(name, done.result())
                _write_sprites(store, manifest, name, kinds, network, made.pop(name), hashes[name], records[name])
                asked[name] = 0
    for name in layers:  # every asked layer's sprites are rewritten, as before, also where no unit needed work
        if name not in groups:
            _write_sprites(store, manifest, name, kinds, network, None, hashes[name], records[name])
    bar.close()
    if progress and current_count:
        print(f"crops: {current_count} of {total} units were already made from their current top-k (--force redoes "
              "them)", file=sys.stderr, flush=True)
    return store


def _write_sprites(store: Store, manifest, name: str, kinds, network: str, made: dict | None = None,
                   hashes: list[str] | None = None, records: dict[int, dict | None] | None = None) -> None:
    """The layer's sprites of ``kinds`` from its current units; ``made``: channel -> kind -> sprite tile of the units
    this run made (their rank-0 pictures, already in memory: not read back from the store). ``hashes``: the layer's
    :meth:`~deepvis.store.Store.topk_hashes`, and ``records``: units' crops records, where the caller has them."""
    hashes = hashes if hashes is not None else store.topk_hashes(name)
    made_from = {"basis": store.crops_basis(manifest, name), "network": network}
    count = manifest.layers[name].channels
    records = {**store.read_crops_records(name, [c for c in range(count) if c not in (records or {})]),
               **(records or {})}
    current = [c for c in range(count) if _current(records[c], hashes[c], made_from)]
    digest = hashlib.sha256(json.dumps([made_from, [hashes[c] for c in current]]).encode()).hexdigest()[:16]
    made = made or {}
    saved = {} if made else store.read_sprites_record(name)
    for kind in kinds:
        if not made and (saved.get(kind) or {}).get("made_from") == digest and store.sprite_path(name, kind).is_file():
            continue  # made from exactly these units' pictures: nothing to redo (decoding every montage again)
        store.write_sprite(name, count, kind, [c for c in current if kind in records[c]["kinds"]], digest,
                           tiles={c: tiles[kind] for c, tiles in made.items() if kind in tiles})


def _current(record: dict | None, topk: str, made_from: dict) -> bool:
    return record is not None and record.get("topk") == topk and all(record.get(k) == v for k, v in made_from.items())


def interleave(work: dict[str, list[float]]) -> list[tuple[str, int]]:
    """The order to run several layers' groups in: ``(layer, group index)``, each next group from the layer that has
    done the smallest share of its own work (``work``: each group's estimated cost, in order). Every layer starts
    in the first round, and every stretch of the run holds the same mix of layers: its rate is the whole run's."""
    totals = {name: sum(costs) or 1.0 for name, costs in work.items()}
    done = {name: 0.0 for name in work}
    nexts = {name: 0 for name in work}
    order = []
    while True:
        open_ = [name for name in work if nexts[name] < len(work[name])]
        if not open_:
            return order
        name = min(open_, key=lambda n: done[n] / totals[n])  # ties: the order given, so every layer starts early
        order.append((name, nexts[name]))
        done[name] += work[name][nexts[name]]
        nexts[name] += 1


@dataclass
class _Plan:
    """How one layer's crops are made: its fields, and ``window``: the (height, width) of the crop-sized input
    windows its backward passes run on (None: whole images); ``flops_per_row``: the floating-point operations
    of the forward pass of one row up to the layer, counted (the basis of the progress bar's cost per unit)."""

    field: ReceptiveField | None
    effective: ReceptiveField | None
    window: tuple[int, int] | None = None
    flops_per_row: float = 0.0

    def cost(self, k: int, backward_kinds: int) -> float:
        """Estimated seconds per unit: its k rows' backward passes (forward + backward: about three forwards), plus
        encoding and writing its pictures."""
        seconds_per_row = 3.0 * self.flops_per_row / FLOPS_PER_SECOND
        return k * (backward_kinds * seconds_per_row + (backward_kinds + 1) * SECONDS_PER_PICTURE)

    @classmethod
    def from_json(cls, data: dict, field: ReceptiveField | None) -> "_Plan":
        """A plan saved by :meth:`to_json` (the layer's theoretical ``field`` comes from the store's manifest)."""
        window = data.get("window")
        return cls(field, field_from_json(data.get("effective")), tuple(window) if window else None,
                   float(data.get("flops_per_row", 0.0)))

    def origin(self, box: tuple[int, int, int, int], input_size: tuple[int, int]) -> tuple[int, int]:
        """Top-left of the window holding ``box``: on the field's stride grid, inside the input."""
        (sy, sx), (wh, ww) = self.field.stride, self.window
        top = min(max((box[0] // sy) * sy, 0), input_size[0] - wh)
        left = min(max((box[1] // sx) * sx, 0), input_size[1] - ww)
        return top, left

    def to_json(self) -> dict:
        return {"effective": self.effective.to_json() if self.effective is not None else None,
                "window": list(self.window) if self.window is not None else None, "flops_per_row": self.flops_per_row}


def _forward_flops(model: Model, x: torch.Tensor, layer: str) -> float:
    """Floating-point operations of the forward pass of ``x`` up to ``layer`` (convolutions and matrix products,
    as torch counts them); 0 where they cannot be counted."""
    from torch.utils.flop_counter import FlopCounterMode

    from deepvis.engine.probe import Probe

    try:
        with torch.no_grad(), Probe(model, [layer], stop_early=True) as probe, \
                FlopCounterMode(display=False) as counter:
            probe.run(x)
        return float(counter.get_total_flops())
    except Exception:  # noqa: BLE001 - an operation the counter does not know: the pictures' cost alone
        return 0.0


def _plan_key(store: Store, manifest, layer: str, network: str, backward: list[str]) -> str:
    """What a layer's plan depends on: the network, the layer's crops basis, the image list (the effective field is
    measured on it), the window settings and whether there are backward kinds."""
    basis = [PLAN_VERSION, store.crops_basis(manifest, layer), network, store.read_image_list(), WINDOW_AT_MOST,
             WINDOW_CHECKS, bool(backward)]
    return hashlib.sha256(json.dumps(basis).encode("utf-8")).hexdigest()[:16]


def _plan(model: Model, inputs: _Inputs, store: Store, manifest, layer: str, backward: list[str],
          network: str | None = None) -> _Plan:
    """The layer's fields, and whether crop-sized windows give the same backward pictures as whole images: measured
    once per layer (a few whole-image passes where the effective field is needed), then kept in the store."""
    field = field_from_json(manifest.layers[layer].receptive_field)
    key = _plan_key(store, manifest, layer, network or weights_hash(model), backward)
    saved = store.read_crops_plan(layer)
    if saved is not None and saved.get("key") == key:
        return _Plan.from_json(saved, field)
    plan = _measure_plan(model, inputs, store, manifest, layer, backward, field)
    store.write_crops_plan(layer, {"key": key, **plan.to_json()})
    return plan


def _measure_plan(model: Model, inputs: _Inputs, store: Store, manifest, layer: str, backward: list[str],
                  field: ReceptiveField | None) -> _Plan:
    effective = _effective_field(model, inputs, layer, field, manifest.layers[layer].shape)
    plan = _Plan(field, effective)
    size = tuple(model.preprocessing.input_size)
    top = store.read_topk(layer)
    items = [(c, r) for c, r in zip(*np.nonzero(top["images"] >= 0))][:WINDOW_CHECKS]
    if not backward or not items:
        return plan
    window = _window_size(field, size) if effective is None and int(top["y"].max()) >= 0 else None
    units = [Unit(layer, int(c), (int(top["y"][c, r]), int(top["x"][c, r])) if top["y"][c, r] >= 0 else None)
             for c, r in items]
    loaded = [inputs.get(int(top["images"][c, r]))[0] for c, r in items]
    plan.flops_per_row = _forward_flops(model, loaded[0][None].to(model.device), layer)  # whole images
    if window is None:
        return plan
    full = backprop_batch(model, torch.stack(loaded).to(model.device), units, "gradient", signal="argmax").input_grad
    plan.window = window
    boxes = [unit_box(field, u.position[0], u.position[1], size) for u in units]
    origins = [plan.origin(box, size) for box in boxes]
    try:
        windows = _windows(loaded, origins, window).to(model.device)
        local = backprop_batch(model, windows, [_local(u, o, field) for u, o in zip(units, origins)], "gradient",
                               signal="argmax").input_grad
    except Exception:  # noqa: BLE001 - a network that only takes its own input size: whole images
        plan.window = None
        return plan
    for n, (box, (oy, ox)) in enumerate(zip(boxes, origins)):
        a = crop_box(full[n].permute(1, 2, 0).cpu().numpy(), box)
        b = crop_box(local[n].permute(1, 2, 0).cpu().numpy(), (box[0] - oy, box[1] - ox, box[2] - oy, box[3] - ox))
        if not np.abs(a - b).max() <= 1e-4 * (np.abs(a).max() + 1e-12):
            plan.window = None  # padding or a global operation makes windows differ: whole images
            return plan
    plan.flops_per_row = _forward_flops(model, windows[:1], layer)  # windows
    return plan


def _window_size(field: ReceptiveField | None, size: tuple[int, int]) -> tuple[int, int] | None:
    """A window that holds any unit's field on the stride grid, when it is much smaller than the input."""
    if field is None or field.clipped:
        return None
    dims = []
    for extent, stride, full in zip(field.size, field.stride, size):
        if full % stride:
            return None
        dims.append(min(full, -(-(extent + stride - 1) // stride) * stride))
    return tuple(dims) if dims[0] * dims[1] <= WINDOW_AT_MOST * size[0] * size[1] else None


def _windows(tensors: list[torch.Tensor], origins: list[tuple[int, int]], window: tuple[int, int]) -> torch.Tensor:
    return torch.stack([t[:, y:y + window[0], x:x + window[1]] for t, (y, x) in zip(tensors, origins)])


def _local(unit: Unit, origin: tuple[int, int], field: ReceptiveField) -> Unit:
    (y, x), (oy, ox) = unit.position, origin
    return Unit(unit.layer, unit.channel, (y - oy // field.stride[0], x - ox // field.stride[1]))


def draw_outline(picture: np.ndarray, box: tuple[int, int, int, int], outer: tuple[int, int, int, int],
                 colour=OUTLINE_COLOUR, width: int = 1) -> np.ndarray:
    """``picture`` (the crop of ``outer``) with a ``width``-pixel box drawn just outside ``box``: the pixels
    inside the box stay exactly as they were."""
    if box == outer:
        return picture
    out = picture.copy()
    top, left = box[0] - outer[0], box[1] - outer[1]
    bottom, right = box[2] - outer[0], box[3] - outer[1]
    height, width_ = out.shape[:2]
    colour = np.asarray(colour, out.dtype)
    for w in range(width):
        t, l, b, r = top - 1 - w, left - 1 - w, bottom + w, right + w
        cols = slice(max(l, 0), min(r + 1, width_))
        rows = slice(max(t, 0), min(b + 1, height))
        for row in (t, b):
            if 0 <= row < height:
                out[row, cols] = colour
        for col in (l, r):
            if 0 <= col < width_:
                out[rows, col] = colour
    return out


def _group_crops(model, inputs: _Inputs, store: Store, layer: str, group: list[tuple[int, dict, dict]], top: dict,
                 plan: _Plan, kinds) -> list[tuple]:
    """The pictures of several units (``group``: each unit's channel, record and saved record): each backward kind
    is one batched pass over all their top images. Returns each unit's ``(channel, pictures by kind, ranks,
    record, saved record)`` for :func:`_write_unit`."""
    size = tuple(model.preprocessing.input_size)
    min_size = CROPS_SETTINGS["min_size"]
    rows = []  # (channel, rank, image index, y, x, box, shown box)
    for channel, *_ in group:
        ranks = [r for r in range(top["images"].shape[1]) if top["images"][channel, r] >= 0]
        if not ranks:
            store.remove_crops(layer, channel)
        for r in ranks:
            y, x = int(top["y"][channel, r]), int(top["x"][channel, r])
            box = unit_box(plan.field, y, x, size, plan.effective)
            rows.append((channel, r, int(top["images"][channel, r]), y, x, box, context_box(box, min_size)))
    if not rows:
        return []
    pictures: dict[tuple[int, str], list[np.ndarray]] = {}
    if "image" in kinds:
        for channel, _r, index, _y, _x, box, shown in rows:
            pictures.setdefault((channel, "image"), []).append(draw_outline(crop_box(inputs.get(index)[1], shown),
                                                                            box, shown))
    backward = [k for k in kinds if k != "image"]
    if backward:
        tensors = [inputs.get(index)[0] for _c, _r, index, *_ in rows]
        units = [Unit(layer, channel, (y, x) if y >= 0 else None) for channel, _r, _i, y, x, _b, _s in rows]
        origins = [(0, 0)] * len(rows)
        if plan.window is not None:
            origins = [plan.origin(row[5], size) for row in rows]
            x_batch = _windows(tensors, origins, plan.window)
            units = [_local(u, o, plan.field) for u, o in zip(units, origins)]
        else:
            x_batch = torch.stack(tensors)
        x_batch = x_batch.to(model.device)
        for kind in backward:
            # each row's one-hot at its own top position (a fully connected unit: its one value, by 'argmax')
            grads = backprop_batch(model, x_batch, units, kind, signal="argmax").input_grad
            rgb = model.preprocessing.to_rgb(grads).permute(0, 2, 3, 1).cpu().numpy()
            for g, (oy, ox), (channel, _r, _i, _y, _x, box, shown) in zip(rgb, origins, rows):
                local = (shown[0] - oy, shown[1] - ox, shown[2] - oy, shown[3] - ox)
                picture = render.back_image(crop_box(g, local), "raw")
                pictures.setdefault((channel, kind), []).append(draw_outline(picture, box, shown))
    made = []
    for channel, record, saved in group:
        ranks = [r for c, r, *_ in rows if c == channel]
        if ranks:
            made.append((channel, {kind: pictures[(channel, kind)] for kind in kinds}, ranks, record, saved))
    return made


def _write_unit(store: Store, layer: str, channel: int, images: dict[str, list[np.ndarray]], ranks: list[int],
                record: dict, saved: dict | None = None, sprite: bool = True) -> tuple[int, dict, dict[int, dict]]:
    """Encode a unit's pictures, one montage per kind (its only picture file: each rank's tile is in the record), and
    write them: run by the writer threads, so the encoding (which frees the GIL) overlaps the next backward passes.
    ``saved``: the unit's crops record as read before ({}: none; None: read it here). Returns the channel, the record
    written and, where ``sprite``, ``{channel: {kind: sprite tile}}``: each kind's best (first rank's) picture at
    the sprites' tile size (else, or without a rank-0 picture, {})."""
    montages, tiles = {}, {}
    for kind, pictures in images.items():
        boxes = render.montage_boxes([p.shape[:2] for p in pictures], pad=MONTAGE_PAD)
        montages[kind] = _jpeg(render.montage(pictures, pad=MONTAGE_PAD))
        by_rank = [None] * (max(ranks) + 1)
        for rank, box in zip(ranks, boxes):
            by_rank[rank] = box
        tiles[kind] = by_rank
    written = store.write_crops(layer, channel, montages, tiles, record, old=saved)
    if not sprite or ranks[0] != 0:
        return channel, written, {}
    return channel, written, {channel: {kind: sprite_tile(render.to_pil(pictures[0]))
                                        for kind, pictures in images.items()}}
