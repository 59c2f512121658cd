"""Receptive fields computed from the model itself, for any architecture (no tables typed in).

A unit's receptive field is the set of input pixels with a path to it. It is found by one backward pass through
a *dense* version of the network, made on the fly without touching the model: every convolution and linear layer
gets uniform positive weights (``1 / fan_in``), max pooling becomes average pooling, normalization and rectifiers
become the identity. Every path then carries a positive gradient, so the support of the input gradient of a
one-hot at the unit is exactly its receptive field, clipped at the image border (zero padding lies outside).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from deepvis.engine.backprop import _RECTIFIERS, Trace, _arg, trace
from deepvis.core.errors import UnitError
from deepvis.models.model import Model
from deepvis.models.model import as_model
from deepvis.engine.probe import layer_info
from deepvis.core.units import Unit, check_unit, parse_unit

_CONVS = {F.conv1d, F.conv2d, F.conv3d, F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d}
_NORMS = {F.batch_norm, F.layer_norm, F.group_norm, F.instance_norm, F.local_response_norm}
_MAX_POOLS = {F.max_pool1d: F.avg_pool1d, F.max_pool2d: F.avg_pool2d, F.max_pool3d: F.avg_pool3d}
_ADAPTIVE_MAX = {F.adaptive_max_pool1d: F.adaptive_avg_pool1d, F.adaptive_max_pool2d: F.adaptive_avg_pool2d,
                 F.adaptive_max_pool3d: F.adaptive_avg_pool3d}


class _Dense(TorchFunctionMode):
    """During a forward pass: uniform positive weights, average instead of max pooling, no normalization, no
    rectification — so gradients reach every pixel a unit can see."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _CONVS or func is F.linear:
            weight = _arg(args, kwargs, 1, "weight", None)
            dense = torch.ones_like(weight) / weight[0].numel()
            args = (args[0], dense, None) + tuple(args[3:])
            kwargs = {k: v for k, v in kwargs.items() if k not in ("weight", "bias")}
            return func(*args, **kwargs)
        if func in _NORMS:
            return args[0]
        if func in _MAX_POOLS:
            if _arg(args, kwargs, 6, "return_indices", False):
                return func(*args, **kwargs)
            kernel = _arg(args, kwargs, 1, "kernel_size", None)
            stride = _arg(args, kwargs, 2, "stride", None) or kernel
            padding = _arg(args, kwargs, 3, "padding", 0)
            ceil_mode = _arg(args, kwargs, 5, "ceil_mode", False)
            return _MAX_POOLS[func](args[0], kernel, stride, padding, ceil_mode=ceil_mode)
        if func in _ADAPTIVE_MAX:
            return _ADAPTIVE_MAX[func](args[0], _arg(args, kwargs, 1, "output_size", None))
        parse = _RECTIFIERS.get(func)
        if parse is not None and args and isinstance(args[0], torch.Tensor) and parse(args, kwargs) is not None:
            return args[0]
        return func(*args, **kwargs)


def field_from_json(data: dict | None) -> "ReceptiveField | None":
    """The inverse of :meth:`ReceptiveField.to_json` (as stored in a store's manifest)."""
    if not data:
        return None

    def pair(value):
        return tuple(value) if isinstance(value, list) else (value, value)

    return ReceptiveField(pair(data["size"]), pair(data["stride"]), bool(data.get("clipped", False)),
                          tuple(data.get("offset", (0, 0))))


@dataclass(frozen=True)
class ReceptiveField:
    """Size and stride (in input pixels, (height, width)) of a layer's units; ``clipped`` when the field is larger
    than the largest input tried, so ``size`` is a lower bound."""

    size: tuple[int, int]
    stride: tuple[int, int]
    clipped: bool = False
    offset: tuple[int, int] = (0, 0)  # top-left input pixel of unit (0, 0)'s field (negative: it hangs over)

    def box(self, y: int, x: int) -> tuple[int, int, int, int]:
        """Unclipped field of the unit at (y, x): (top, left, bottom, right), bottom/right exclusive."""
        top, left = self.offset[0] + y * self.stride[0], self.offset[1] + x * self.stride[1]
        return top, left, top + self.size[0], left + self.size[1]

    def to_json(self) -> dict:
        square = self.size[0] == self.size[1] and self.stride[0] == self.stride[1]
        data = {"size": self.size[0] if square else list(self.size),
                "stride": self.stride[0] if square else list(self.stride), "offset": list(self.offset)}
        if self.clipped:
            data["clipped"] = True
        return data


def _dense_trace(model: Model, layers: list[str], input_size: tuple[int, int]) -> Trace:
    """A trace of the dense network on an input of ``input_size``, recording ``layers`` (spatial ones only)."""
    height, width = input_size
    x = torch.ones(1, model.preprocessing.channels, height, width, device=model.device)
    traced = trace(model, x, layers, _Dense(), stop_early=True)
    for layer in layers:
        if traced[layer].dim() != 4:
            raise UnitError(f"layer '{layer}' has no spatial dimensions (output shape {tuple(traced[layer].shape[1:])})"
                            ": each of its units sees the whole input")
    return traced


