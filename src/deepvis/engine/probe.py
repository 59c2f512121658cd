"""Reading activations: a Probe that records any set of layers in one forward pass. The layer catalog lives in
:mod:`deepvis.models.catalog`; its names are re-exported here."""

from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import nn

from deepvis.core.errors import UnitError
from deepvis.models.layouts import Layout, extra_view, to_view
from deepvis.models.catalog import OUTPUT, LayerInfo, not_tensor_error, shared_layer_error, unknown_layer_error
from deepvis.models.model import Model, as_model, default_layers, layer_info
from deepvis.models.model import list_layers as model_layers


__all__ = ["OUTPUT", "LayerInfo", "Probe", "activations", "default_layers", "layer_info", "list_layers"]


class _StopForward(Exception):
    """Raised from a hook once every requested layer is recorded, to skip the rest of the network."""


def list_layers(model: Model | nn.Module, input_size: tuple[int, int] | None = None) -> list[LayerInfo]:
    """The layer catalog of a model or a bare ``nn.Module`` (see :func:`deepvis.models.model.list_layers`)."""
    return model_layers(as_model(model), input_size)


# rectifiers whose gradient is zero where they clip: with ``below_in_place`` a layer that is one of them gives
# the gradient of its input (optimize's objectives), as Caffe's in-place ReLUs did
_ZERO_GRADIENT_RECTIFIERS = (nn.ReLU, nn.Hardtanh, nn.Threshold)


class Probe:
    """Records the outputs of named layers during forward passes; hooks are removed on exit, even on errors.

    >>> with Probe(model, ["blocks.5", "classifier"]) as probe:
    ...     model(x)
    >>> probe["blocks.5"].shape

    ``keep_graph=True`` keeps the autograd graph (for backward passes); ``stop_early=True`` ends the forward
    pass as soon as every requested layer is recorded (use :meth:`run`). ``below_in_place=True``: for a layer
    that runs in-place layers on its output (a Caffe import's ``conv5`` with its ``relu5``), the recorded value
    is unchanged but gradients flow from the output *before* them, as Caffe's ``backward_from_layer`` started
    below an in-place ReLU (so a unit that is negative still gets a gradient); a layer that *is* a rectifier
    module (``nn.ReLU``, ``nn.ReLU6``, ``nn.Hardtanh``, ``nn.Threshold``) likewise passes its gradient to its
    input, so an objective on a rectified unit that starts at zero still climbs (optimization).
    ``on_record(layer, output)`` is called as each layer is recorded (a trace notes what the forward pass had done
    by then).

    Layers are recorded as their (N, C, H, W) or (N, C) view (:func:`deepvis.layouts.to_view`: channels-last maps
    and token sequences read as channels on a grid), with a token layer's extra tokens in :attr:`extra` as
    (N, C, E) and the outputs as the network made them in :attr:`raw`. A bare ``nn.Module`` has no catalog, so
    its layers are recorded as they are.

    Probes nest and may exit in any order: each removes only its own hooks (a failed ``__enter__`` leaves none).
    """

    def __init__(self, model: Model | nn.Module, layers: Iterable[str], keep_graph: bool = False,
                 stop_early: bool = False, below_in_place: bool = False,
                 on_record: Callable[[str, torch.Tensor], None] | None = None):
        self._checked_by_catalog = isinstance(model, Model)  # a bare module has no known input size
        self.model = as_model(model)
        self.layers = list(dict.fromkeys(layers))
        self.keep_graph = keep_graph
        self.stop_early = stop_early and OUTPUT not in self.layers
        self.below_in_place = below_in_place
        self.on_record = on_record
        self.activations: dict[str, torch.Tensor] = {}
        self.extra: dict[str, torch.Tensor] = {}
        self.raw: dict[str, torch.Tensor] = {}
        self._layouts: dict[str, Layout] = {}
        self._before_in_place: dict[str, torch.Tensor] = {}
        self._handles: list = []
        self._seen_this_pass: set[str] = set()

    def __enter__(self) -> "Probe":
        """Check every layer name, then hook them all. Nothing stays hooked when this raises (``__exit__`` does not
        run then), so a bad name never leaves a stale hook that breaks the model's later forward passes."""
        modules = dict(self.model.net.named_modules())
        scripted = isinstance(self.model.net, torch.jit.ScriptModule)
        hooked = [name for name in self.layers if not (name == OUTPUT and (scripted or name not in modules))]
        for name in hooked:
            self._check_layer(name, modules, scripted)
        wanted = set(self.layers)
        try:
            for name in hooked:
                self._handles.append(modules[name].register_forward_hook(self._make_hook(name, wanted)))
                in_place = getattr(modules[name], "in_place", None)
                if self.below_in_place and in_place:
                    first = modules[name]._modules[in_place[0]]
                    self._handles.append(first.register_forward_pre_hook(self._make_pre_hook(name)))
                elif self.below_in_place and isinstance(modules[name], _ZERO_GRADIENT_RECTIFIERS):
                    self._handles.append(modules[name].register_forward_pre_hook(self._make_pre_hook(name)))
            if not scripted:
                self._handles.append(self.model.net.register_forward_pre_hook(self._new_pass))
        except BaseException:
            self.__exit__()
            raise
        return self

    def _check_layer(self, name: str, modules: dict[str, nn.Module], scripted: bool) -> None:
        """Raise a clear error for a layer that cannot be hooked: unknown, shared, not a tensor, or scripted."""
        if scripted:
            raise UnitError(f"layer '{name}' is inside a TorchScript model, whose modules cannot be hooked; "
                            f"only '{OUTPUT}' is available (load the model from Python code to see its layers)")
        if self._checked_by_catalog:
            layout = layer_info(self.model, name).layout
            if layout.kind in ("nhwc", "tokens"):
                self._layouts[name] = layout
        elif name not in modules or not name:
            raise unknown_layer_error(name, [n for n in modules if n])

    def _new_pass(self, _module, _inputs):
        self._seen_this_pass = set()

    def _make_pre_hook(self, name: str):
        def hook(module, inputs):
            # an in-place rectifier overwrites its input: keep a copy (its gradient is the input's)
            before = inputs[0].clone() if getattr(module, "inplace", False) else inputs[0]
            self._before_in_place[name] = before
        return hook

    def _make_hook(self, name: str, wanted: set[str]):
        def hook(_module, _inputs, output):
            if name in self._seen_this_pass:
                raise shared_layer_error(name)
            if not isinstance(output, torch.Tensor):
                raise not_tensor_error(name)
            self._seen_this_pass.add(name)
            before = self._before_in_place.pop(name, None)
            if before is not None and self.keep_graph:
                output = before + (output - before).detach()  # the value after, the gradient from before
            output = output if self.keep_graph else output.detach()
            self.raw[name] = output
            layout = self._layouts.get(name)
            if layout is None:
                self.activations[name] = output
            else:
                self.activations[name] = to_view(output, layout)
                extra = extra_view(output, layout)
                if extra is not None:
                    self.extra[name] = extra
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
            self.activations[OUTPUT] = self.raw[OUTPUT] = out if self.keep_graph else out.detach()
        return out


def activations(model: Model, image, layers: Iterable[str], resize: str | None = None) -> dict[str, torch.Tensor]:
    """Activations of several layers for one image, each without the batch dimension."""
    x = model.input(image, resize)
    with torch.no_grad(), Probe(model, layers, stop_early=True) as probe:
        probe.run(x)
    return {name: act[0] for name, act in probe.activations.items()}
