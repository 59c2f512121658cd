"""Backward passes from a unit to the input (and to any layer): plain gradient, deconv, guided backprop.

The three modes differ only in how rectifiers (ReLU, ReLU6, hardtanh(0, x), clamp(min=0)) pass gradient back:

- ``gradient``: ordinary autograd, ``grad_in = grad_out * [lo < x < hi]``;
- ``deconv`` (Zeiler & Fergus 2014): ``grad_in = relu(grad_out)``, ignoring the forward activation;
- ``guided`` (Springenberg et al. 2015): ``grad_in = relu(grad_out) * [lo < x < hi]``.

Rectifiers are found at call time whether written as modules, ``F.relu``, ``torch.relu``, ``Tensor.relu``, in place
or not, through a ``TorchFunctionMode`` active only during the forward pass: the model is never modified.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from numbers import Number
from typing import Iterable, Literal, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from deepvis.core.errors import DeepvisError
from deepvis.models.model import Model
from deepvis.models.preprocessing import Preprocessing
from deepvis.models.model import as_model
from deepvis.models.layouts import to_view
from deepvis.engine.probe import Probe
from deepvis.core.units import Unit, check_unit, parse_unit

Mode = Literal["gradient", "deconv", "guided"]
Signal = Literal["map", "argmax"]

#: How each mode treats a rectifier's backward pass: (drop negative gradient, mask by forward activation).
RULES: dict[str, tuple[bool, bool] | None] = {
    "gradient": None,  # untouched autograd
    "deconv": (True, False),
    "guided": (True, True),
}
MODES = tuple(RULES)
SIGNALS = ("map", "argmax")


class _Rectify(torch.autograd.Function):
    """clamp(x, lo, hi) forward; backward by a rule of :data:`RULES`.

    ``keep`` says how the guided rule's mask ``lo < x < hi`` reaches the backward pass: ``'mask'`` builds it before
    the clamp (private to this function, so later in-place changes of the input or output cannot disturb it);
    ``'input'`` / ``'output'`` save ``x`` / ``y = clamp(x, lo, hi)`` instead (``lo < y < hi`` exactly where
    ``lo < x < hi``), as autograd itself does for hardtanh / ReLU, and apply the mask with the fused kernels of their
    own backward: the forward pass is then the clamp alone, but an in-place change of the saved tensor afterwards
    makes the backward pass fail, as it would for the plain gradient.
    """

    @staticmethod
    def forward(ctx, x, lo, hi, inplace, use_mask, keep="mask"):
        ctx.lo, ctx.hi, ctx.use_mask, ctx.keep = lo, hi, use_mask, keep
        if use_mask and keep == "mask":
            ctx.save_for_backward((x > lo) if hi is None else (x > lo) & (x < hi))
        elif use_mask and keep == "input":
            ctx.save_for_backward(x)
        if inplace:
            x.clamp_(min=lo, max=hi)
            ctx.mark_dirty(x)
            out = x
        else:
            out = x.clamp(min=lo, max=hi)
        if use_mask and keep == "output":
            ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        if not ctx.use_mask:
            return grad.clamp(min=0), None, None, None, None, None
        (saved,) = ctx.saved_tensors
        if ctx.keep == "mask":
            grad_in = grad.clamp(min=0).mul_(saved)
        elif ctx.hi is None:
            grad_in = torch.ops.aten.threshold_backward(grad, saved, ctx.lo).clamp_(min=0)
        else:
            grad_in = torch.ops.aten.hardtanh_backward(grad, saved, ctx.lo, ctx.hi).clamp_(min=0)
        return grad_in, None, None, None, None, None


def _arg(args, kwargs, index, name, default):
    if name in kwargs:
        return kwargs[name]
    return args[index] if len(args) > index else default


def _relu_like(func):
    inplace_always = getattr(func, "__name__", "").endswith("_")
    return lambda a, k: (0.0, None, inplace_always or bool(_arg(a, k, 1, "inplace", False)))


def _relu6(a, k):
    return 0.0, 6.0, bool(_arg(a, k, 1, "inplace", False))


def _hardtanh(inplace_always):
    def parse(a, k):
        low, high = _arg(a, k, 1, "min_val", -1.0), _arg(a, k, 2, "max_val", 1.0)
        if low != 0 or high <= 0:
            return None
        return 0.0, float(high), inplace_always or bool(_arg(a, k, 3, "inplace", False))
    return parse


def _clamp(inplace, min_only=False):
    def parse(a, k):
        low = _arg(a, k, 1, "min", None)
        high = None if min_only else _arg(a, k, 2, "max", None)
        if not isinstance(low, Number) or low != 0:
            return None
        if high is not None and (not isinstance(high, Number) or high <= 0):
            return None
        return 0.0, (float(high) if high is not None else None), inplace
    return parse


_RECTIFIERS = {F.relu: _relu_like(F.relu), torch.relu: _relu_like(torch.relu), torch.Tensor.relu: _relu_like(torch.Tensor.relu),
               torch.relu_: _relu_like(torch.relu_), torch.Tensor.relu_: _relu_like(torch.Tensor.relu_),
               F.relu6: _relu6, F.hardtanh: _hardtanh(False), F.hardtanh_: _hardtanh(True),
               torch.clamp: _clamp(False), torch.Tensor.clamp: _clamp(False), torch.Tensor.clamp_: _clamp(True),
               torch.clip: _clamp(False), torch.Tensor.clip: _clamp(False), torch.Tensor.clip_: _clamp(True),
               torch.clamp_min: _clamp(False, True), torch.Tensor.clamp_min: _clamp(False, True),
               torch.Tensor.clamp_min_: _clamp(True, True)}
if hasattr(F, "relu_"):
    _RECTIFIERS[F.relu_] = _relu_like(F.relu_)
#: Rectifiers whose own autograd keeps their output (the others keep their input, or a copy when in place).
_KEEP_OUTPUT = {F.relu, torch.relu, torch.Tensor.relu, torch.relu_, torch.Tensor.relu_, getattr(F, "relu_", F.relu)}
#: The error autograd raises when a tensor saved for the backward pass was changed in place after.
_CHANGED_IN_PLACE = "modified by an inplace operation"


class rectifier_rules(TorchFunctionMode):
    """Context: during forward passes inside it, rectifiers get the backward rule of ``mode``.

    ``modified`` counts the rectifier calls that were replaced (0 in ``gradient`` mode, or when the model has
    no rectifiers for deconv/guided to act on).

    ``save_like_autograd=True`` keeps, for the guided rule, the tensors autograd itself keeps instead of a private
    mask (no extra forward work; a later in-place change of such a tensor then fails the backward pass, see
    :class:`_Rectify`).
    """

    def __init__(self, mode: Mode, save_like_autograd: bool = False):
        super().__init__()
        if mode not in RULES:
            raise DeepvisError(f"unknown backprop mode {mode!r}: use one of {', '.join(MODES)}")
        self.rule = RULES[mode]
        self.modified = 0
        self.save_like_autograd = save_like_autograd

    def __torch_function__(self, func, types, args=(), kwargs=None):
        # Runs for every torch call of the forward pass: the common case (not a rectifier) returns at once.
        parse = _RECTIFIERS.get(func)
        if parse is None or self.rule is None:
            return func(*args, **kwargs) if kwargs else func(*args)
        kwargs = kwargs or {}
        if args and isinstance(args[0], torch.Tensor) and torch.is_grad_enabled() \
                and args[0].requires_grad and args[0].is_floating_point():
            spec = parse(args, kwargs)
            if spec is not None:
                low, high, inplace = spec
                self.modified += 1
                keep = "mask"
                if self.save_like_autograd:
                    keep = "output" if func in _KEEP_OUTPUT else "mask" if inplace else "input"
                return _Rectify.apply(args[0], low, high, inplace, self.rule[1], keep)
        return func(*args, **kwargs)


@dataclass
class BackpropResult:
    """The backward pass of one unit for one image.

    ``input_grad`` is the gradient (or deconv / guided signal) at the model input, (C, H, W) in the model's
    channel order; ``layer_grads`` holds the same at requested layers (zeros for layers above the unit).
    """

    unit: Unit
    mode: str
    signal: str
    input_grad: torch.Tensor
    activation: torch.Tensor
    layer_grads: dict[str, torch.Tensor] = field(default_factory=dict)
    rectifiers_modified: int = 0
    preprocessing: Preprocessing = field(default_factory=Preprocessing, repr=False)

    def rgb_grad(self) -> np.ndarray:
        """The input gradient as (H, W, 3) in RGB channel order."""
        return self.preprocessing.to_rgb(self.input_grad.float()).permute(1, 2, 0).cpu().numpy()

    def image(self, filter: str = "raw") -> np.ndarray:
        """The input gradient rendered with a back filter (``raw``, ``gray``, ``norm``, ``normblur``): HxWx3 in [0, 1]."""
        from deepvis.pixels.render import back_image

        return back_image(self.rgb_grad(), filter)


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


def _attention_recorder(model: Model | nn.Module, wanted: bool):
    """A ``deepvis.attention.record_attention`` mode for a trace that asks for attention, else a no-op context."""
    if not wanted:
        return nullcontext()
    from deepvis.engine.attention import record_attention

    return record_attention(model)


class Trace:
    """One forward pass under a mode's rectifier rules that keeps its graph and records ``layers``; any number of
    backward passes (:meth:`backward`) from units, signals or objectives are then taken from it.

    The one place that runs instrumented forward/backward passes. ``mode`` is a backward mode (``gradient``,
    ``deconv``, ``guided``) or any ``TorchFunctionMode`` that rewrites the forward pass (receptive fields use one).
    ``stop_early`` ends the forward pass once every layer is recorded (no ``output``); ``below_in_place`` starts
    gradients below in-place layers folded into a layer (Caffe imports); ``detach_input=False`` keeps ``x`` in
    its own graph (an optimized image's parameterization) instead of tracing from a fresh leaf copy.
    ``attention=True`` also records the attention probabilities of the forward pass into ``attention`` (layer name
    -> (batch, heads, N, N), detached; see :mod:`deepvis.attention`); otherwise ``attention`` is empty.
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
        self._attention = attention  # also record attention probabilities (deepvis.attention) into self.attention
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
        grad = torch.no_grad() if self.graph_from else torch.enable_grad()  # graph_from: the hook turns it on
        with grad, Probe(self.model, self.layers, keep_graph=True, stop_early=self.stop_early,
                         below_in_place=self.below_in_place, on_record=note) as probe:
            start = self._start_graph() if self.graph_from else None
            try:
                with active, _attention_recorder(self.model, self._attention) as recorder:
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


def backprop_batch(model: Model | nn.Module, x: torch.Tensor, unit: str | Unit | Sequence[str | Unit],
                   mode: Mode = "gradient", signal: Signal | torch.Tensor = "map",
                   layers: Iterable[str] = ()) -> Backward:
    """Batched core of :func:`backprop` on a preprocessed (N, C, H, W) input: one trace stopped at the unit's
    layer (or the last of ``layers``), one backward pass.

    ``unit`` may be one unit per image; ``signal`` may be a tensor of the unit layer's output shape (batch
    included): the gradient to start from, e.g. one-hots at a different position for each image.
    """
    units = parse_unit(unit) if isinstance(unit, (str, Unit)) else [parse_unit(u) for u in unit]
    layer = units.layer if isinstance(units, Unit) else units[0].layer
    layers = [name for name in dict.fromkeys(layers) if name != layer]
    return trace(model, x, [layer, *layers], mode, stop_early=True).backward(units, signal, layers,
                                                                            retain_graph=False)


def backprop(model: Model | nn.Module, image, unit: str | Unit, mode: Mode = "gradient", signal: Signal = "map",
             layers: Iterable[str] = (), resize: str | None = None) -> BackpropResult:
    """Backward pass from one unit to the input image (and to ``layers``) in ``gradient``, ``deconv`` or ``guided`` mode.

    The start signal is the unit's whole activation map (``signal='map'``, the original live view), a one-hot at
    its spatial maximum (``'argmax'``), or a one-hot at the unit's own ``@y,x`` position when it has one.
    """
    model = as_model(model)
    unit = parse_unit(unit)
    layers = list(layers)
    x = model.input(image, resize)[:1]
    result = backprop_batch(model, x, unit, mode, signal, layers)
    layer_grads = dict(result.layer_grads)
    if unit.layer in layers:
        layer_grads[unit.layer] = start_signal(result.activation, unit, signal)
    signal_used = f"onehot@{unit.position[0]},{unit.position[1]}" if unit.position else signal
    return BackpropResult(unit=unit, mode=mode, signal=signal_used, input_grad=result.input_grad[0],
                          activation=result.activation[0], layer_grads={k: v[0] for k, v in layer_grads.items()},
                          rectifiers_modified=result.rectifiers_modified, preprocessing=model.preprocessing)
