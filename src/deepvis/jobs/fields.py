"""Which input pixels a unit of a find-max store is shown by: the box of its receptive field at its top position,
or of its effective receptive field (measured on the store's images) where the theoretical one covers most of the
input. Shared by the jobs that cut crops at units (crops, evaluate)."""

from __future__ import annotations

import torch

from deepvis.core.boxes import Box
from deepvis.core.errors import DeepvisError
from deepvis.engine.receptive_field import EFFECTIVE_ABOVE, ReceptiveField, effective_receptive_fields
from deepvis.jobs.inputs import StoreInputs
from deepvis.models.model import Model


def unit_box(field: ReceptiveField | None, y: int, x: int, input_size: tuple[int, int],
             effective: ReceptiveField | None = None) -> Box:
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


def effective_field(model: Model, inputs: StoreInputs, layer: str, field: ReceptiveField | None,
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
