"""Node groups the exporters write for one source module, converted back to that module.

Not for speed: so the import has the source network's layers. A ``MatMul`` by a constant followed by the addition
of a constant vector is one ``nn.Linear`` (both exporters write ``nn.Linear`` on 3-D inputs so); the
``ReduceMean``/``Sub``/``Pow``/``ReduceMean``/``Add``/``Sqrt``/``Div`` (/``Mul``/``Add``) chain the TorchScript
exporter writes for ``nn.LayerNorm`` before opset 17 is one ``nn.LayerNorm`` (so its output is a layer, and the
receptive-field and backward code see a normalization, as in the source network). A group is fused only when its
intermediate values are read by nothing else.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from deepvis.models.onnx.fold import Known


def _reader(consumers: dict[str, list], name: str, op: str):
    """The only node reading ``name``, if it is an ``op``."""
    readers = consumers.get(name, [])
    return readers[0] if len(readers) == 1 and readers[0].op_type == op else None


def _constant(known: dict[str, Known], name: str) -> np.ndarray | None:
    value = known.get(name)
    return value.value if value is not None and value.constant else None


def _other(node, name: str) -> str:
    """The other input of a binary node."""
    return node.input[1] if node.input[0] == name else node.input[0]


def bias_add(proto_node, module: nn.Module, consumers: dict[str, list], known: dict[str, Known]):
    """The Add node that adds a constant bias vector to a MatMul converted to ``nn.Linear`` (its only reader)."""
    if proto_node.op_type != "MatMul" or not isinstance(module, nn.Linear) or module.bias is not None:
        return None
    add = _reader(consumers, proto_node.output[0], "Add")
    value = None if add is None else _constant(known, _other(add, proto_node.output[0]))
    if value is None or value.size != module.out_features or value.ndim > 1 \
            or not np.issubdtype(value.dtype, np.floating):
        return None
    return add


def _axes(node, known: dict[str, Known]) -> list[int] | None:
    from onnx import helper  # optional dependency

    for attribute in node.attribute:
        if attribute.name == "axes":
            return list(helper.get_attribute_value(attribute))
    if len(node.input) > 1 and node.input[1]:
        value = _constant(known, node.input[1])
        return None if value is None else [int(v) for v in value.flatten()]
    return None


def _keeps_dims(node) -> bool:
    return all(a.i == 1 for a in node.attribute if a.name == "keepdims")


def layer_norm(mean, consumers: dict[str, list], known: dict[str, Known], shape: tuple[int, ...]):
    """(``nn.LayerNorm``, the other nodes of the group, its output name) for a decomposed layer norm starting at
    the ReduceMean ``mean`` over an input of ``shape``; None when the nodes are not one."""
    x, rank = mean.input[0], len(shape)
    axes = _axes(mean, known)
    if axes is None or not _keeps_dims(mean) or \
            sorted(a % rank for a in axes) != list(range(rank - len(axes), rank)):
        return None
    sub = _reader(consumers, mean.output[0], "Sub")
    if sub is None or list(sub.input) != [x, mean.output[0]]:
        return None
    readers = consumers.get(sub.output[0], [])
    pow_ = next((r for r in readers if r.op_type == "Pow"), None)
    div = next((r for r in readers if r.op_type == "Div"), None)
    if len(readers) != 2 or pow_ is None or div is None or pow_.input[0] != sub.output[0]:
        return None
    exponent = _constant(known, pow_.input[1])
    variance = _reader(consumers, pow_.output[0], "ReduceMean")
    if exponent is None or float(exponent) != 2.0 or variance is None or _axes(variance, known) != axes \
            or not _keeps_dims(variance):
        return None
    add = _reader(consumers, variance.output[0], "Add")
    eps = None if add is None else _constant(known, _other(add, variance.output[0]))
    sqrt = None if add is None else _reader(consumers, add.output[0], "Sqrt")
    if eps is None or eps.size != 1 or sqrt is None or _reader(consumers, sqrt.output[0], "Div") is not div \
            or list(div.input) != [sub.output[0], sqrt.output[0]]:
        return None
    normalized = tuple(shape[rank - len(axes):])
    group, out, weight, bias = [sub, pow_, variance, add, sqrt, div], div.output[0], None, None
    mul = _reader(consumers, out, "Mul")
    if mul is not None and _constant(known, _other(mul, out)) is not None:
        weight = _constant(known, _other(mul, out))
        group, out = group + [mul], mul.output[0]
        plus = _reader(consumers, out, "Add")
        if plus is not None and _constant(known, _other(plus, out)) is not None:
            bias = _constant(known, _other(plus, out))
            group, out = group + [plus], plus.output[0]
    try:
        module = nn.LayerNorm(normalized, eps=float(eps.flatten()[0]), bias=bias is not None)
        with torch.no_grad():
            module.weight.copy_(torch.from_numpy(np.broadcast_to(weight if weight is not None else 1.0,
                                                                 normalized).astype(np.float32)))
            if bias is not None:
                module.bias.copy_(torch.from_numpy(np.broadcast_to(bias, normalized).astype(np.float32)))
    except ValueError:  # scale or bias not of the normalized shape
        return None
    return module, group, out
