"""The paper's regularized gradient ascent in pixel space (``optimize_image.py`` of the original), batched: each
image of the batch has its own target, learning rate, percentiles and stopping, and gets the same result as when
optimized alone."""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from ..models.model import Model
from . import regularizers as reg
from .objectives import Target, evaluate, is_target_max, target_argmax
from .pixels import PixelSpace, pixel_space
from .presets import PaperParams
from .result import OptimizeResult


def start_image(params: PaperParams, space: PixelSpace) -> torch.Tensor:
    """The starting point: ``mean_plus_rand`` N(0, 10) around the mean, ``randu`` U(0, 255) minus the mean, or
    ``mean`` (zeros). Drawn from ``params.seed`` alone, so every target of a run starts from the same image, as
    every run of the original with the same seed did."""
    generator = torch.Generator().manual_seed(int(params.seed))
    shape = tuple(space.mean.shape)
    if params.start_at == "mean_plus_rand":
        x0 = torch.randn(shape, generator=generator, dtype=torch.float64) * 10.0
    elif params.start_at == "randu":
        x0 = torch.rand(shape, generator=generator, dtype=torch.float64) * 255.0 - space.mean.double().cpu()
    else:
        x0 = torch.zeros(shape, dtype=torch.float64)
    return x0.to(device=space.mean.device, dtype=space.mean.dtype)


def step_direction(grad_input: torch.Tensor, grad_pixels: torch.Tensor) -> torch.Tensor:
    """What a ``constant`` learning rate multiplies: the gradient with respect to the model's own input, the step
    taken in 0-255 pixel levels (``x += lr * d objective / d input``).

    For a Caffe model fed 0-255 values (the original's CaffeNet) this is the original's step exactly. For a model
    fed [0, 1] or [-1, 1] values it is ``1 / scale`` times the pixel-space gradient (255x for [0, 1]): a constant
    ``lr`` of 100 moves pixels as far as it did on CaffeNet, where a pixel-space gradient alone would step 255
    times shorter and leave most units of a [0, 1] LeNet short of their layer's maximum. (The ``progress`` policies
    need no such choice: they size each step from the pixel-space gradient to make a given progress.)"""
    return grad_input.to(grad_pixels.dtype)


#: The input size (pixels, the shorter side) the paper's blur radii are given for: the bundled model's and
#: GoogLeNet's 224 (CaffeNet's 227 gets 1.3% more), as the modern recipe's jitter.
BLUR_REFERENCE_SIZE = 224


def blur_sigma(params: PaperParams, height: int, width: int) -> float:
    """The Gaussian blur's sigma in this input's pixels: ``blur_radius`` is given for a 224-pixel input
    (:data:`BLUR_REFERENCE_SIZE`) and scaled with the input, as the paper's blur smooths a pattern at a fixed share
    of the image. Unscaled, a 1-px blur on a 28-px LeNet smooths as much as an 8-px blur on a 224-px input and
    erases the 5-px strokes its units look for."""
    return params.blur_radius * min(height, width) / BLUR_REFERENCE_SIZE


def _regularize(x: torch.Tensor, grad: torch.Tensor, params: PaperParams, ii: int) -> torch.Tensor:
    """Decay, blur (its sigma scaled to the input, :func:`blur_sigma`), and the four clippings, in the original's
    order."""
    x = reg.decay(x, params.decay)
    if params.blur_every and params.blur_radius > 0 and ii % params.blur_every == 0:
        x = reg.gaussian_blur(x, blur_sigma(params, x.shape[2], x.shape[3]))
    if params.small_val_percentile > 0:
        x = reg.zero_small_values(x, params.small_val_percentile)
    if params.small_norm_percentile > 0:
        x = reg.zero_small_norms(x, params.small_norm_percentile)
    if params.px_benefit_percentile > 0:
        x = reg.zero_small_benefit(x, grad, params.px_benefit_percentile)
    if params.px_abs_benefit_percentile > 0:
        x = reg.zero_small_abs_benefit(x, grad, params.px_abs_benefit_percentile)
    return x


