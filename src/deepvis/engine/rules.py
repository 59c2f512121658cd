"""The rectifier rules of the backward modes: the context that gives rectifiers the backward pass of deconv or guided
backprop during a forward pass.

The three modes differ only in how rectifiers (ReLU, ReLU6, hardtanh(0, x), clamp(min=0)) pass gradient back:

- ``gradient``: ordinary autograd, ``grad_in = grad_out * [lo < x < hi]``;
- ``deconv`` (Zeiler & Fergus 2014): ``grad_in = relu(grad_out)``, ignoring the forward activation;
- ``guided`` (Springenberg et al. 2015): ``grad_in = relu(grad_out) * [lo < x < hi]``.

Rectifiers are found at call time whether written as modules, ``F.relu``, ``torch.relu``, ``Tensor.relu``, in place
or not, through a ``TorchFunctionMode`` active only during the forward pass: the model is never modified.
"""

from __future__ import annotations

from numbers import Number
from typing import Literal

import torch
import torch.nn.functional as F
from torch._C import _len_torch_function_stack, _pop_torch_function_stack, _push_on_torch_function_stack
from torch.overrides import TorchFunctionMode

from deepvis.core.errors import DeepvisError

Mode = Literal["gradient", "deconv", "guided"]

#: How each mode treats a rectifier's backward pass: (drop negative gradient, mask by forward activation).
RULES: dict[str, tuple[bool, bool] | None] = {
    "gradient": None,  # untouched autograd
    "deconv": (True, False),
    "guided": (True, True),
}
MODES = tuple(RULES)


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


class RectifierRules(TorchFunctionMode):
    """Context: during forward passes inside it, rectifiers get the backward rule of ``mode`` (made by
    :func:`rectifier_rules`).

    ``modified`` counts the rectifier calls that were replaced (0 in ``gradient`` mode, or when the model has
    no rectifiers for deconv/guided to act on).

    ``save_like_autograd=True`` keeps, for the guided rule, the tensors autograd itself keeps instead of a private
    mask (no extra forward work; a later in-place change of such a tensor then fails the backward pass, see
    :class:`_Rectify`).

    It is a mode on torch's function-mode stack, pushed on enter (one step: a failed enter pushes nothing) and on
    exit taken out from wherever it is there: contexts nested and exited in any order each remove only themselves,
    and the modes above it keep working (torch's own ``__exit__`` pops whichever mode is on top).
    """

    def __init__(self, mode: Mode, save_like_autograd: bool = False):
        super().__init__()
        if mode not in RULES:
            raise DeepvisError(f"unknown backprop mode {mode!r}: use one of {', '.join(MODES)}")
        self.rule = RULES[mode]
        self.modified = 0
        self.save_like_autograd = save_like_autograd

    def __enter__(self) -> "RectifierRules":
        _push_on_torch_function_stack(self)
        return self

    def __exit__(self, *exc) -> None:
        # torch's own __exit__ pops the top mode, whichever it is; this one is taken out from where it is instead
        above = []  # the modes entered after this one and still active, innermost first
        while _len_torch_function_stack():
            mode = _pop_torch_function_stack()
            if mode is self:
                break
            above.append(mode)
        for mode in reversed(above):
            _push_on_torch_function_stack(mode)

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


def rectifier_rules(mode: Mode, save_like_autograd: bool = False) -> RectifierRules:
    """A context in which rectifiers get the backward rule of ``mode`` (see :class:`RectifierRules`).

    >>> with rectifier_rules("guided") as rules:
    ...     out = model.net(x.requires_grad_())
    >>> rules.modified  # the rectifier calls that got the guided rule
    """
    return RectifierRules(mode, save_like_autograd)
