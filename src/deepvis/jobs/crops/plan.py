"""How one layer's crops are made (its plan): the layer's receptive fields, whether its backward passes may run on
crop-sized windows of the inputs instead of whole images (checked against whole images), and its counted work per
row (the progress bar's cost). Measured once per layer, then kept in the store."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from deepvis.core.boxes import Box, crop_box
from deepvis.core.units import Unit
from deepvis.engine.backprop import backprop_batch
from deepvis.engine.probe import Probe
from deepvis.engine.receptive_field import ReceptiveField, field_from_json
from deepvis.jobs.fields import effective_field, unit_box
from deepvis.jobs.inputs import StoreInputs
from deepvis.models.model import Model, weights_hash
from deepvis.store import Manifest, Store

#: Crop-sized windows are used where they hold at most this fraction of the input's pixels.
WINDOW_AT_MOST = 0.5
#: Top images on which a layer's windows are checked against whole images.
WINDOW_CHECKS = 1
#: Rough seconds to encode and write one picture (the progress bar's estimate of work per unit).
SECONDS_PER_PICTURE = 0.002
#: Nominal floating-point operations per second of one backward row (forward + backward ~ 3x the forward's counted
#: operations), turning a layer's counted work into the progress bar's seconds: only the ratios between layers and
#: to the pictures matter, and counted operations, unlike one timed row, are the same on a busy machine.
FLOPS_PER_SECOND = 2e10
#: What a layer's crops plan (the cached receptive-field measurement and window check) depends on besides the store.
PLAN_VERSION = 1


@dataclass
class Plan:
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
    def from_json(cls, data: dict, field: ReceptiveField | None) -> "Plan":
        """A plan saved by :meth:`to_json` (the layer's theoretical ``field`` comes from the store's manifest)."""
        window = data.get("window")
        return cls(field, field_from_json(data.get("effective")), tuple(window) if window else None,
                   float(data.get("flops_per_row", 0.0)))

    def origin(self, box: Box, input_size: tuple[int, int]) -> tuple[int, int]:
        """Top-left of the window holding ``box``: on the field's stride grid, inside the input."""
        (sy, sx), (wh, ww) = self.field.stride, self.window
        top = min(max((box[0] // sy) * sy, 0), input_size[0] - wh)
        left = min(max((box[1] // sx) * sx, 0), input_size[1] - ww)
        return top, left

    def to_json(self) -> dict:
        """The plan as saved in the store (its theoretical field is the manifest's)."""
        return {"effective": self.effective.to_json() if self.effective is not None else None,
                "window": list(self.window) if self.window is not None else None, "flops_per_row": self.flops_per_row}


def layer_plan(model: Model, inputs: StoreInputs, store: Store, manifest: Manifest, layer: str,
               backward: list[str], network: str | None = None) -> Plan:
    """The layer's fields, and whether crop-sized windows give the same backward pictures as whole images: measured
    once per layer (a few whole-image passes where the effective field is needed), then kept in the store."""
    field = field_from_json(manifest.layers[layer].receptive_field)
    key = _plan_key(store, manifest, layer, network or weights_hash(model), backward)
    saved = store.read_crops_plan(layer)
    if saved is not None and saved.get("key") == key:
        return Plan.from_json(saved, field)
    plan = _measure_plan(model, inputs, store, manifest, layer, backward, field)
    store.write_crops_plan(layer, {"key": key, **plan.to_json()})
    return plan


def windows(tensors: list[torch.Tensor], origins: list[tuple[int, int]], window: tuple[int, int]) -> torch.Tensor:
    """The ``window``-sized part of each input tensor at its origin, as one batch."""
    return torch.stack([t[:, y:y + window[0], x:x + window[1]] for t, (y, x) in zip(tensors, origins)])


def local_unit(unit: Unit, origin: tuple[int, int], field: ReceptiveField) -> Unit:
    """``unit`` at its position within the window whose top-left is ``origin``."""
    (y, x), (oy, ox) = unit.position, origin
    return Unit(unit.layer, unit.channel, (y - oy // field.stride[0], x - ox // field.stride[1]))


def _forward_flops(model: Model, x: torch.Tensor, layer: str) -> float:
    """Floating-point operations of the forward pass of ``x`` up to ``layer`` (convolutions and matrix products,
    as torch counts them); 0 where they cannot be counted."""
    try:
        with torch.no_grad(), Probe(model, [layer], stop_early=True) as probe, \
                FlopCounterMode(display=False) as counter:
            probe.run(x)
        return float(counter.get_total_flops())
    except Exception:  # noqa: BLE001 - an operation the counter does not know: the pictures' cost alone
        return 0.0


def _plan_key(store: Store, manifest: Manifest, layer: str, network: str, backward: list[str]) -> str:
    """What a layer's plan depends on: the network, the layer's crops basis, the image list (the effective field is
    measured on it), the window settings and whether there are backward kinds."""
    basis = [PLAN_VERSION, store.crops_basis(manifest, layer), network, store.read_image_list(), WINDOW_AT_MOST,
             WINDOW_CHECKS, bool(backward)]
    return hashlib.sha256(json.dumps(basis).encode("utf-8")).hexdigest()[:16]


def _measure_plan(model: Model, inputs: StoreInputs, store: Store, manifest: Manifest, layer: str,
                  backward: list[str], field: ReceptiveField | None) -> Plan:
    effective = effective_field(model, inputs, layer, field, manifest.layers[layer].shape)
    plan = Plan(field, effective)
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
        batch = windows(loaded, origins, window).to(model.device)
        local = backprop_batch(model, batch, [local_unit(u, o, field) for u, o in zip(units, origins)], "gradient",
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
    plan.flops_per_row = _forward_flops(model, batch[:1], layer)  # windows
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