def _box(traced: Trace, layer: str, y: int, x_pos: int, retain: bool):
    """(top, left, bottom, right) of the input support of position (y, x) of ``layer``; None if empty."""
    act = traced[layer]
    start = torch.zeros_like(act)
    start[0, :, y, x_pos] = 1.0
    grad = traced.backward(layer, signal=start, retain_graph=retain).input_grad
    seen = grad[0].abs().sum(0) > 0
    rows, cols = seen.any(1).nonzero(), seen.any(0).nonzero()
    if rows.numel() == 0:
        return None
    return int(rows.min()), int(cols.min()), int(rows.max()), int(cols.max())


def input_box(model: Model, unit: str | Unit, input_size: tuple[int, int] | None = None) -> tuple[int, int, int, int]:
    """The input pixels a unit at ``layer:channel@y,x`` sees, as ``(top, left, bottom, right)`` (inclusive),
    clipped at the image border, for an input of ``input_size`` (default: the model's)."""
    model = as_model(model)
    unit = parse_unit(unit)
    if unit.position is None:
        raise UnitError(f"unit '{unit}' needs a position (layer:channel@y,x) for its receptive field")
    traced = _dense_trace(model, [unit.layer], input_size or model.preprocessing.input_size)
    check_unit(unit, tuple(traced[unit.layer].shape[1:]))
    box = _box(traced, unit.layer, *unit.position, retain=False)
    if box is None:
        raise UnitError(f"unit '{unit}' does not depend on the input")
    return box


def receptive_fields(model: Model, layers: list[str] | None = None,
                     max_input: int = 1024) -> dict[str, ReceptiveField | None]:
    """Receptive field size and stride of each layer's units, measured at a central unit and its diagonal
    neighbour; the input doubles (while its larger side stays within ``max_input`` pixels) until the field fits
    inside. A field still clipped then is a lower bound (``clipped``), its stride the input / output size ratio.
    ``None`` for layers without spatial dimensions or with a single position still clipped at the largest input
    (global pooling), and on networks that cannot run larger (vision transformers' learned position embeddings)
    for layers whose units already see the whole input (tokens after attention): each of their units sees it all.
    """
    model = as_model(model)
    names = layers if layers is not None else [i.name for i in model.layers() if i.default]
    key = (tuple(model.preprocessing.input_size), max_input)
    known = model._fields.setdefault(key, {})
    result: dict[str, ReceptiveField | None] = {}
    pending = []
    for name in names:
        info = layer_info(model, name)
        if name in known:  # measured before in this process, or shipped with the model (as JSON)
            result[name] = field_from_json(known[name]) if isinstance(known[name], dict) else known[name]
        elif len(info.shape) != 3:
            result[name] = None
        else:
            pending.append(name)
    base_h, base_w = model.preprocessing.input_size
    fixed = bool(getattr(model.net, "fixed_input_size", None))  # a graph that runs at one size (ONNX imports)
    if fixed:
        max_input = min(max_input, max(base_h, base_w))
    scale, measured = 1, {}
    while pending:
        size = (base_h * scale, base_w * scale)
        try:
            traced = _dense_trace(model, pending, size)
        except UnitError:
            raise
        except Exception:  # noqa: BLE001 - a fixed-size network (position embedding, Linear after flatten)
            if scale == 1:
                raise
            break  # it does not run at this size: the last size's fields stand
        still = []
        for n, name in enumerate(pending):
            h, w = traced[name].shape[2:]
            cy, cx = (h - 1) // 2, (w - 1) // 2
            last = n + 1 == len(pending)
            center = _box(traced, name, cy, cx, retain=True)
            diagonal = _box(traced, name, min(cy + 1, h - 1), min(cx + 1, w - 1), retain=not last)
            if center is None:
                raise UnitError(f"layer '{name}' does not depend on the input")
            measured[name] = (center, diagonal, size, h, w)
            inside = center[0] > 0 and center[1] > 0 and center[2] < size[0] - 1 and center[3] < size[1] - 1
            if not inside and max(size) * 2 <= max_input:
                still.append(name)
                continue
            result[name] = _field(*measured[name], grew=not fixed)
        pending, scale = still, scale * 2
    for name in pending:  # the network would not run larger
        result[name] = _field(*measured[name], grew=False)
    known.update(result)
    return {name: result[name] for name in names}


