"""The layer catalog: which modules of a network can be shown, their output shapes, which run more than once, which
are shown first; and the errors that name a bad layer. The one place that knows this. It knows no :class:`Model`:
it is built from a network and the few settings that shape it (imports point one way: catalog <- model <- probe);
``Model.layers()`` builds and keeps it, :mod:`deepvis.models.model` reads a model's."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Sequence

import torch
from torch import nn

from deepvis.core.errors import UnitError
from deepvis.models.layouts import MAPS, Layout, detect_layout, parse_layout, patch_grid

#: Pseudo-layer naming the network's own output (the only layer of a TorchScript model).
OUTPUT = "output"

_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
                nn.Hardswish, nn.Hardtanh, nn.Mish, nn.Softplus, nn.Sigmoid, nn.Tanh)
_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.LPPool2d)
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d)
_VISIBLE = _ACTIVATIONS + _POOLS + (nn.Linear, nn.Softmax, nn.LogSoftmax, nn.LocalResponseNorm)


@dataclass
class LayerInfo:
    """One addressable layer: its type, its (C, H, W) or (C,) ``shape`` (no batch; the view of its raw output,
    see :mod:`deepvis.models.layouts`), its ``layout`` and ``raw_shape``, and whether it may be probed."""

    name: str
    type: str
    shape: tuple[int, ...] | None
    calls: int = 1
    default: bool = False
    receptive_field: dict | None = None
    layout: Layout = MAPS
    raw_shape: tuple[int, ...] | None = None
    batch_first: bool = True  # False: the output mixes the batch with something else (attention windows)

    @property
    def shared(self) -> bool:
        """True when the module runs more than once per forward pass (its output is ambiguous)."""
        return self.calls > 1

    @property
    def probeable(self) -> bool:
        return self.shape is not None and len(self.shape) >= 1 and not self.shared and self.batch_first

    @property
    def channels(self) -> int | None:
        return self.shape[0] if self.shape else None

    @property
    def extra_tokens(self) -> int:
        return self.layout.extra_tokens

    def describe(self) -> str:
        """The layout and view shape, e.g. ``tokens 256x14x14 +1``."""
        return self.layout.describe(self.raw_shape) if self.raw_shape is not None else "-"

    def to_json(self) -> dict:
        data = {"name": self.name, "type": self.type, "shape": list(self.shape) if self.shape is not None else None,
                "layout": self.layout.to_json(), "raw_shape": list(self.raw_shape) if self.raw_shape else None,
                "default": self.default, "receptive_field": self.receptive_field, "shared": self.shared}
        return data


def _output_shapes(net: nn.Module, modules: dict[str, nn.Module], x: torch.Tensor):
    """Per module (forward order): output shape without the batch, call count, and whether the batch stays first."""
    calls: dict[str, int] = {}
    shapes: dict[str, tuple[int, ...] | None] = {}
    batch_first: dict[str, bool] = {}

    def make_hook(name: str):
        def hook(_module, _inputs, output):
            calls[name] = calls.get(name, 0) + 1
            if name not in shapes:
                tensor = isinstance(output, torch.Tensor) and output.dim() >= 1
                shapes[name] = tuple(output.shape[1:]) if tensor else None
                batch_first[name] = not tensor or output.shape[0] == x.shape[0]
        return hook

    handles = [m.register_forward_hook(make_hook(n)) for n, m in modules.items() if n]
    try:
        with torch.no_grad():
            net(x)
    finally:
        for handle in handles:
            handle.remove()
    return shapes, calls, batch_first


def build_catalog(net: nn.Module, channels: int, input_size: tuple[int, int], device: torch.device | str = "cpu",
                  layouts: dict[str, str] | None = None, default_layers: Sequence[str] | None = None,
                  hidden_layers: Sequence[str] = ()) -> list[LayerInfo]:
    """All modules of ``net`` that run in a forward pass at ``input_size`` (``channels`` deep), in the order they
    finish.

    Each entry has the output shape and call count; modules called more than once are ``shared`` and not
    offered for probing. ``default`` marks the layers the toolbox shows first: ``default_layers`` where given, else
    a guess (:func:`guess_defaults`), never one matched by ``hidden_layers``. Layouts are found here, once: the
    network also runs at twice the input size where it can (the dimensions that grow are the spatial ones), and
    token layers are read against the patch grid; ``layouts`` (a config file's) override what is found, and when
    they state every layer whose reading needs that second pass (3-D outputs; 2-D ones beside a patch grid), it is
    not run.
    """
    height, width = input_size
    x = torch.zeros(1, channels, height, width, device=device)
    if isinstance(net, torch.jit.ScriptModule):
        with torch.no_grad():
            out = net(x)
        shape = tuple(out.shape[1:]) if isinstance(out, torch.Tensor) else None
        layout = Layout("vector") if shape is not None and len(shape) == 1 else MAPS
        return [LayerInfo(OUTPUT, "output", shape, 1, True, layout=layout, raw_shape=shape)]
    modules = dict(net.named_modules())
    shapes, calls, batch_first = _output_shapes(net, modules, x)
    order = list(shapes)
    grid = patch_grid(modules, shapes, order)
    overrides = {name: parse_layout(text, grid, name) for name, text in (layouts or {}).items()}
    grown = {}
    if any(_reads_growth(shapes[name], grid) for name in order if name not in overrides):
        try:  # fixed-size networks (a Linear after flatten, a learned position embedding) cannot: then no growth
            grown, _, _ = _output_shapes(net, modules, torch.zeros(1, channels, 2 * height, 2 * width, device=device))
        except Exception:  # noqa: BLE001 - any failure of the larger input only means "cannot tell from growth"
            grown = {}
    grown_grid = patch_grid(modules, grown, order) if grown else None
    infos = []
    by_shape: dict[tuple[int, ...], Layout] = {}  # the layout of the last layer of each raw shape, in forward order
    for name in order:
        raw = shapes[name]
        layout = overrides.get(name) or detect_layout(modules[name], raw, grown.get(name), grid, grown_grid,
                                                      (height, width), by_shape.get(raw))
        if raw is not None:
            by_shape[raw] = layout
        view = layout.view_shape(raw) if raw is not None else None
        infos.append(LayerInfo(name, type(modules[name]).__name__, view, calls[name], layout=layout, raw_shape=raw,
                               batch_first=batch_first[name]))
    wanted = set(default_layers) if default_layers else guess_defaults(net, infos)
    for info in infos:
        info.default = info.name in wanted and info.probeable and not is_hidden(info.name, hidden_layers)
    return infos


def is_hidden(layer: str, patterns: Sequence[str]) -> bool:
    """True for a layer matched by one of the name ``patterns`` (``fnmatch``; a model's ``hidden_layers``)."""
    return any(fnmatchcase(layer, pattern) for pattern in patterns)


def _reads_growth(shape: tuple[int, ...] | None, grid: tuple[int, int] | None) -> bool:
    """Whether :func:`deepvis.models.layouts.detect_layout` reads a layer of this output shape against its shape at a
    larger input: 3-D outputs (maps or channels-last), 2-D ones when there is a patch grid (tokens or not)."""
    return shape is not None and (len(shape) == 3 or (len(shape) == 2 and grid is not None))


def _is_leaf(module: nn.Module) -> bool:
    """A module with no child modules."""
    return next(module.children(), None) is None


def guess_defaults(net: nn.Module, infos: list[LayerInfo]) -> set[str]:
    """Activations, pools, linear layers, softmax, and the blocks of Sequential/ModuleList containers; inside a
    residual block with linear layers (a transformer's), its MLP activation but not its projections (q/k/v, a fused
    qkv, the MLP's linear layers): the block's output, the residual stream, shows them summed."""
    modules = dict(net.named_modules())
    chosen = set()
    for info in infos:
        module = modules[info.name]
        parent = modules.get(info.name.rpartition(".")[0]) if "." in info.name else net
        is_leaf = _is_leaf(module)
        if is_leaf and isinstance(module, _VISIBLE):
            chosen.add(info.name)
        elif not is_leaf and isinstance(parent, (nn.Sequential, nn.ModuleList)):
            chosen.add(info.name)
    for block in _residual_blocks(modules, infos):
        chosen -= block.projections
        chosen |= block.activations
    spatial = {i.name for i in infos if i.shape is not None and len(i.shape) == 3}
    if not chosen & spatial:
        # Rectifiers written as functions leave no activation module: show the convolutions' outputs instead.
        chosen |= {i.name for i in infos if i.name in spatial and isinstance(modules[i.name], _CONVS)}
    if not chosen:
        chosen = {i.name for i in infos if _is_leaf(modules[i.name])}
    return chosen


@dataclass
class _Block:
    """A residual block with linear layers: the linear layers inside it and its MLP activations."""

    projections: set[str]
    activations: set[str]


def _residual_blocks(modules: dict[str, nn.Module], infos: list[LayerInfo]) -> list[_Block]:
    """The repeated residual blocks that run linear layers: two or more non-leaf children of one class in a
    Sequential/ModuleList, all of one output shape (so each keeps the shape of its input). An MLP activation is a
    parameterless leaf (no dropout or identity) whose nearest leaves with parameters before and after it are linear
    layers, and whose output has the shape of the one before it (element-wise: not attention's softmax)."""
    groups: dict[tuple[str, type], list[LayerInfo]] = {}
    for info in infos:
        parent, _, _ = info.name.rpartition(".")
        module = modules[info.name]
        if info.probeable and "." in info.name and isinstance(modules.get(parent), (nn.Sequential, nn.ModuleList)) \
                and not _is_leaf(module):
            groups.setdefault((parent, type(module)), []).append(info)
    blocks = []
    for members in groups.values():
        if len(members) < 2 or len({m.raw_shape for m in members}) > 1:
            continue
        for member in members:
            inside = [i for i in infos if i.name.startswith(member.name + ".")
                      and _is_leaf(modules[i.name])]
            linear = {i.name for i in inside if isinstance(modules[i.name], nn.Linear)}
            if linear:
                blocks.append(_Block(linear, _mlp_activations(modules, inside, linear)))
    return blocks


def _mlp_activations(modules: dict[str, nn.Module], leaves: list[LayerInfo], linear: set[str]) -> set[str]:
    """The leaves (in forward order) that sit between two linear layers and keep the first one's output shape."""
    weighted = [k for k, i in enumerate(leaves) if any(True for _ in modules[i.name].parameters(recurse=False))]
    found = set()
    for k, info in enumerate(leaves):
        module = modules[info.name]
        if k in weighted or isinstance(module, (nn.Dropout, nn.Identity)) or not info.probeable:
            continue
        before = [leaves[j] for j in weighted if j < k][-1:]
        after = [leaves[j] for j in weighted if j > k][:1]
        if before and after and before[0].name in linear and after[0].name in linear \
                and before[0].raw_shape == info.raw_shape:
            found.add(info.name)
    return found


def find_layer(infos: Sequence[LayerInfo], layer: str) -> LayerInfo:
    """The entry of a probeable layer in a catalog, or a clear error naming it (with close matches)."""
    for info in infos:
        if info.name == layer:
            if info.shared:
                raise shared_layer_error(layer, info.calls)
            if info.shape is None:
                raise not_tensor_error(layer)
            if not info.batch_first:
                raise UnitError(f"layer '{layer}' mixes the batch with other dimensions (its output's first "
                                "dimension is not the batch, e.g. attention over windows): probe the block around it")
            return info
    raise unknown_layer_error(layer, [info.name for info in infos])


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
