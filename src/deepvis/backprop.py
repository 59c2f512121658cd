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
from typing import Iterable, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from .errors import DeepvisError, UnitError
from .models.model import Model
from .models.preprocessing import Preprocessing
from .probe import Probe, _as_model
from .units import Unit, parse_unit

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
        from .render import back_image

        return back_image(self.rgb_grad(), filter)


def start_signal(act: torch.Tensor, unit: Unit, signal: str | torch.Tensor) -> torch.Tensor:
    """The gradient a backward pass starts from at the unit's layer output ``act`` (batch included): the unit's
    activation map (``'map'``), a one-hot at its maximum (``'argmax'``) or at its ``@y,x``, or a given tensor."""
    if isinstance(signal, torch.Tensor):
        if signal.shape != act.shape:
            raise DeepvisError(f"a start signal tensor must have the shape of layer '{unit.layer}''s output "
                               f"{tuple(act.shape)}, got {tuple(signal.shape)}")
        return signal.to(device=act.device, dtype=act.dtype)
    channels = act.shape[1]
    if unit.channel >= channels:
        raise UnitError(f"channel {unit.channel} out of range for layer '{unit.layer}', which has {channels} "
                        f"channels (0-{channels - 1}): unit '{unit}'")
    start = torch.zeros_like(act)
    spatial = act.shape[2:]
    if unit.position is not None:
        if len(spatial) != 2:
            raise UnitError(f"unit '{unit}' has a position, but layer '{unit.layer}' has no spatial dimensions "
                            f"(output shape {tuple(act.shape[1:])}); use '{unit.layer}:{unit.channel}'")
        y, x = unit.position
        if y >= spatial[0] or x >= spatial[1]:
            raise UnitError(f"position {y},{x} out of range for layer '{unit.layer}' of size "
                            f"{spatial[0]}x{spatial[1]}: unit '{unit}'")
        start[:, unit.channel, y, x] = 1.0
    elif signal == "map":
        start[:, unit.channel] = act[:, unit.channel].detach()
    elif signal == "argmax":
        flat = act[:, unit.channel].detach().reshape(act.shape[0], -1)
        onehot = torch.zeros_like(flat).scatter_(1, flat.argmax(dim=1, keepdim=True), 1.0)
        start[:, unit.channel] = onehot.reshape(start[:, unit.channel].shape)
    else:
        raise DeepvisError(f"unknown start signal {signal!r}: use 'map' (the unit's activation map) or 'argmax'")
    return start


def backprop_batch(model: Model | nn.Module, x: torch.Tensor, unit: str | Unit, mode: Mode = "gradient",
                   signal: Signal | torch.Tensor = "map", layers: Iterable[str] = ()) -> tuple[
                       torch.Tensor, torch.Tensor, dict[str, torch.Tensor], int]:
    """Batched core of :func:`backprop` on a preprocessed (N, C, H, W) input.

    ``signal`` may also be a tensor of the unit layer's output shape (batch included): the gradient to start from,
    e.g. one-hots at a different position for each image.

    Returns ``(input_grad, activation, layer_grads, rectifiers_modified)``, each with the batch dimension.
    """
    unit = parse_unit(unit)
    if mode not in RULES:
        raise DeepvisError(f"unknown backprop mode {mode!r}: use one of {', '.join(MODES)}")
    layers = [name for name in dict.fromkeys(layers) if name != unit.layer]
    if RULES[mode] is None or not RULES[mode][1]:
        return _backprop_once(model, x, unit, mode, signal, layers, fast=False)
    # Guided: first with the masks read from the tensors autograd keeps anyway (no extra forward work); should
    # the model change one of them in place after its rectifier, again with private masks, which always works.
    try:
        return _backprop_once(model, x, unit, mode, signal, layers, fast=True)
    except RuntimeError as exc:
        if _CHANGED_IN_PLACE not in str(exc):
            raise
    return _backprop_once(model, x, unit, mode, signal, layers, fast=False)


def _backprop_once(model: Model | nn.Module, x: torch.Tensor, unit: Unit, mode: str, signal: str, layers: list[str],
                   fast: bool) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor], int]:
    x = x.detach().clone().requires_grad_(True)
    rules = rectifier_rules(mode, save_like_autograd=fast)
    with torch.enable_grad(), Probe(model, [unit.layer, *layers], keep_graph=True, stop_early=True) as probe:
        # 'gradient' leaves every rectifier alone: skip the mode and its per-call Python dispatch altogether.
        with rules if rules.rule is not None else nullcontext():
            probe.run(x)
        act = probe[unit.layer]
        if not isinstance(act, torch.Tensor) or not act.requires_grad:
            raise DeepvisError(f"layer '{unit.layer}' does not depend on the input; nothing to backpropagate")
        start = start_signal(act, unit, signal)
        targets = [x] + [probe[name] for name in layers]
        grads = torch.autograd.grad(act, targets, grad_outputs=start, allow_unused=True)
    layer_grads = {name: (g if g is not None else torch.zeros_like(probe[name])).detach()
                   for name, g in zip(layers, grads[1:])}
    input_grad = grads[0] if grads[0] is not None else torch.zeros_like(x)
    return input_grad.detach(), act.detach(), layer_grads, rules.modified


def backprop(model: Model | nn.Module, image, unit: str | Unit, mode: Mode = "gradient", signal: Signal = "map",
             layers: Iterable[str] = (), resize: str | None = None) -> BackpropResult:
    """Backward pass from one unit to the input image (and to ``layers``) in ``gradient``, ``deconv`` or ``guided`` mode.

    The start signal is the unit's whole activation map (``signal='map'``, the original live view), a one-hot at
    its spatial maximum (``'argmax'``), or a one-hot at the unit's own ``@y,x`` position when it has one.
    """
    model = _as_model(model)
    unit = parse_unit(unit)
    layers = list(layers)
    x = model.input(image, resize)[:1]
    input_grad, act, layer_grads, modified = backprop_batch(model, x, unit, mode, signal, layers)
    if unit.layer in layers:
        layer_grads[unit.layer] = start_signal(act, unit, signal)
    signal_used = f"onehot@{unit.position[0]},{unit.position[1]}" if unit.position else signal
    return BackpropResult(unit=unit, mode=mode, signal=signal_used, input_grad=input_grad[0], activation=act[0],
                          layer_grads={k: v[0] for k, v in layer_grads.items()}, rectifiers_modified=modified,
                          preprocessing=model.preprocessing)
