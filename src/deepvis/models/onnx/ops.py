"""ONNX files as ``nn.Module`` graphs whose layers are the ONNX nodes, named after them.

Each node becomes one submodule, so every node is addressable as a layer (``features/features_0/Conv:3``),
hookable, and listed in the catalog. Weighted nodes become the usual PyTorch modules (``Conv``: ``nn.Conv2d``,
``Gemm``: ``nn.Linear``, ``BatchNormalization``, ``LRN``, pools) and activations ``nn.ReLU`` & co., so the backward
modes treat them exactly like the original network's; the other operators are small functions of their inputs.
Only the ``onnx`` package is needed (``pip install 'deepvis[onnx]'``): ``onnx2torch`` imports torchvision, which
cannot be installed beside every torch build, and its converted graphs call rectifiers the same way.

Module names are the node names with ``.`` (not allowed in module names) and ``:`` (the unit separator) written as
``_`` and a leading ``/`` dropped; unnamed nodes are called ``<OpType>_<index>``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelError
from .model import Model
from .preprocessing import Preprocessing


def load_onnx(path: str | Path) -> Model:
    """An ONNX file as a :class:`Model`: input size (and gray for one channel) from its input shape when static,
    ImageNet mean and std on [0, 1] pixels unless flags or a config file say otherwise."""
    onnx = _import_onnx()
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelError(f"model file not found: '{path}'")
    try:
        proto = onnx.load(str(path))
    except Exception as exc:
        raise ModelError(f"'{path}' is not a readable ONNX model ({type(exc).__name__}: "
                         f"{' '.join(str(exc).split())[:150]})") from None
    if not proto.graph.node:
        raise ModelError(f"'{path}' is not an ONNX model with a graph (no nodes found)")
    net = OnnxGraph(proto, str(path))
    channels, height, width = net.input_shape
    preprocessing = Preprocessing()
    if channels == 1:
        preprocessing = preprocessing.with_(channel_order="gray", mean=(0.449,), std=(0.226,))
    if height and width:
        preprocessing = preprocessing.with_(input_size=(height, width))
    last = next((n for n in proto.graph.node if proto.graph.output[0].name in n.output), None)
    outputs = "probs" if last is not None and last.op_type == "Softmax" else "logits"
    return Model(net=net, preprocessing=preprocessing, spec=str(path), outputs=outputs)


def _import_onnx():
    try:
        import onnx
        import onnx.numpy_helper  # noqa: F401
    except ImportError:
        raise ModelError("opening .onnx files needs the onnx package: pip install 'deepvis[onnx]'") from None
    return onnx


class OnnxOp(nn.Module):
    """One ONNX node computed by a function of its inputs; subclassed per operator so the catalog shows its type."""

    def __init__(self, fn: Callable):
        super().__init__()
        self.fn = fn

    def forward(self, *inputs):
        return self.fn(*inputs)


_OP_CLASSES: dict[str, type] = {}


def _op(op_type: str, fn: Callable) -> OnnxOp:
    if op_type not in _OP_CLASSES:
        _OP_CLASSES[op_type] = type(op_type, (OnnxOp,), {"__module__": __name__})
    return _OP_CLASSES[op_type](fn)


class PaddedConv2d(nn.Conv2d):
    """A 2-D convolution with ONNX's asymmetric padding (begin and end pads differ)."""

    def __init__(self, *args, pad: tuple[int, int, int, int], **kwargs):
        super().__init__(*args, **kwargs)
        self.pad = pad  # left, right, top, bottom (F.pad's order)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, self.pad))


