"""The pictures of a group of units: each top image's crop at the unit (in context where the field is tiny, its
box outlined) and its backward images, each backward kind one batched pass over all the group's top images."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from deepvis.core.boxes import Box, context_box, crop_box
from deepvis.core.units import Unit
from deepvis.engine.backprop import backprop_batch
from deepvis.jobs.crops.plan import Plan, local_unit, windows
from deepvis.jobs.crops.records import Todo
from deepvis.jobs.fields import unit_box
from deepvis.jobs.inputs import StoreInputs
from deepvis.models.model import Model
from deepvis.pixels import render
from deepvis.store import CROPS_SETTINGS, Store

#: The receptive-field box drawn on crops shown with context (yellow).
OUTLINE_COLOUR = (1.0, 0.85, 0.0)


@dataclass(frozen=True)
class Row:
    """One top image of a unit: a row of the group's batched backward passes."""

    channel: int
    rank: int
    image: int  # its index in the store's image list
    y: int  # the unit's top position (-1, -1: a fully connected unit)
    x: int
    box: Box  # the unit's field
    shown: Box  # what is shown: the field, in context where it is tiny


@dataclass(frozen=True)
class UnitPictures:
    """A unit's pictures, by kind in rank order (``ranks``: the ranks that have a top image), for the writer."""

    todo: Todo
    pictures: dict[str, list[np.ndarray]]
    ranks: list[int]


def draw_outline(picture: np.ndarray, box: Box, outer: Box, colour=OUTLINE_COLOUR, width: int = 1) -> np.ndarray:
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


def group_pictures(model: Model, inputs: StoreInputs, store: Store, layer: str, group: list[Todo], top: dict,
                   plan: Plan, kinds: tuple[str, ...]) -> list[UnitPictures]:
    """The pictures of several units (``group``): each backward kind is one batched pass over all their top
    images. A unit without top images has its crops removed and no pictures."""
    size = tuple(model.preprocessing.input_size)
    rows = _rows(store, layer, group, top, plan, size)
    if not rows:
        return []
    pictures: dict[tuple[int, str], list[np.ndarray]] = {}
    if "image" in kinds:
        for row in rows:
            crop = crop_box(inputs.get(row.image)[1], row.shown)
            pictures.setdefault((row.channel, "image"), []).append(draw_outline(crop, row.box, row.shown))
    backward = [k for k in kinds if k != "image"]
    if backward:
        tensors = [inputs.get(row.image)[0] for row in rows]
        units = [Unit(layer, row.channel, (row.y, row.x) if row.y >= 0 else None) for row in rows]
        origins = [(0, 0)] * len(rows)
        if plan.window is not None:
            origins = [plan.origin(row.box, size) for row in rows]
            x_batch = windows(tensors, origins, plan.window)
            units = [local_unit(u, o, plan.field) for u, o in zip(units, origins)]
        else:
            x_batch = torch.stack(tensors)
        x_batch = x_batch.to(model.device)
        for kind in backward:
            # each row's one-hot at its own top position (a fully connected unit: its one value, by 'argmax')
            grads = backprop_batch(model, x_batch, units, kind, signal="argmax").input_grad
            rgb = model.preprocessing.to_rgb(grads).permute(0, 2, 3, 1).cpu().numpy()
            for g, (oy, ox), row in zip(rgb, origins, rows):
                shown = row.shown
                local = (shown[0] - oy, shown[1] - ox, shown[2] - oy, shown[3] - ox)
                picture = render.back_image(crop_box(g, local), "raw")
                pictures.setdefault((row.channel, kind), []).append(draw_outline(picture, row.box, shown))
    made = []
    for todo in group:
        ranks = [row.rank for row in rows if row.channel == todo.channel]
        if ranks:
            made.append(UnitPictures(todo, {kind: pictures[(todo.channel, kind)] for kind in kinds}, ranks))
    return made


def _rows(store: Store, layer: str, group: list[Todo], top: dict, plan: Plan, size: tuple[int, int]) -> list[Row]:
    """The group's top images in unit and rank order; a unit without any has its crops removed here."""
    min_size = CROPS_SETTINGS["min_size"]
    rows = []
    for todo in group:
        channel = todo.channel
        ranks = [r for r in range(top["images"].shape[1]) if top["images"][channel, r] >= 0]
        if not ranks:
            store.remove_crops(layer, channel)
        for r in ranks:
            y, x = int(top["y"][channel, r]), int(top["x"][channel, r])
            box = unit_box(plan.field, y, x, size, plan.effective)
            rows.append(Row(channel, r, int(top["images"][channel, r]), y, x, box, context_box(box, min_size)))
    return rows