class _Tracker:
    """The original's ``FindResults`` for one image: per-iteration values, best, last, first arg-max."""

    def __init__(self, target: Target):
        self.target = target
        self.record: dict = {key: [] for key in ("ii", "obj", "idxmax", "ismax", "norm", "dist", "std")}
        self.record.update(best_obj=None, best_ii=None, last_obj=None, last_ii=None, majority_obj=None,
                           majority_ii=None, meta_result=None)
        self.best_x = self.last_x = None

    def update(self, ii: int, obj: float, argmax: tuple[int, ...], x: torch.Tensor, x0: torch.Tensor) -> None:
        r = self.record
        ismax = is_target_max(self.target, argmax)
        r["ii"].append(ii)
        r["obj"].append(obj)
        r["idxmax"].append(list(argmax))
        r["ismax"].append(ismax)
        r["norm"].append(float(x.norm()))
        r["dist"].append(float((x - x0).norm()))
        r["std"].append(float(x.std(unbiased=False)))
        if ismax and r["majority_ii"] is None:
            r["majority_obj"], r["majority_ii"] = obj, ii
        if r["best_obj"] is None or self.target.sign * obj > self.target.sign * r["best_obj"]:
            r["best_obj"], r["best_ii"], self.best_x = obj, ii, x.clone()
        r["last_obj"], r["last_ii"], self.last_x = obj, ii, x

    def finish(self) -> None:
        if self.record["meta_result"] is None and self.target.kind != "unit":
            self.record["meta_result"] = "done"  # "the unit wins its layer" only means something for a unit
        elif self.record["meta_result"] is None:
            found = self.record["majority_ii"] is not None
            self.record["meta_result"] = "majority success" if found else "majority failure"


def optimize_paper(model: Model, targets: Sequence[Target], params: PaperParams,
                   on_step: Callable[[int], None] | None = None) -> list[OptimizeResult]:
    """Optimize one image per target with the paper's method (all targets in one batch)."""
    space = pixel_space(model)
    x0 = start_image(params, space)
    x = x0.expand(len(targets), *x0.shape).clone()
    signs = torch.tensor([t.sign for t in targets], device=x.device, dtype=x.dtype)
    active = torch.ones(len(targets), dtype=torch.bool, device=x.device)
    trackers = [_Tracker(t) for t in targets]
    for ii in range(params.max_iter):
        x = space.clip(x)
        x_input = space.to_input(x).requires_grad_(True)
        with torch.enable_grad():
            evaluation = evaluate(model, x_input, targets)
            objective, by_layer = evaluation.values, evaluation.by_layer
            grad_input = evaluation.input_grad((objective * signs * active).sum())
        argmax: list[tuple[int, ...]] = [()] * len(targets)
        for rows, acts in by_layer.values():
            row_signs = signs[rows].view(-1, *([1] * (acts.dim() - 1)))
            # arg-min when minimizing; a conv unit is compared with the other channels at its position
            for n, where in zip(rows, target_argmax(acts.detach() * row_signs, [targets[r] for r in rows])):
                argmax[n] = where
        grad = grad_input * space.scale
        values = objective.detach()
        for n in active.nonzero().flatten().tolist():
            trackers[n].update(ii, float(values[n]), argmax[n], x[n], x0)
        grad_sq_norm = grad.pow(2).sum(dim=(1, 2, 3))
        dead = active & (grad_sq_norm == 0)
        for n in dead.nonzero().flatten().tolist():
            trackers[n].record["meta_result"] = "grad 0 failure"
        active &= ~dead
        if on_step is not None:
            on_step(ii)
        if not active.any():
            break
        if ii < params.max_iter - 1:  # no step after the last evaluation, so the record describes the final image
            lr = reg.learning_rate(params.lr_policy, params.lr_params, grad_sq_norm, values)
            # constant: lr times the gradient with respect to the model's own input, in pixel levels (see
            # step_direction); the progress policies predict progress from the pixel-space gradient itself
            direction = step_direction(grad_input, grad) if params.lr_policy == "constant" else grad
            stepped = _regularize(x + lr.view(-1, 1, 1, 1) * direction, grad, params, ii)
            x = torch.where(active.view(-1, 1, 1, 1), stepped, x)
    results = []
    for tracker in trackers:
        tracker.finish()
        best = tracker.best_x if tracker.best_x is not None else x0
        last = tracker.last_x if tracker.last_x is not None else x0
        results.append(OptimizeResult(tracker.target, "paper", space.to_display(best), space.to_rgb01(best),
                                      space.to_display(last), tracker.record, params.to_json()))
    return results