def _field(center, diagonal, size, h: int, w: int, grew: bool) -> ReceptiveField | None:
    """The field measured at a central unit and its diagonal neighbour on an input of ``size``; None where every
    unit sees the whole input (a global pool; or, on a network that cannot run larger, a unit already seeing all
    of it, such as a vision transformer's token after attention)."""
    inside = center[0] > 0 and center[1] > 0 and center[2] < size[0] - 1 and center[3] < size[1] - 1
    whole = center == (0, 0, size[0] - 1, size[1] - 1)
    if not inside and (h == w == 1 or (whole and not grew)):
        return None
    cy, cx = (h - 1) // 2, (w - 1) // 2
    stride_y = diagonal[0] - center[0] if diagonal and cy + 1 < h else center[2] - center[0] + 1
    stride_x = diagonal[1] - center[1] if diagonal and cx + 1 < w else center[3] - center[1] + 1
    ratio = (size[0] / h, size[1] / w)
    stride = (max(stride_y, 1), max(stride_x, 1))
    if not inside or any(not r / 2 <= s <= 2 * r for s, r in zip(stride, ratio)):
        # clipped, or not translation-equivariant (windowed attention: neighbours in one window see the same
        # pixels): the input / output size ratio, so the field's box follows the unit across the grid
        stride = (max(1, round(ratio[0])), max(1, round(ratio[1])))
    return ReceptiveField((center[2] - center[0] + 1, center[3] - center[1] + 1), stride, clipped=not inside,
                          offset=(center[0] - cy * stride[0], center[1] - cx * stride[1]))


def receptive_field(model: Model, layer: str, max_input: int = 1024) -> ReceptiveField:
    """Receptive field size and stride of one spatial layer's units (see :func:`receptive_fields`)."""
    field = receptive_fields(model, [layer], max_input)[layer]
    if field is None:
        raise UnitError(f"layer '{layer}' has no spatial dimensions: each of its units sees the whole input")
    return field


#: The share of the input-gradient mass an effective receptive field holds.
EFFECTIVE_MASS = 0.9
#: A theoretical field covering more than this share of the input's area is replaced by the effective one in crops.
EFFECTIVE_ABOVE = 0.5


def effective_receptive_fields(model: Model, layers: list[str], x: torch.Tensor,
                               mass: float = EFFECTIVE_MASS) -> dict[str, ReceptiveField | None]:
    """Effective receptive fields (Luo et al. 2016), measured on the model with its weights: the input-gradient
    magnitude of a central unit, summed over the images ``x`` (N, C, H, W; each image a different channel, so
    the field describes the layer and not one feature), and the box around its centre of mass that holds
    ``mass`` of it. Where the theoretical field is the whole input (a vision transformer after attention, a deep
    CNN) this is the part of the input a unit actually looks at. ``offset`` and ``stride`` place the box of any
    grid position, as for :class:`ReceptiveField`. None for layers without spatial dimensions."""
    model = as_model(model)
    spatial = [name for name in layers if len(layer_info(model, name).shape) == 3]
    result: dict[str, ReceptiveField | None] = {name: None for name in layers}
    if not spatial:
        return result
    traced = trace(model, x, spatial, "gradient", stop_early=True)
    height, width = x.shape[2:]
    for n, name in enumerate(spatial):
        channels, h, w = traced[name].shape[1:]
        cy, cx = (h - 1) // 2, (w - 1) // 2
        units = [Unit(name, (i * channels) // len(x), (cy, cx)) for i in range(len(x))]
        grad = traced.backward(units, retain_graph=n + 1 < len(spatial)).input_grad
        density = grad.abs().sum(dim=(0, 1)).double()
        total = float(density.sum())
        if total == 0:
            continue
        rows, cols = torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64)
        my, mx = float((density.sum(1) * rows).sum()) / total, float((density.sum(0) * cols).sum()) / total
        box = _box_holding(density, my, mx, mass * total)
        stride = (max(1, round(height / h)), max(1, round(width / w)))
        result[name] = ReceptiveField((box[2] - box[0], box[3] - box[1]), stride,
                                      offset=(box[0] - cy * stride[0], box[1] - cx * stride[1]))
    return result


def _box_holding(density: torch.Tensor, my: float, mx: float, wanted: float) -> tuple[int, int, int, int]:
    """The smallest box (grown by one pixel a side at a time, in proportion to the input) centred on (my, mx)
    holding ``wanted`` of ``density``: (top, left, bottom, right), bottom/right exclusive, clipped to the input."""
    height, width = density.shape
    cumulative = density.cumsum(0).cumsum(1)
    padded = torch.nn.functional.pad(cumulative, (1, 0, 1, 0))

    def inside(top: int, left: int, bottom: int, right: int) -> float:
        return float(padded[bottom, right] - padded[top, right] - padded[bottom, left] + padded[top, left])

    ratio = width / height
    for half in range(1, max(height, width) + 1):
        half_w = max(1, round(half * ratio))
        top, bottom = max(0, round(my - half)), min(height, round(my + half) + 1)
        left, right = max(0, round(mx - half_w)), min(width, round(mx + half_w) + 1)
        if inside(top, left, bottom, right) >= wanted:
            return top, left, bottom, right
    return 0, 0, height, width
