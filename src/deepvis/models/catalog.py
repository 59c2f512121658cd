"""The layer catalog: which modules of a network can be shown, their output shapes, which run more than once, which
are shown first; and the errors that name a bad layer. The one place that knows this: ``Model.layers()`` builds
it, the probe and every other reader look layers up here (imports point one way: models <- probe)."""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..errors import UnitError

if TYPE_CHECKING:  # the model builds its catalog from here; this module never needs the class at run time
    from .model import Model

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


def list_layers(model: Model, input_size: tuple[int, int] | None = None) -> list[LayerInfo]:
    """All modules that run in a forward pass at the model's input size, in the order they finish.

    Each entry has the output shape and call count; modules called more than once are ``shared`` and not
    offered for probing. ``default`` marks the layers the toolbox shows first. (``deepvis.probe.list_layers`` also
    takes a bare ``nn.Module``.)
    """
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
    wanted = set(model.default_layers) if model.default_layers else guess_defaults(model.net, infos)
    for info in infos:
        info.default = info.name in wanted and info.probeable and not model.hidden(info.name)
    return infos


def guess_defaults(net: nn.Module, infos: list[LayerInfo]) -> set[str]:
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
                raise shared_layer_error(layer, info.calls)
            if info.shape is None:
                raise not_tensor_error(layer)
            return info
    raise unknown_layer_error(layer, model.layer_names())


def unknown_layer_error(layer: str, names: list[str]) -> UnitError:
    """'unknown layer' with up to three close matches among ``names``."""
    close = difflib.get_close_matches(layer, names, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else "; 'deepvis layers' lists them"
    return UnitError(f"unknown layer '{layer}'{hint}")


def shared_layer_error(layer: str, calls: int | None = None) -> UnitError:
    """A module that runs several times per forward pass has no single activation to show."""
    times = f"{calls} times" if calls else "more than once"
    return UnitError(f"layer '{layer}' runs {times} per forward pass, so its activation is ambiguous; "
                     "probe a layer that runs once")


def not_tensor_error(layer: str) -> UnitError:
    """A module whose output is a tuple, dict or None cannot be shown as channels."""
    return UnitError(f"layer '{layer}' does not output a single tensor, so it cannot be probed")
