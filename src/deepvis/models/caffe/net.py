"""From a parsed prototxt to a runnable ``nn.Module``: inputs, the layers Caffe would run at test time, the
blob graph, and in-place layers (top == bottom) folded into the layer whose blob they overwrite."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from deepvis.core.errors import ModelError, one_line
from deepvis.models.caffe.layers import LAYER_TYPES, PARAM_FIELDS, CaffeLayer
from deepvis.models.caffe.message import Message
from deepvis.models.caffe.schema import layer_type

_DATA_TYPES = {"Data", "ImageData", "HDF5Data", "MemoryData", "WindowData", "DummyData", "AnnotatedData",
               "VideoData", "Python"}
_SKIPPED_TYPES = {"Accuracy", "Silence", "HDF5Output"}  # and every "...Loss": training-only, no visual output


@dataclass(frozen=True)
class LayerSpec:
    """A layer as the prototxt declares it (type as a V2 string)."""

    name: str
    type: str
    bottoms: tuple[str, ...]
    tops: tuple[str, ...]
    message: Message

    @property
    def in_place(self) -> bool:
        return len(self.tops) == 1 and self.tops == self.bottoms

    def error(self, text: str) -> ModelError:
        return ModelError(f"layer '{self.name}' ({self.type}, {self.message.where}): {text}")


@dataclass(frozen=True)
class NetSpec:
    """The net's single input blob, its (N, C, H, W) shape, and its test-phase layers in order."""

    input_name: str
    input_shape: tuple[int, ...]
    layers: list[LayerSpec]


@dataclass(frozen=True)
class Step:
    """One top-level module call: which blobs it reads and writes, and which it is the last reader of."""

    module: str
    bottoms: tuple[str, ...]
    tops: tuple[str, ...]
    release: tuple[str, ...] = ()


class CaffeNet(nn.Module):
    """Runs Caffe layers in prototxt order over named blobs; each module is called once per forward pass.

    Module names are the Caffe layer names (``conv1``, ``inception_3a/1x1``); a ``.`` in a name, which PyTorch
    reserves for nesting, becomes ``_``, and a name PyTorch already uses (``train``, ``type``...) gets a
    trailing ``_``.
    """

    def __init__(self, input_name: str, input_shape: tuple[int, ...]):
        super().__init__()
        self.input_name = input_name
        self.input_shape = input_shape  # as declared: (N, C, H, W)
        self.steps: list[Step] = []
        self.output_name = input_name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blobs = {self.input_name: x}
        for step in self.steps:
            out = self._modules[step.module](*[blobs[name] for name in step.bottoms])
            for top in step.tops:
                blobs[top] = out
            for name in step.release:
                del blobs[name]
        out = blobs[self.output_name]
        # Caffe keeps classifier outputs 4-D when they come from convolutions (SqueezeNet's prob is N x 1000 x 1
        # x 1); the network returns such an output as (batch, classes).
        if out.dim() > 2 and all(size == 1 for size in out.shape[2:]):
            out = out.flatten(1)
        return out


def read_net_spec(root: Message) -> NetSpec:
    """The input declaration and test-phase layers of a parsed prototxt (V1 ``layers`` or V2 ``layer``)."""
    if root.has("layer") and root.has("layers"):
        raise root.error("the prototxt mixes V2 'layer' and V1 'layers' entries; use one format")
    layers = []
    for index, message in enumerate(root.messages("layer") + root.messages("layers")):
        spec = LayerSpec(message.string("name") or f"layer{index}", layer_type(message.last("type", "")),
                         tuple(message.strings("bottom")), tuple(message.strings("top")), message)
        if _included(message) and not (spec.type.endswith("Loss") or spec.type in _SKIPPED_TYPES):
            layers.append(spec)
    inputs = _declared_inputs(root) + [(top, shape) for spec in layers if spec.type == "Input"
                                       for top, shape in _input_layer_shapes(spec)]
    for spec in layers:
        if spec.type in _DATA_TYPES:
            raise spec.error("reads training data; deepvis needs a deploy prototxt, which declares its input "
                             "with 'input:'/'input_shape' or an Input layer")
    if len(inputs) != 1:
        raise root.error(f"the net must declare exactly one input, found {len(inputs)}"
                         + (f" ({', '.join(name for name, _ in inputs)})" if inputs else
                            " (use 'input: \"data\"' with input_shape or input_dim, or an Input layer)"))
    name, shape = inputs[0]
    if len(shape) != 4 or min(shape) < 1:
        raise root.error(f"input '{name}' must have 4 positive dimensions (N, C, H, W), got {shape}")
    return NetSpec(name, shape, [spec for spec in layers if spec.type != "Input"])


def _declared_inputs(root: Message) -> list[tuple[str, tuple[int, ...]]]:
    names = root.strings("input")
    shapes = [tuple(shape.ints("dim")) for shape in root.messages("input_shape")]
    dims = root.ints("input_dim")
    if dims:
        if len(dims) != 4 * len(names):
            raise root.error(f"{len(dims)} input_dim values for {len(names)} input(s); give 4 per input")
        shapes = [tuple(dims[i:i + 4]) for i in range(0, len(dims), 4)]
    if len(shapes) != len(names):
        raise root.error(f"{len(names)} input(s) but {len(shapes)} input shape(s)")
    return list(zip(names, shapes))