class BatchNorm(nn.modules.batchnorm._BatchNorm):
    """ONNX BatchNormalization (inference) on inputs of any rank."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"BatchNormalization expects (N, C, ...) input, got shape {tuple(x.shape)}")


class _Node:
    """An ONNX node with decoded attributes and access to its constant inputs."""

    def __init__(self, node, constants: dict[str, torch.Tensor], opset: int):
        from onnx import helper

        self.proto, self.op, self.opset = node, node.op_type, opset
        self.inputs = list(node.input)
        self.attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        self._constants = constants

    def const(self, index: int) -> torch.Tensor | None:
        """The constant (initializer or Constant node) at input ``index``; None if absent or computed."""
        if index >= len(self.inputs) or not self.inputs[index]:
            return None
        return self._constants.get(self.inputs[index])

    def ints(self, name: str, default=None) -> list[int] | None:
        value = self.attrs.get(name, default)
        return None if value is None else [int(v) for v in value]

    def is_const(self, index: int) -> bool:
        return self.const(index) is not None

    def fail(self, why: str) -> ModelError:
        return ModelError(f"ONNX node '{self.proto.name or self.op}' ({self.op}): {why}")


class OnnxGraph(nn.Module):
    """An ONNX graph run node by node; every node is a submodule named after it."""

    def __init__(self, proto, source: str = "<onnx>"):
        super().__init__()
        from onnx import numpy_helper

        graph = proto.graph
        opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 13)
        constants = {t.name: torch.from_numpy(np.array(numpy_helper.to_array(t))) for t in graph.initializer}
        inputs = [i for i in graph.input if i.name not in constants]
        if len(inputs) != 1:
            raise ModelError(f"'{source}' has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); "
                             "deepvis feeds a network one image tensor")
        self._input = inputs[0].name
        dims = [d.dim_value if d.HasField("dim_value") else 0 for d in inputs[0].type.tensor_type.shape.dim]
        self.input_shape = tuple(dims[1:4]) if len(dims) == 4 else (0, 0, 0)
        self._output = graph.output[0].name
        self._plan: list[tuple[str, list[str], str]] = []
        unsupported = []
        for index, proto_node in enumerate(graph.node):
            if proto_node.op_type == "Constant":
                constants[proto_node.output[0]] = _constant(proto_node)
                continue
            node = _Node(proto_node, constants, opset)
            converter = _CONVERTERS.get(node.op)
            if converter is None:
                unsupported.append(f"{node.op} (node '{proto_node.name or index}')")
                continue
            module, used = converter(node)
            if used and all(node.is_const(i) for i in used):  # shape arithmetic on constants: done once, here
                with torch.no_grad():
                    constants[proto_node.output[0]] = module(*(node.const(i) for i in used))
                continue
            name = self._module_name(proto_node.name, node.op, index)
            self.add_module(name, module)
            self._plan.append((name, [node.inputs[i] for i in used], proto_node.output[0]))
        if unsupported:
            raise ModelError(f"'{source}' uses ONNX operators deepvis cannot convert: {', '.join(unsupported[:5])}"
                             f"{' ...' if len(unsupported) > 5 else ''}")
        self._constant_names = {}
        needed = {name for _, names, _ in self._plan for name in names}
        for number, name in enumerate(sorted(needed & set(constants))):  # constants read at run time: buffers
            self.register_buffer(f"_const_{number}", constants[name], persistent=False)
            self._constant_names[name] = f"_const_{number}"

    def _module_name(self, node_name: str, op: str, index: int) -> str:
        name = node_name.lstrip("/").replace(".", "_").replace(":", "_") or f"{op}_{index}"
        base, count = name, 1
        while name in self._modules or hasattr(self, name):
            count += 1
            name = f"{base}_{count}"
        return name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values: dict[str, torch.Tensor] = {self._input: x}
        for name, inputs, output in self._plan:
            args = [values[i] if i in values else getattr(self, self._constant_names[i]) for i in inputs]
            values[output] = self._modules[name](*args)
        return values[self._output]


def _constant(node) -> torch.Tensor:
    from onnx import helper, numpy_helper

    attribute = node.attribute[0]
    value = helper.get_attribute_value(attribute)
    if attribute.name == "value":
        return torch.from_numpy(np.array(numpy_helper.to_array(value)))
    return torch.tensor(value)  # value_float(s), value_int(s)


# ------------------------------------------------------------------------------------------ converters
# Each takes a _Node and returns (module, indices of the inputs the module is called with).

def _spatial(node: _Node, kernel: list[int]) -> dict:
    """Strides, dilations and symmetric padding of a conv / pool node (asymmetric: ``pad`` for F.pad)."""
    rank = len(kernel)
    if node.attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
        raise node.fail("auto_pad SAME is not supported; export the model with explicit pads")
    pads = node.ints("pads", [0] * 2 * rank)
    begin, end = pads[:rank], pads[rank:]
    spec = {"stride": tuple(node.ints("strides", [1] * rank)), "dilation": tuple(node.ints("dilations", [1] * rank))}
    if begin == end:
        spec["padding"] = tuple(begin)
    elif rank == 2:
        spec["pad"] = (begin[1], end[1], begin[0], end[0])
    else:
        raise node.fail(f"asymmetric pads {pads} are supported for 2-D convolutions only")
    return spec


def _conv(node: _Node):
    weight, bias = node.const(1), node.const(2)
    if weight is None or weight.dim() not in (3, 4):
        raise node.fail("only 1-D and 2-D convolutions with constant weights are supported")
    kernel = list(weight.shape[2:])
    spec = _spatial(node, kernel)
    groups = int(node.attrs.get("group", 1))
    out_channels, in_channels = weight.shape[0], weight.shape[1] * groups
    if "pad" in spec:
        module = PaddedConv2d(in_channels, out_channels, kernel, groups=groups, bias=bias is not None, **spec)
    else:
        conv = nn.Conv2d if weight.dim() == 4 else nn.Conv1d
        module = conv(in_channels, out_channels, kernel, groups=groups, bias=bias is not None, **spec)
    module.weight.data.copy_(weight)
    if bias is not None:
        module.bias.data.copy_(bias)
    return module, [0]


def _pool(node: _Node):
    kernel = node.ints("kernel_shape")
    spec = _spatial(node, kernel)
    if "pad" in spec or len(kernel) != 2:
        raise node.fail("only 2-D pooling with symmetric pads is supported")
    ceil = bool(node.attrs.get("ceil_mode", 0))
    if node.op == "MaxPool":
        return nn.MaxPool2d(kernel, spec["stride"], spec["padding"], spec["dilation"], ceil_mode=ceil), [0]
    if spec["dilation"] != (1, 1):
        raise node.fail("dilated average pooling is not supported")
    include_pad = bool(node.attrs.get("count_include_pad", 0))
    return nn.AvgPool2d(kernel, spec["stride"], spec["padding"], ceil, count_include_pad=include_pad), [0]


def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    module = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    module.weight.data.copy_(weight)
    if bias is not None:
        module.bias.data.copy_(bias.expand(weight.shape[0]))
    return module


def _gemm(node: _Node):
    alpha, beta = float(node.attrs.get("alpha", 1.0)), float(node.attrs.get("beta", 1.0))
    trans_a, trans_b = int(node.attrs.get("transA", 0)), int(node.attrs.get("transB", 0))
    weight, bias = node.const(1), node.const(2)
    if weight is not None and not trans_a and (len(node.inputs) < 3 or bias is not None):
        weight = alpha * (weight if trans_b else weight.t())
        return _linear(weight, None if bias is None else beta * bias.flatten()), [0]

    def gemm(a, b, c=None):
        out = alpha * (a.t() if trans_a else a) @ (b.t() if trans_b else b)
        return out if c is None else out + beta * c
    return _op("Gemm", gemm), list(range(len(node.inputs)))


def _matmul(node: _Node):
    weight = node.const(1)
    if weight is not None and weight.dim() == 2:
        return _linear(weight.t(), None), [0]
    return _op("MatMul", torch.matmul), [0, 1]


def _batch_norm(node: _Node):
    scale, bias, mean, var = (node.const(i) for i in range(1, 5))
    if any(t is None for t in (scale, bias, mean, var)):
        raise node.fail("only BatchNormalization with constant statistics is supported")
    module = BatchNorm(scale.numel(), eps=float(node.attrs.get("epsilon", 1e-5)))
    for target, value in ((module.weight, scale), (module.bias, bias), (module.running_mean, mean),
                          (module.running_var, var)):
        target.data.copy_(value)
    return module, [0]


def _clip(node: _Node):
    if node.opset < 11:
        low, high = node.attrs.get("min"), node.attrs.get("max")
    else:
        if any(i < len(node.inputs) and node.inputs[i] and not node.is_const(i) for i in (1, 2)):
            raise node.fail("Clip bounds must be constants")
        low, high = (None if node.const(i) is None else float(node.const(i)) for i in (1, 2))
    if low is None and high is None:
        return nn.Identity(), [0]
    low = None if low is None or low <= -3.4e38 else float(low)
    high = None if high is None or high >= 3.4e38 else float(high)
    if (low, high) in ((0.0, None), (0.0, 6.0)):
        return (nn.ReLU() if high is None else nn.ReLU6()), [0]
    return _op("Clip", lambda x: torch.clamp(x, min=low, max=high)), [0]  # clamp(min=0): a rectifier for backprop


def _softmax(node: _Node):
    axis = int(node.attrs.get("axis", 1 if node.opset < 13 else -1))
    return (nn.Softmax(axis) if node.op == "Softmax" else nn.LogSoftmax(axis)), [0]


def _axes(node: _Node, attr_before: int) -> list[int] | None:
    """Axes given as an attribute (before opset ``attr_before``) or as a constant second input."""
    if node.opset < attr_before:
        return node.ints("axes")
    if len(node.inputs) > 1 and node.inputs[1]:
        if not node.is_const(1):
            raise node.fail("axes must be a constant")
        return [int(a) for a in node.const(1).flatten()]
    return None


def _unsqueeze(node: _Node):
    axes = _axes(node, 13)

    def unsqueeze(x):
        for axis in sorted(a % (x.dim() + len(axes)) for a in axes):
            x = x.unsqueeze(axis)
        return x
    return _op("Unsqueeze", unsqueeze), [0]


def _squeeze(node: _Node):
    axes = _axes(node, 13)
    return _op("Squeeze", lambda x: x.squeeze() if axes is None else x.squeeze(tuple(axes))), [0]


def _reduce_mean(node: _Node):
    axes, keep = _axes(node, 18), bool(node.attrs.get("keepdims", 1))
    return _op("ReduceMean", lambda x: x.mean(dim=tuple(axes) if axes else None, keepdim=keep)), [0]


def _reshape(node: _Node):
    allow_zero = bool(node.attrs.get("allowzero", 0))

    def reshape(x, shape):
        target = [int(v) for v in shape.tolist()]
        if not allow_zero:
            target = [x.shape[i] if v == 0 else v for i, v in enumerate(target)]
        if target and target[0] == 1 and x.shape[0] != 1:  # a batch size of 1 baked in by the export
            rest, per_sample = target[1:], x.numel() // x.shape[0]
            if -1 in rest:
                rest[rest.index(-1)] = per_sample // max(1, math.prod(v for v in rest if v != -1))
            if math.prod(rest) == per_sample:
                target = [x.shape[0], *rest]
        return x.reshape(target)
    return _op("Reshape", reshape), [0, 1]


def _flatten(node: _Node):
    axis = int(node.attrs.get("axis", 1))

    def flatten(x):  # to 2-D: the dimensions before ``axis``, and the rest
        return x.reshape(math.prod(x.shape[:axis if axis >= 0 else axis + x.dim()]), -1)
    return _op("Flatten", flatten), [0]


def _transpose(node: _Node):
    perm = node.ints("perm")
    return _op("Transpose", lambda x: x.permute(*(perm or reversed(range(x.dim()))))), [0]


def _hard_sigmoid(node: _Node):
    alpha, beta = float(node.attrs.get("alpha", 0.2)), float(node.attrs.get("beta", 0.5))

    def hard_sigmoid(x):  # min/max, not clamp: the backward modes leave it alone, as they do nn.Hardsigmoid
        y = alpha * x + beta
        return torch.minimum(torch.maximum(y, y.new_zeros(())), y.new_ones(()))
    return _op("HardSigmoid", hard_sigmoid), [0]


def _gather(node: _Node):
    axis = int(node.attrs.get("axis", 0))

    def gather(data, indices):
        indices = indices.long() % data.shape[axis]
        picked = data.index_select(axis, indices.flatten())
        return picked.reshape(*data.shape[:axis], *indices.shape, *data.shape[axis + 1:])
    return _op("Gather", gather), [0, 1]


def _pad(node: _Node):
    mode = node.attrs.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if node.opset < 11:
        pads, value = node.ints("pads"), float(node.attrs.get("value", 0.0))
    else:
        if not node.is_const(1) or (len(node.inputs) > 3 and node.inputs[3]):
            raise node.fail("only constant pads over all axes are supported")
        pads = [int(p) for p in node.const(1).flatten()]
        value = float(node.const(2)) if node.const(2) is not None else 0.0
    rank = len(pads) // 2
    torch_pads = [p for axis in reversed(range(rank)) for p in (pads[axis], pads[axis + rank])]  # last axis first
    while len(torch_pads) > 2 and torch_pads[-2:] == [0, 0]:
        torch_pads = torch_pads[:-2]  # leading axes not padded (reflect/replicate pad trailing axes only)
    torch_mode = {"constant": "constant", "reflect": "reflect", "edge": "replicate"}.get(mode)
    if torch_mode is None:
        raise node.fail(f"pad mode {mode!r} is not supported")
    options = {"value": value} if torch_mode == "constant" else {}
    return _op("Pad", lambda x: F.pad(x, torch_pads, mode=torch_mode, **options)), [0]


def _slice(node: _Node):
    if node.opset < 10:
        starts, ends, axes = node.ints("starts"), node.ints("ends"), node.ints("axes")
        steps = None
    else:
        if not all(node.is_const(i) for i in range(1, len(node.inputs)) if node.inputs[i]):
            raise node.fail("Slice bounds must be constants")
        starts, ends, axes, steps = ([int(v) for v in node.const(i).flatten()] if node.const(i) is not None else None
                                     for i in (1, 2, 3, 4))
    axes = axes or list(range(len(starts)))
    steps = steps or [1] * len(starts)

    def slice_(x):
        index = [slice(None)] * x.dim()
        for start, end, axis, step in zip(starts, ends, axes, steps):
            if step < 1:
                raise ModelError(f"ONNX Slice with step {step} is not supported")
            index[axis] = slice(max(-x.shape[axis], min(start, x.shape[axis])), min(end, x.shape[axis]), step)
        return x[tuple(index)]
    return _op("Slice", slice_), [0]


def _cast(node: _Node):
    from onnx import helper

    dtype = torch.from_numpy(np.zeros(0, helper.tensor_dtype_to_np_dtype(node.attrs["to"]))).dtype
    return _op("Cast", lambda x: x.to(dtype)), [0]


def _module(factory: Callable[[_Node], nn.Module]):
    return lambda node: (factory(node), [0])


def _function(function: Callable, variadic: bool = False):
    return lambda node: (_op(node.op, function), list(range(len(node.inputs))) if variadic else [0])


def _binary(function: Callable):
    return lambda node: (_op(node.op, function), [0, 1])


_CONVERTERS: dict[str, Callable[[_Node], tuple[nn.Module, list[int]]]] = {
    "Conv": _conv,
    "MaxPool": _pool,
    "AveragePool": _pool,
    "GlobalAveragePool": _module(lambda n: nn.AdaptiveAvgPool2d(1)),
    "GlobalMaxPool": _module(lambda n: nn.AdaptiveMaxPool2d(1)),
    "Gemm": _gemm,
    "MatMul": _matmul,
    "BatchNormalization": _batch_norm,
    "LRN": _module(lambda n: nn.LocalResponseNorm(int(n.attrs["size"]), float(n.attrs.get("alpha", 1e-4)),
                                                  float(n.attrs.get("beta", 0.75)), float(n.attrs.get("bias", 1.0)))),
    "Relu": _module(lambda n: nn.ReLU()),
    "LeakyRelu": _module(lambda n: nn.LeakyReLU(float(n.attrs.get("alpha", 0.01)))),
    "Elu": _module(lambda n: nn.ELU(float(n.attrs.get("alpha", 1.0)))),
    "Sigmoid": _module(lambda n: nn.Sigmoid()),
    "Tanh": _module(lambda n: nn.Tanh()),
    "HardSwish": _module(lambda n: nn.Hardswish()),
    "HardSigmoid": _hard_sigmoid,
    "Gelu": _module(lambda n: nn.GELU()),
    "Clip": _clip,
    "Softmax": _softmax,
    "LogSoftmax": _softmax,
    "Dropout": _module(lambda n: nn.Identity()),
    "Identity": _module(lambda n: nn.Identity()),
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Transpose": _transpose,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "ReduceMean": _reduce_mean,
    "Concat": lambda n: (_op("Concat", lambda *xs: torch.cat(xs, dim=int(n.attrs["axis"]))),
                         list(range(len(n.inputs)))),
    "Shape": _function(lambda x: torch.tensor(x.shape, dtype=torch.int64, device=x.device)),
    "Gather": _gather,
    "Pad": _pad,
    "Slice": _slice,
    "Cast": _cast,
    "Add": _binary(torch.add),
    "Sub": _binary(torch.sub),
    "Mul": _binary(torch.mul),
    "Div": _binary(torch.div),
    "Pow": _binary(torch.pow),
    "Max": _function(lambda *xs: _fold(torch.maximum, xs), variadic=True),
    "Min": _function(lambda *xs: _fold(torch.minimum, xs), variadic=True),
    "Sum": _function(lambda *xs: _fold(torch.add, xs), variadic=True),
    "Sqrt": _function(torch.sqrt),
    "Exp": _function(torch.exp),
    "Neg": _function(torch.neg),
    "Abs": _function(torch.abs),
    "Reciprocal": _function(torch.reciprocal),
}


def _fold(function: Callable, tensors) -> torch.Tensor:
    result = tensors[0]
    for tensor in tensors[1:]:
        result = function(result, tensor)
    return result
