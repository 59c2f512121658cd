"""Reading activations: the layer catalog and a Probe that records any set of layers in one forward pass."""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass
from typing import Callable, Iterable

import torch
from torch import nn

from .errors import UnitError
from .models.model import Model

#: Pseudo-layer naming the network's own output (the only layer of a TorchScript model).
OUTPUT = "output"

_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
                nn.Hardswish, nn.Hardtanh, nn.Mish, nn.Softplus, nn.Sigmoid, nn.Tanh)
_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.LPPool2d)
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d)
_VISIBLE = _ACTIVATIONS + _POOLS + (nn.Linear, nn.Softmax, nn.LogSoftmax, nn.LocalResponseNorm)


@dataclass
class LayerInfo:
    """One addressable layer: its type, output shape (no batch), and whether it may be probed."""

    name: str
    type: str
    shape: tuple[int, ...] | None
    calls: int = 1
    default: bool = False
    receptive_field: dict | None = None

    @property
    def shared(self) -> bool:
        """True when the module runs more than once per forward pass (its output is ambiguous)."""
        return self.calls > 1

    @property
    def probeable(self) -> bool:
        return self.shape is not None and len(self.shape) >= 1 and not self.shared

    @property
    def channels(self) -> int | None:
        return self.shape[0] if self.shape else None

    def to_json(self) -> dict:
        data = asdict(self)
        data["shape"] = list(self.shape) if self.shape is not None else None
        data["shared"] = self.shared
        del data["calls"]
        return data


class _StopForward(Exception):
    """Raised from a hook once every requested layer is recorded, to skip the rest of the network."""


def _as_model(model: Model | nn.Module) -> Model:
    return model if isinstance(model, Model) else Model(net=model)


def list_layers(model: Model | nn.Module, input_size: tuple[int, int] | None = None) -> list[LayerInfo]:
    """All modules that run in a forward pass at the model's input size, in the order they finish.

    Each entry has the output shape and call count; modules called more than once are ``shared`` and not
    offered for probing. ``default`` marks the layers the toolbox shows first.
    """
    model = _as_model(model)
    pre = model.preprocessing
    height, width = input_size or pre.input_size
    x = torch.zeros(1, pre.channels, height, width, device=model.device)
    if isinstance(model.net, torch.jit.ScriptModule):
        with torch.no_grad():
            out = model.net(x)
        shape = tuple(out.shape[1:]) if isinstance(out, torch.Tensor) else None
        return [LayerInfo(OUTPUT, "output", shape, 1, True)]
    calls: dict[str, int] = {}
    shapes: dict[str, tuple[int, ...] | None] = {}
    modules = dict(model.net.named_modules())

    def make_hook(name: str):
        def hook(_module, _inputs, output):
            calls[name] = calls.get(name, 0) + 1
            if name not in shapes:
                shapes[name] = tuple(output.shape[1:]) if isinstance(output, torch.Tensor) else None
        return hook

    handles = [m.register_forward_hook(make_hook(n)) for n, m in modules.items() if n]
    try:
        with torch.no_grad():
            model.net(x)
    finally:
        for handle in handles:
            handle.remove()
    infos = [LayerInfo(n, type(modules[n]).__name__, shapes[n], calls[n]) for n in shapes]
    wanted = set(model.default_layers) if model.default_layers else _guess_defaults(model.net, infos)
    for info in infos:
        info.default = info.name in wanted and info.probeable and not model.hidden(info.name)
    return infos


def _guess_defaults(net: nn.Module, infos: list[LayerInfo]) -> set[str]:
    """Activations, pools, linear layers, softmax, and the blocks of Sequential/ModuleList containers."""
    modules = dict(net.named_modules())
    chosen = set()
    for info in infos:
        module = modules[info.name]
        parent = modules.get(info.name.rpartition(".")[0]) if "." in info.name else net
        is_leaf = not any(True for _ in module.children())
        if is_leaf and isinstance(module, _VISIBLE):
            chosen.add(info.name)
        elif not is_leaf and isinstance(parent, (nn.Sequential, nn.ModuleList)):
            chosen.add(info.name)
    spatial = {i.name for i in infos if i.shape is not None and len(i.shape) == 3}
    if not chosen & spatial:
        # Rectifiers written as functions leave no activation module: show the convolutions' outputs instead.
        chosen |= {i.name for i in infos if i.name in spatial and isinstance(modules[i.name], _CONVS)}
    if not chosen:
        chosen = {i.name for i in infos if not any(True for _ in modules[i.name].children())}
    return chosen


def default_layers(model: Model) -> list[str]:
    """Names of the layers shown first, in forward order."""
    return [info.name for info in model.layers() if info.default]


def layer_info(model: Model, layer: str) -> LayerInfo:
    """The catalog entry of a probeable layer, or a clear error naming it (with close matches)."""
    for info in model.layers():
        if info.name == layer:
            if info.shared:
                raise _shared_error(layer, info.calls)
            if info.shape is None:
                raise _not_tensor_error(layer)
            return info
    raise _unknown_layer_error(layer, model.layer_names())


