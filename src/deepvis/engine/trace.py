"""The one place that runs instrumented forward and backward passes: a :class:`Trace` (a forward pass under a
mode's rectifier rules, graph kept, layers recorded) and the backward passes taken from it."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Iterable, Literal, Sequence, Union

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from deepvis.core.errors import DeepvisError
from deepvis.core.units import Unit, check_unit, parse_unit
from deepvis.engine.attention.recorder import record_attention
from deepvis.engine.probe import Probe
from deepvis.engine.rules import _CHANGED_IN_PLACE, MODES, RULES, Mode, rectifier_rules
from deepvis.models.layouts import to_view
from deepvis.models.model import Model, as_model

Signal = Literal["map", "argmax"]
SIGNALS = ("map", "argmax")


def start_signal(act: torch.Tensor, unit: Unit | Sequence[Unit], signal: str | torch.Tensor) -> torch.Tensor:
    """The gradient a backward pass starts from at the unit's layer output ``act`` (batch included): the unit's
    activation map (``'map'``), a one-hot at its maximum (``'argmax'``) or at its ``@y,x``, or a given tensor.

    ``unit`` may also be one unit per batch row (e.g. the same channel at each image's own top position)."""
    if isinstance(signal, torch.Tensor):
        if signal.shape != act.shape:
            layer = unit.layer if isinstance(unit, Unit) else unit[0].layer
            raise DeepvisError(f"a start signal tensor must have the shape of layer '{layer}''s output "
                               f"{tuple(act.shape)}, got {tuple(signal.shape)}")
        return signal.to(device=act.device, dtype=act.dtype)
    if signal not in SIGNALS:
        raise DeepvisError(f"unknown start signal {signal!r}: use 'map' (the unit's activation map) or 'argmax'")
    rows = [unit] * act.shape[0] if isinstance(unit, Unit) else list(unit)
    if len(rows) != act.shape[0]:
        raise DeepvisError(f"{len(rows)} units for a batch of {act.shape[0]}: give one unit per image")
    for row in dict.fromkeys(rows):
        check_unit(row, tuple(act.shape[1:]))
    start = torch.zeros_like(act)
    if isinstance(unit, Unit) and unit.position is None:  # the common case, whole batch at once
        if signal == "map":
            start[:, unit.channel] = act[:, unit.channel].detach()
        else:
            flat = act[:, unit.channel].detach().reshape(act.shape[0], -1)
            onehot = torch.zeros_like(flat).scatter_(1, flat.argmax(dim=1, keepdim=True), 1.0)
            start[:, unit.channel] = onehot.reshape(start[:, unit.channel].shape)
        return start
    for n, row in enumerate(rows):
        if row.position is not None:
            start[n, row.channel, row.position[0], row.position[1]] = 1.0
        else:
            start[n:n + 1] = start_signal(act[n:n + 1], row, signal)
    return start


@dataclass
class Backward:
    """One backward pass taken from a :class:`Trace`, batch dimension kept: the signal at the trace's input
    (``input_grad``), the start layer's output (``activation``; None when started from an objective), the signal
    at each requested layer (``layer_grads``, zeros for layers the start does not depend on), and how many
    rectifier calls before the start got the mode's rule (0: deconv / guided equal the plain gradient here)."""

    input_grad: torch.Tensor | None  # None when the pass was asked to stop at the layers (``to_input=False``)
    activation: torch.Tensor | None
    layer_grads: dict[str, torch.Tensor]
    rectifiers_modified: int


#: Where a backward pass starts: a unit, one unit per batch row, a layer name (with a signal tensor), or a scalar
#: tensor computed from the trace's activations (an objective).
Start = Union[Unit, str, Sequence[Union[Unit, str]], torch.Tensor]


class Trace:
    """One forward pass under a mode's rectifier rules that keeps its graph and records ``layers``; any number of
    backward passes (:meth:`backward`) from units, signals or objectives are then taken from it.

    The one place that runs instrumented forward/backward passes. ``mode`` is a backward mode (``gradient``,
    ``deconv``, ``guided``) or any ``TorchFunctionMode`` that rewrites the forward pass (receptive fields use one).
    ``stop_early`` ends the forward pass once every layer is recorded (no ``output``); ``below_in_place`` starts
    gradients below in-place layers folded into a layer (Caffe imports); ``detach_input=False`` keeps ``x`` in
    its own graph (an optimized image's parameterization) instead of tracing from a fresh leaf copy.
    ``attention=True`` also records the attention probabilities of the forward pass into ``attention`` (layer name
    -> (batch, heads, N, N), detached; see :mod:`deepvis.engine.attention`); otherwise ``attention`` is empty.
    ``graph_from``: a recorded layer; the forward pass runs without autograd up to it and keeps the graph from its
    output on (a Grad-CAM there needs no more, and the forward pass costs about what a plain one does): backward
    passes then stop at that layer or later ones (``to_input=False``).

    Guided mode first keeps only what autograd keeps anyway (no extra forward work); should the model change such
    a tensor in place later, the first backward pass notices, the forward pass is run again with private masks,
    and the backward pass retried. A recorded layer changed in place after it was recorded is traced again,
    stopped at the layers asked for, for the backward passes that start there.
    """

    def __init__(self, model: Model | nn.Module, x: torch.Tensor, layers: Iterable[str], mode: Mode | TorchFunctionMode = "gradient",
                 *, stop_early: bool = False, below_in_place: bool = False, detach_input: bool = True,
                 attention: bool = False, graph_from: str | None = None):
        self.model = model  # as given: a bare module's layers are checked by name, a Model's by its catalog
        self.layers = list(dict.fromkeys(layers))
        if graph_from is not None and graph_from not in self.layers:
            raise DeepvisError(f"graph_from '{graph_from}' must be one of the recorded layers")
        self.graph_from = graph_from
        if isinstance(mode, TorchFunctionMode):
            self.mode, self._rewrite = type(mode).__name__, mode
        elif mode in RULES:
            self.mode, self._rewrite = mode, None
        else:
            raise DeepvisError(f"unknown backprop mode {mode!r}: use one of {', '.join(MODES)}")
        self.stop_early, self.below_in_place, self.detach_input = stop_early, below_in_place, detach_input
        self._source = x
        self._attention = attention  # also record attention probabilities (deepvis.engine.attention) into self.attention
        rule = RULES.get(self.mode)
        self._forward(save_like_autograd=rule is not None and rule[1])

    def _forward(self, save_like_autograd: bool) -> None:
        x = self._source.detach().clone().requires_grad_(True) if self.detach_input else self._source
        rules = self._rewrite or rectifier_rules(self.mode, save_like_autograd=save_like_autograd)
        modified: dict[str, int] = {}
        versions: dict[str, int] = {}

        def note(name: str, output: torch.Tensor) -> None:
            modified[name] = getattr(rules, "modified", 0)
            versions[name] = output._version

        active = rules if getattr(rules, "rule", True) is not None else nullcontext()  # gradient: no mode at all
        recording = record_attention(self.model) if self._attention else nullcontext()
        grad = torch.no_grad() if self.graph_from else torch.enable_grad()  # graph_from: the hook turns it on
        with grad, Probe(self.model, self.layers, keep_graph=True, stop_early=self.stop_early,
                         below_in_place=self.below_in_place, on_record=note) as probe:
            start = self._start_graph() if self.graph_from else None
            try:
                with active, recording as recorder:
                    self.output = probe.run(x)
            finally:
                if start is not None:
                    start.remove()
        self.attention: dict[str, torch.Tensor] = recorder.maps if recorder is not None else {}
        self.x, self.activations, self.extra, self._raw = x, probe.activations, probe.extra, probe.raw
        self._layouts = probe._layouts
        self.modified, self._versions = modified, versions
        self.rectifiers_modified = getattr(rules, "modified", 0)
        self._retry_in_place = save_like_autograd

    def _start_graph(self):
        """Hook the ``graph_from`` layer (before the probe's own hook): its output becomes a fresh leaf and autograd
        is on for the rest of the forward pass (the enclosing ``no_grad`` block restores the mode after)."""
        module = dict(as_model(self.model).net.named_modules())[self.graph_from]

        def start(_module, _inputs, output):
            torch.set_grad_enabled(True)
            return output.detach().requires_grad_(True).clone()  # a clone: later in-place changes stay legal

        return module.register_forward_hook(start, prepend=True)

    def __getitem__(self, layer: str) -> torch.Tensor:
        return self.activations[layer]

    def _changed(self, names: list[str]) -> bool:
        return any(name in self._versions and self._raw[name]._version != self._versions[name] for name in names)

    def backward(self, start: Start, signal: Signal | torch.Tensor = "map", to: Iterable[str] = (),
                 retain_graph: bool = True, to_input: bool = True) -> Backward:
        """The backward pass from ``start`` to the input and to the recorded layers ``to``.

        ``to_input=False`` stops at the layers ``to`` (``input_grad`` is None): a Grad-CAM needs only its layer's
        gradient, and the pass then never walks below it.

        ``start``: a unit (``'blocks.5:42'``, ``@y,x`` for a one-hot there), one unit per batch row, a layer name
        with ``signal`` a tensor of its output's shape, or a scalar tensor computed from this trace's activations
        (an objective). ``signal``: ``'map'`` (the unit's activation map), ``'argmax'`` or a tensor.
        """
        to = list(dict.fromkeys(to))
        if isinstance(start, torch.Tensor):
            return self._run(start, None, None, to, retain_graph, to_input)
        if isinstance(start, str) and isinstance(signal, torch.Tensor) and ":" not in start:
            layer, units = start, None
        else:
            units = parse_unit(start) if isinstance(start, (str, Unit)) else [parse_unit(u) for u in start]
            layer = units.layer if isinstance(units, Unit) else units[0].layer
            if not isinstance(units, Unit) and any(u.layer != layer for u in units):
                raise DeepvisError("one backward pass starts from one layer: give units of the same layer")
        to = [name for name in to if name != layer]
        unrecorded = [name for name in [layer, *to] if name not in self.activations]
        if unrecorded:
            raise DeepvisError(f"layer '{unrecorded[0]}' was not recorded by this trace (it recorded "
                               f"{', '.join(self.layers)})")
        if not self.stop_early and self._changed([layer, *to]):  # as a trace stopped there would have seen them
            again = Trace(self.model, self._source, [layer, *to], self._rewrite or self.mode, stop_early=True,
                          below_in_place=self.below_in_place, detach_input=self.detach_input,
                          graph_from=self.graph_from if self.graph_from in (layer, *to) else None)
            return again.backward(start, signal, to, retain_graph, to_input)
        act = self.activations[layer]
        if not act.requires_grad:
            raise DeepvisError(f"layer '{layer}' does not depend on the input; nothing to backpropagate")
        rows = [units] * act.shape[0] if isinstance(units, Unit) else units
        if rows is not None and any(unit.token is not None for unit in rows):
            return self._run_tokens(act, rows, signal, layer, to, retain_graph, to_input)
        grad_start = start_signal(act, units if units is not None else Unit(layer, 0), signal)
        return self._run(act, grad_start, layer, to, retain_graph, to_input)

    def _run_tokens(self, act: torch.Tensor, rows: list[Unit], signal, layer: str, to: list[str],
                    retain_graph: bool, to_input: bool = True) -> Backward:
        """A backward pass where some units are extra tokens (``@cls``): one-hots there, the rest on the grid."""
        extra = self.extra.get(layer)
        count = extra.shape[2] if extra is not None else 0
        for unit in dict.fromkeys(rows):
            check_unit(unit, tuple(act.shape[1:]), extra_tokens=count)
        grid_start, extra_start = torch.zeros_like(act), torch.zeros_like(extra)
        for n, unit in enumerate(rows):
            if unit.token is not None:
                extra_start[n, unit.channel, unit.token] = 1.0
            else:
                grid_start[n:n + 1] = start_signal(act[n:n + 1], unit, signal)
        return self._run([act, extra], [grid_start, extra_start], layer, to, retain_graph, to_input)

    def _run(self, root: torch.Tensor | list[torch.Tensor], grad_start, layer: str | None, to: list[str],
             retain_graph: bool, to_input: bool = True) -> Backward:
        if not to_input and not to:
            raise DeepvisError("a backward pass with to_input=False needs layers to stop at (to=[...])")
        if to_input and self.graph_from is not None:
            raise DeepvisError(f"this trace keeps its graph from '{self.graph_from}' on: it has no input gradient")
        # a layer recorded as a view of its output (channels-last maps, tokens on their grid) is reached through the
        # output itself (the view is a branch off the graph, not on it), its gradient then read through the view
        viewed = {name: self._layouts[name] for name in to
                  if name in self._layouts and self.activations[name] is not self._raw.get(name, self.activations[name])}
        targets = ([self.x] if to_input else []) + [self._raw[name] if name in viewed else self.activations[name]
                                                    for name in to]
        try:
            with torch.enable_grad():
                grads = torch.autograd.grad(root, targets, grad_outputs=grad_start, retain_graph=retain_graph,
                                            allow_unused=True)
        except RuntimeError as exc:
            if not self._retry_in_place or _CHANGED_IN_PLACE not in str(exc):
                raise
            self._forward(save_like_autograd=False)  # private masks, which always work
            if grad_start is None:
                raise  # an objective was built from the old activations: the caller must build it again
            root = self.activations[layer] if isinstance(root, torch.Tensor) else [self.activations[layer],
                                                                                   self.extra[layer]]
            return self._run(root, grad_start, layer, to, retain_graph, to_input)
        if to_input:
            input_grad, grads = (grads[0] if grads[0] is not None else torch.zeros_like(self.x)).detach(), grads[1:]
        else:
            input_grad = None
        layer_grads = {name: (g if g is None or name not in viewed else to_view(g, viewed[name]))
                       for name, g in zip(to, grads)}
        layer_grads = {name: (g if g is not None else torch.zeros_like(self.activations[name])).detach()
                       for name, g in layer_grads.items()}
        modified = self.rectifiers_modified  # an objective: everything the forward pass did
        if layer is not None:  # a layer: the rectifiers run before it (and before the other layers asked for)
            modified = max(self.modified.get(name, self.rectifiers_modified) for name in [layer, *to])
        activation = None if layer is None else self.activations[layer].detach()
        return Backward(input_grad, activation, layer_grads, modified)


def trace(model: Model | nn.Module, x: torch.Tensor, layers: Iterable[str],
          mode: Mode | TorchFunctionMode = "gradient", **options) -> Trace:
    """One forward pass of ``x`` recording ``layers`` under ``mode``'s rectifier rules, graph kept (see
    :class:`Trace`): ``trace(model, x, ["blocks.5"], "guided").backward("blocks.5:42")``."""
    return Trace(model, x, layers, mode, **options)