def _input_layer_shapes(spec: LayerSpec) -> list[tuple[str, tuple[int, ...]]]:
    shapes = [tuple(shape.ints("dim")) for shape in spec.message.message("input_param").messages("shape")]
    if len(shapes) == 1:
        shapes = shapes * len(spec.tops)
    if len(shapes) != len(spec.tops):
        raise spec.error(f"{len(spec.tops)} top(s) but {len(shapes)} shape(s) in input_param")
    return list(zip(spec.tops, shapes))


def _included(layer: Message) -> bool:
    """Caffe's NetStateRule check for the TEST phase (level 0, no stages)."""
    def matches(rule: Message) -> bool:
        phase = rule.enum("phase", {"TRAIN": 0, "TEST": 1}, "TEST")
        return (phase == "TEST" and rule.int("min_level", 0) <= 0 <= rule.int("max_level", 0)
                and not rule.has("stage"))

    if layer.has("include"):
        return any(matches(rule) for rule in layer.messages("include"))
    return not any(matches(rule) for rule in layer.messages("exclude"))


def build_net(spec: NetSpec) -> tuple[CaffeNet, list[CaffeLayer]]:
    """The network (parameters on the ``meta`` device, to be materialized) and its layers in order.

    Shapes are propagated on the meta device as layers are made, so each layer knows its input shapes
    without computing anything.
    """
    net = CaffeNet(spec.input_name, spec.input_shape)
    layers: list[CaffeLayer] = []
    values = {spec.input_name: torch.zeros(spec.input_shape, device="meta")}
    foldable: dict[str, CaffeLayer] = {}  # blob -> the module that produced it, while no other layer has read it
    with torch.device("meta"):
        for layer_spec in spec.layers:
            missing = [name for name in layer_spec.bottoms if name not in values]
            if missing:
                raise layer_spec.error(f"reads blob '{missing[0]}', which no earlier layer produces")
            inputs = [values[name] for name in layer_spec.bottoms]
            layer = _make_layer(layer_spec, [tuple(value.shape) for value in inputs])
            try:
                out = layer.compute(*inputs)
            except (RuntimeError, ValueError, TypeError, IndexError) as exc:
                raise layer_spec.error(f"cannot take inputs of shape {[tuple(v.shape) for v in inputs]}: "
                                       f"{one_line(exc, 200)}") from None
            layers.append(layer)
            producer = foldable.get(layer_spec.bottoms[0]) if layer_spec.in_place else None
            if producer is not None:
                producer.add_in_place(_free_name(layer_spec.name, producer), layer)
            else:
                name = _free_name(layer_spec.name, net)
                net.add_module(name, layer)
                net.steps.append(Step(name, layer_spec.bottoms, layer_spec.tops))
                for bottom in layer_spec.bottoms:
                    foldable.pop(bottom, None)
                if len(layer_spec.tops) == 1:
                    foldable[layer_spec.tops[0]] = layer
            for top in layer_spec.tops:
                values[top] = out
    if not net.steps:
        raise ModelError("the prototxt has no layers to run")
    net.output_name = net.steps[-1].tops[0]
    net.steps = _with_releases(net.steps, net.output_name)
    return net, layers


def _make_layer(spec: LayerSpec, shapes: list[tuple[int, ...]]) -> CaffeLayer:
    cls = LAYER_TYPES.get(spec.type)
    if cls is None:
        raise spec.error(f"layer type '{spec.type}' is not supported (supported: {', '.join(sorted(LAYER_TYPES))})")
    least, most = cls.bottoms
    if not least <= len(spec.bottoms) <= most:
        wanted = str(least) if least == most else f"at least {least}" if most >= 1 << 30 else f"{least} to {most}"
        raise spec.error(f"reads {wanted} bottom blob(s), got {len(spec.bottoms)}")
    if not spec.tops or len(spec.tops) > 1 and not cls.many_tops:
        raise spec.error(f"writes {'one or more top blobs' if cls.many_tops else 'one top blob'}, "
                         f"got {len(spec.tops)}")
    field = PARAM_FIELDS.get(spec.type)
    param = spec.message.message(field) if field else Message()
    param.where = f"layer '{spec.name}' ({spec.type}, {spec.message.where})"
    return cls(spec.name, param, shapes)


def _free_name(name: str, parent: nn.Module) -> str:
    """``name`` as a module name: no '.', not clashing with the parent's attributes or children."""
    name = name.replace(".", "_") or "layer"
    while hasattr(parent, name) or name in parent._modules:
        name += "_"
    return name


def _with_releases(steps: list[Step], output: str) -> list[Step]:
    """Mark each blob for release after its last reader, so a forward pass keeps only the blobs still needed."""
    last_read = {}
    for index, step in enumerate(steps):
        for name in step.bottoms:
            last_read[name] = index
    released = {}
    for name, index in last_read.items():
        later_writes = any(name in step.tops for step in steps[index + 1:])
        if name != output and not later_writes and name not in steps[index].tops:
            released.setdefault(index, []).append(name)
    return [Step(s.module, s.bottoms, s.tops, tuple(released.get(i, ()))) for i, s in enumerate(steps)]