def _unknown_layer_error(layer: str, names: list[str]) -> UnitError:
    close = difflib.get_close_matches(layer, names, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else "; 'deepvis layers' lists them"
    return UnitError(f"unknown layer '{layer}'{hint}")


def _shared_error(layer: str, calls: int | None = None) -> UnitError:
    times = f"{calls} times" if calls else "more than once"
    return UnitError(f"layer '{layer}' runs {times} per forward pass, so its activation is ambiguous; "
                     "probe a layer that runs once")


def _not_tensor_error(layer: str) -> UnitError:
    return UnitError(f"layer '{layer}' does not output a single tensor, so it cannot be probed")


class Probe:
    """Records the outputs of named layers during forward passes; hooks are removed on exit, even on errors.

    >>> with Probe(model, ["blocks.5", "classifier"]) as probe:
    ...     model(x)
    >>> probe["blocks.5"].shape

    ``keep_graph=True`` keeps the autograd graph (for backward passes); ``stop_early=True`` ends the forward
    pass as soon as every requested layer is recorded (use :meth:`run`). ``below_in_place=True``: for a layer
    that runs in-place layers on its output (a Caffe import's ``conv5`` with its ``relu5``), the recorded value
    is unchanged but gradients flow from the output *before* them, as Caffe's ``backward_from_layer`` started
    below an in-place ReLU (so a unit that is negative still gets a gradient). ``on_record(layer, output)`` is
    called as each layer is recorded (a trace notes what the forward pass had done by then).
    """

    def __init__(self, model: Model | nn.Module, layers: Iterable[str], keep_graph: bool = False,
                 stop_early: bool = False, below_in_place: bool = False,
                 on_record: Callable[[str, torch.Tensor], None] | None = None):
        self._checked_by_catalog = isinstance(model, Model)  # a bare module has no known input size
        self.model = _as_model(model)
        self.layers = list(dict.fromkeys(layers))
        self.keep_graph = keep_graph
        self.stop_early = stop_early and OUTPUT not in self.layers
        self.below_in_place = below_in_place
        self.on_record = on_record
        self.activations: dict[str, torch.Tensor] = {}
        self._before_in_place: dict[str, torch.Tensor] = {}
        self._handles: list = []
        self._seen_this_pass: set[str] = set()

    def __enter__(self) -> "Probe":
        modules = dict(self.model.net.named_modules())
        scripted = isinstance(self.model.net, torch.jit.ScriptModule)
        wanted = set(self.layers)
        for name in self.layers:
            if name == OUTPUT and (scripted or name not in modules):
                continue
            if scripted:
                raise UnitError(f"layer '{name}' is inside a TorchScript model, whose modules cannot be hooked; "
                                f"only '{OUTPUT}' is available (load the model from Python code to see its layers)")
            if self._checked_by_catalog:
                layer_info(self.model, name)
            elif name not in modules or not name:
                raise _unknown_layer_error(name, [n for n in modules if n])
            self._handles.append(modules[name].register_forward_hook(self._make_hook(name, wanted)))
            in_place = getattr(modules[name], "in_place", None)
            if self.below_in_place and in_place:
                first = modules[name]._modules[in_place[0]]
                self._handles.append(first.register_forward_pre_hook(self._make_pre_hook(name)))
        if not scripted:
            self._handles.append(self.model.net.register_forward_pre_hook(self._new_pass))
        return self

    def _new_pass(self, _module, _inputs):
        self._seen_this_pass = set()

    def _make_pre_hook(self, name: str):
        def hook(_module, inputs):
            self._before_in_place[name] = inputs[0]
        return hook

    def _make_hook(self, name: str, wanted: set[str]):
        def hook(_module, _inputs, output):
            if name in self._seen_this_pass:
                raise _shared_error(name)
            if not isinstance(output, torch.Tensor):
                raise _not_tensor_error(name)
            self._seen_this_pass.add(name)
            before = self._before_in_place.pop(name, None)
            if before is not None and self.keep_graph:
                output = before + (output - before).detach()  # the value after, the gradient from before
            self.activations[name] = output if self.keep_graph else output.detach()
            if self.on_record is not None:
                self.on_record(name, output)
            if self.stop_early and wanted.issubset(self._seen_this_pass):
                raise _StopForward
        return hook

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __getitem__(self, layer: str) -> torch.Tensor:
        return self.activations[layer]

    def run(self, x: torch.Tensor) -> torch.Tensor | None:
        """Forward ``x``; returns the network output (``None`` when stopped early)."""
        try:
            out = self.model.net(x)
        except _StopForward:
            return None
        if OUTPUT in self.layers and OUTPUT not in self.activations:
            self.activations[OUTPUT] = out if self.keep_graph else out.detach()
        return out


def activations(model: Model, image, layers: Iterable[str], resize: str | None = None) -> dict[str, torch.Tensor]:
    """Activations of several layers for one image, each without the batch dimension."""
    x = model.input(image, resize)
    with torch.no_grad(), Probe(model, layers, stop_early=True) as probe:
        probe.run(x)
    return {name: act[0] for name, act in probe.activations.items()}
