"""Converters of the operators that move, select and reshape values (and ``Resize``, ``Cast``, ``If``).

A file exported at a fixed batch size (usually 1) keeps working on batches: constant ``Reshape`` targets and
``Gather`` picks on batch-carrying tensors are scaled along the axis that holds the batch (:class:`BatchAxis`),
and ``Concat`` broadcasts inputs exported with batch size 1.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from deepvis.models.onnx.node import BatchAxis, Node
from deepvis.models.onnx.node import op as _op


def _axes(node: Node, attr_before: int) -> list[int] | None:
    """Axes given as an attribute (before opset ``attr_before``) or as a constant second input."""
    if node.opset < attr_before:
        return node.ints("axes")
    return node.need_const(1, "axes") if node.has(1) else None


def unsqueeze(node: Node):
    axes = _axes(node, 13)

    def unsqueeze(x):
        for axis in sorted(a % (x.dim() + len(axes)) for a in axes):
            x = x.unsqueeze(axis)
        return x
    return _op("Unsqueeze", unsqueeze), [0]


def squeeze(node: Node):
    axes = _axes(node, 13)
    return _op("Squeeze", lambda x: x.squeeze() if axes is None else x.squeeze(tuple(axes))), [0]


def reduce(function: Callable, axes_input_since: int):
    def convert(node: Node):
        axes, keep = _axes(node, axes_input_since), bool(node.attrs.get("keepdims", 1))
        if axes is None and node.attrs.get("noop_with_empty_axes", 0):
            return nn.Identity(), [0]
        return _op(node.op, lambda x: function(x, dim=tuple(axes) if axes else tuple(range(x.dim())),
                                               keepdim=keep)), [0]
    return convert


def reduce_l2(x, dim, keepdim):
    return x.pow(2).sum(dim=dim, keepdim=keepdim).sqrt()


def _batch_place(shape: tuple[int, ...], batch: BatchAxis, target: list[int]) -> int | None:
    """The axis of ``target`` that holds the batch in a reshape of ``shape`` (batch as ``batch``), both at the
    file's batch size: an axis of its own if there is one, else the axis the batch falls in (merged with outer
    and / or inner entries)."""
    outer = math.prod(shape[:batch.axis]) * batch.outer
    inner = math.prod(shape[batch.axis + 1:]) * batch.inner
    for j in range(len(target)):
        if math.prod(target[:j]) == outer and target[j] == batch.file_batch and math.prod(target[j + 1:]) == inner:
            return j
    candidates = []
    for j in range(len(target)):
        before, after = math.prod(target[:j]), math.prod(target[j + 1:])
        if outer % before == 0 and inner % after == 0 \
                and (outer // before) * batch.file_batch * (inner // after) == target[j]:
            # Several axes can hold the batch (the same memory layout, different shapes). Preferred, as
            # nn.MultiheadAttention and window attention reshape: the batch with a split-off part of the inner
            # entries (batch x heads), then with the outer entries only (tokens x batch), then anything else.
            part = inner // after
            candidates.append((0 if part > 1 and after > 1 else 1 if part == 1 else 2, j))
    return min(candidates)[1] if candidates else None


def reshape(node: Node):
    allow_zero = bool(node.attrs.get("allowzero", 0))

    def resolve(target: list[int], shape) -> list[int]:
        return target if allow_zero else [shape[i] if v == 0 else v for i, v in enumerate(target)]

    fixed, batch = node.const(1), node.batch(0)
    if fixed is None or batch is None:  # a shape computed for this batch, or a tensor the batch does not change
        return _op("Reshape", lambda x, shape: x.reshape(resolve([int(v) for v in shape.tolist()], x.shape))), [0, 1]
    # A constant shape on a batch-carrying tensor: the file fixed the batch size (dynamo exports do); scale the
    # axis that holds the batch, found by comparing the shapes at the file's batch size.
    shape = node.shape(0)
    target = list(torch.empty(shape, device="meta").reshape(resolve(fixed.tolist(), shape)).shape)
    axis = _batch_place(shape, batch, target)
    if axis is None:
        return _op("Reshape", lambda x: x.reshape(target)), [0]

    def reshape(x):
        scaled = list(target)
        scaled[axis] = target[axis] // batch.file_batch * batch.size(x)
        return x.reshape(scaled)
    return _op("Reshape", reshape), [0]


def flatten(node: Node):
    axis = int(node.attrs.get("axis", 1))

    def flatten(x):  # to 2-D: the dimensions before ``axis``, and the rest
        return x.reshape(math.prod(x.shape[:axis if axis >= 0 else axis + x.dim()]), -1)
    return _op("Flatten", flatten), [0]


def transpose(node: Node):
    perm = node.ints("perm")
    return _op("Transpose", lambda x: x.permute(*(perm or reversed(range(x.dim()))))), [0]


def expand(node: Node):
    def expand(x, shape):  # bidirectional broadcast, as ONNX's Expand
        return x.expand(torch.broadcast_shapes(tuple(x.shape), tuple(int(v) for v in shape.tolist())))
    return _op("Expand", expand), [0, 1]


def concat(node: Node):
    axis = int(node.attrs["axis"])

    def concat(*xs):
        rank = xs[0].dim()
        batch = max(x.shape[0] for x in xs) if rank else 1
        if axis % max(rank, 1) != 0 and any(x.shape[0] != batch for x in xs):
            xs = [x.expand(batch, *x.shape[1:]) if x.shape[0] == 1 else x for x in xs]  # batch 1 baked in
        return torch.cat(xs, dim=axis)
    return _op("Concat", concat), list(range(len(node.inputs)))


def split(node: Node):
    axis = int(node.attrs.get("axis", 0))
    count = len(node.proto.output)
    sizes = node.ints("split") if node.opset < 13 else (node.need_const(1, "split sizes") if node.has(1) else None)
    if sizes is None:
        total = node.shape(0)[axis]
        size = -(-total // int(node.attrs.get("num_outputs", count)))
        sizes = [min(size, total - i * size) for i in range(count)]
    return _op("Split", lambda x: torch.split(x, sizes, dim=axis)), [0]


def gather(node: Node):
    axis = int(node.attrs.get("axis", 0)) % len(node.shape(0))
    def gather(data, indices):
        indices = indices.long() % data.shape[axis]
        picked = data.index_select(axis, indices.flatten())
        return picked.reshape(*data.shape[:axis], *indices.shape, *data.shape[axis + 1:])
    indices, batch = node.const(1), node.batch(0)
    if indices is not None and batch is not None and batch.axis == axis and batch.outer == 1 and indices.numel() \
            and int(indices.max()) < batch.per_sample * batch.file_batch and int(indices.min()) >= 0:
        # constant indices into the batch axis of a file exported at a fixed batch size (dynamo's as_strided):
        # the same picks in every sample, samples stacked on the indices' first axis
        block = batch.per_sample * batch.file_batch

        def gather_per_sample(data):
            count = batch.size(data) // batch.file_batch
            picks = torch.cat([indices.long() + k * block for k in range(count)]) if indices.dim() else indices
            return gather(data, picks.to(data.device))
        return _op("Gather", gather_per_sample), [0]

    return _op("Gather", gather), [0, 1]


def pad(node: Node):
    mode = node.text("mode", "constant")
    if node.opset < 11:
        pads, value = node.ints("pads"), float(node.attrs.get("value", 0.0))
    else:
        pads = [int(p) for p in node.need_const(1, "pads")]
        value = float(node.need_const(2, "the pad value")[0]) if node.has(2) else 0.0
    rank = len(node.shape(0))
    if node.has(3):  # pads for some axes only
        axes = [int(a) % rank for a in node.need_const(3, "axes")]
        full = [0] * 2 * rank
        for i, axis in enumerate(axes):
            full[axis], full[axis + rank] = pads[i], pads[i + len(axes)]
        pads = full
    rank = len(pads) // 2
    torch_pads = [p for axis in reversed(range(rank)) for p in (pads[axis], pads[axis + rank])]  # last axis first
    while len(torch_pads) > 2 and torch_pads[-2:] == [0, 0]:
        torch_pads = torch_pads[:-2]  # leading axes not padded (reflect/replicate pad trailing axes only)
    torch_mode = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}.get(mode)
    if torch_mode is None:
        raise node.fail(f"pad mode {mode!r} is not supported")
    options = {"value": value} if torch_mode == "constant" else {}
    return _op("Pad", lambda x: F.pad(x, torch_pads, mode=torch_mode, **options)), [0]


def slice_(node: Node):
    if node.opset < 10:
        starts, ends, axes = node.ints("starts"), node.ints("ends"), node.ints("axes")
        steps = None
    else:
        starts, ends = node.need_const(1, "Slice starts"), node.need_const(2, "Slice ends")
        axes = node.need_const(3, "Slice axes") if node.has(3) else None
        steps = node.need_const(4, "Slice steps") if node.has(4) else None
    axes = axes or list(range(len(starts)))
    steps = steps or [1] * len(starts)
    if any(step < 1 for step in steps):
        raise node.fail(f"negative Slice steps {steps} are not supported")

    def slice_(x):
        index = [slice(None)] * x.dim()
        for start, end, axis, step in zip(starts, ends, axes, steps):
            size = x.shape[axis]
            index[axis] = slice(max(-size, min(int(start), size)), max(-size - 1, min(int(end), size)), int(step))
        return x[tuple(index)]
    return _op("Slice", slice_), [0]


def tile(node: Node):
    return _op("Tile", lambda x, repeats: x.repeat(*(int(r) for r in repeats.tolist()))), [0, 1]


def constant_of_shape(node: Node):
    from onnx import numpy_helper  # optional dependency

    value = node.attrs.get("value")
    fill = torch.from_numpy(numpy_helper.to_array(value).copy()) if value is not None else torch.zeros(1)
    return _op("ConstantOfShape", lambda shape: fill.reshape(()).to(shape.device).expand(
        [int(v) for v in shape.tolist()]).clone()), [0]


def resize(node: Node):
    if node.opset < 11:
        scales_index, sizes_index = 1, None
    else:
        scales_index, sizes_index = 2, 3
    mode = node.text("mode", "nearest")
    transform = node.text("coordinate_transformation_mode", "half_pixel" if node.opset >= 11 else "asymmetric")
    nearest = node.text("nearest_mode", "round_prefer_floor")
    if node.attrs.get("antialias", 0):
        raise node.fail("antialias=1 is not supported")
    if node.has(4) or node.attrs.get("axes") is not None:
        raise node.fail("the axes input / attribute is not supported")
    shape = node.shape(0)
    rank = len(shape) - 2
    scales = node.static(scales_index) if node.has(scales_index) else None
    sizes = node.static(sizes_index) if sizes_index is not None and node.has(sizes_index) else None
    options: dict = {}
    if sizes is not None and sizes.numel():
        options["size"] = tuple(int(s) for s in sizes.flatten().tolist()[2:])
    elif scales is not None and scales.numel():
        values = [float(s) for s in scales.flatten().tolist()]
        if values[:2] != [1.0, 1.0]:
            raise node.fail(f"scales {values} resize the batch or channel axis")
        options["scale_factor"] = tuple(values[2:])
    else:
        raise node.fail("needs constant 'scales' or 'sizes' (neither is given, or they are computed at run time)")
    if mode == "nearest":
        if transform == "asymmetric" and nearest == "floor":
            torch_mode = "nearest"
        elif transform in ("half_pixel", "pytorch_half_pixel") and nearest == "round_prefer_ceil":
            torch_mode = "nearest-exact"
        else:
            raise node.fail(f"nearest resize with coordinate_transformation_mode={transform!r} and "
                            f"nearest_mode={nearest!r} is not supported")
    elif mode in ("linear", "cubic"):
        if mode == "cubic" and (rank != 2 or abs(float(node.attrs.get("cubic_coeff_a", -0.75)) + 0.75) > 1e-6):
            raise node.fail("cubic resize is supported in 2-D with cubic_coeff_a=-0.75 only")
        if transform not in ("half_pixel", "pytorch_half_pixel", "align_corners"):
            raise node.fail(f"{mode} resize with coordinate_transformation_mode={transform!r} is not supported")
        torch_mode = "bicubic" if mode == "cubic" else {1: "linear", 2: "bilinear", 3: "trilinear"}[rank]
        options["align_corners"] = transform == "align_corners"
    else:
        raise node.fail(f"resize mode {mode!r} is not supported")
    return _op("Resize", lambda x: F.interpolate(x, mode=torch_mode, **options)), [0]


def cast(node: Node):
    from onnx import helper  # optional dependency

    dtype = torch.from_numpy(np.zeros(0, helper.tensor_dtype_to_np_dtype(node.attrs["to"]))).dtype
    return _op("Cast", lambda x: x.to(dtype)), [0]


def if_(node: Node):
    raise node.fail("the condition must be a constant (If nodes with a computed condition are not supported)")
