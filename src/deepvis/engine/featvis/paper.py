"""The paper's regularized gradient ascent in pixel space (``optimize_image.py`` of the original), batched: each
image of the batch has its own target, learning rate, percentiles and stopping, and gets the same result as when
optimized alone. It runs in the shared loop (:func:`loop.ascend`): its parameterization is the pixel space itself,
its views the identity, its optimizer the regularized step (:class:`PaperStep`)."""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from deepvis.models.model import Model
from deepvis.engine.featvis import regularizers as reg
from deepvis.engine.featvis.diversity import diversity_term
from deepvis.engine.featvis import loop
from deepvis.engine.featvis.objectives import Evaluation, Target, is_target_max, target_argmax
from deepvis.engine.featvis.pixels import PixelSpace, pixel_space
from deepvis.engine.featvis.presets import PaperParams
from deepvis.engine.featvis.result import OptimizeResult


def start_image(params: PaperParams, space: PixelSpace, copy: int = 0) -> torch.Tensor:
    """The starting point: ``mean_plus_rand`` N(0, 10) around the mean, ``randu`` U(0, 255) minus the mean, or
    ``mean`` (zeros). Drawn from ``params.seed`` alone (``seed + copy`` for a further copy), so every target of a
    run starts from the same image, as every run of the original with the same seed did."""
    generator = torch.Generator().manual_seed(int(params.seed) + copy)
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


class PixelImage(torch.nn.Module):
    """The paper's iterate ``x``: a batch in its pixel space (:mod:`pixels`), kept clipped to valid pixels;
    ``forward()`` gives the model's input as a fresh leaf, whose gradient the paper's step reads."""

    def __init__(self, x: torch.Tensor, space: PixelSpace):
        super().__init__()
        self.space, self.x = space, space.clip(x)

    def forward(self) -> torch.Tensor:
        return self.space.to_input(self.x).requires_grad_(True)


class PaperStep:
    """The paper's regularized gradient step as the loop's optimizer (:class:`loop.Step`), with its per-image
    bookkeeping: :meth:`observe` (the loop's ``on_gradient``) records each image's iteration and stops images whose
    gradient is exactly zero; :meth:`step` moves the others (learning-rate policy, decay, blur, clippings) and clips,
    except after the last iteration, so the record describes the final image. Each image has its own target,
    learning rate, percentiles and stop."""

    def __init__(self, image: PixelImage, targets: Sequence[Target], x0: torch.Tensor, params: PaperParams):
        self.image, self.x0, self.params = image, x0, params
        x = image.x
        self.signs = torch.tensor([t.sign for t in targets], device=x.device, dtype=x.dtype)
        self.active = torch.ones(len(targets), dtype=torch.bool, device=x.device)
        self.trackers = [_Tracker(t) for t in targets]
        self.ii = 0

    def objective(self, values: torch.Tensor) -> torch.Tensor:
        """The loss the loop descends: minus the signed objective of the images still going."""
        return -(values * self.signs * self.active).sum()

    def observe(self, images: torch.Tensor, evaluation: Evaluation) -> None:
        space, x, ii = self.image.space, self.image.x, self.ii
        self.grad_input = -images.grad  # the gradient of the objective (and diversity term): the loss's, negated
        self.grad = self.grad_input * space.scale
        self.values = evaluation.values.detach()
        targets = [t.target for t in self.trackers]
        argmax: list[tuple[int, ...]] = [()] * len(targets)
        for rows, acts in evaluation.by_layer.values():
            row_signs = self.signs[rows].view(-1, *([1] * (acts.dim() - 1)))
            # arg-min when minimizing; a conv unit is compared with the other channels at its position
            for n, where in zip(rows, target_argmax(acts.detach() * row_signs, [targets[r] for r in rows])):
                argmax[n] = where
        for n in self.active.nonzero().flatten().tolist():
            self.trackers[n].update(ii, float(self.values[n]), argmax[n], x[n], self.x0[n])
        self.grad_sq_norm = self.grad.pow(2).sum(dim=(1, 2, 3))
        dead = self.active & (self.grad_sq_norm == 0)
        for n in dead.nonzero().flatten().tolist():
            self.trackers[n].record["meta_result"] = "grad 0 failure"
        self.active &= ~dead

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Nothing to clear: every pass starts from a fresh leaf (:class:`PixelImage`)."""

    def step(self) -> None:
        ii, params, x = self.ii, self.params, self.image.x
        self.ii += 1
        if not self.active.any() or ii >= params.max_iter - 1:  # no step after the last evaluation
            return
        lr = reg.learning_rate(params.lr_policy, params.lr_params, self.grad_sq_norm, self.values)
        # constant: lr times the gradient with respect to the model's own input, in pixel levels (see
        # step_direction); the progress policies predict progress from the pixel-space gradient itself
        direction = step_direction(self.grad_input, self.grad) if params.lr_policy == "constant" else self.grad
        stepped = _regularize(x + lr.view(-1, 1, 1, 1) * direction, self.grad, params, ii)
        self.image.x = self.image.space.clip(torch.where(self.active.view(-1, 1, 1, 1), stepped, x))

    def stopped(self) -> bool:
        return not self.active.any()


def optimize_paper(model: Model, targets: Sequence[Target], params: PaperParams,
                   on_step: Callable[[int], None] | None = None) -> list[OptimizeResult]:
    """Optimize ``params.copies`` images per target with the paper's method (all in one batch, :func:`loop.ascend`);
    copy ``c`` starts from seed ``seed + c``, and with ``diversity`` the copies' Gram similarity is descended too."""
    space = pixel_space(model)
    copies = params.copies
    expanded = [t for t in targets for _ in range(copies)]
    starts = torch.stack([start_image(params, space, copy) for copy in range(copies)])
    x0 = starts.repeat(len(targets), *([1] * (starts.dim() - 1)))
    image = PixelImage(x0.clone(), space)
    paper = PaperStep(image, expanded, x0, params)
    ascent = loop.Ascent(image, lambda x: x, expanded, paper, objective=paper.objective,
                         terms=[diversity_term(params.diversity, copies)] if params.diversity else (),
                         on_gradient=paper.observe, stop=paper.stopped)
    loop.ascend(model, ascent, params.max_iter, on_step)
    results = []
    for i, target in enumerate(targets):
        bests = []
        for n in range(i * copies, (i + 1) * copies):
            tracker = paper.trackers[n]
            tracker.finish()
            bests.append(tracker.best_x if tracker.best_x is not None else x0[n])
        tracker = paper.trackers[i * copies]
        last = tracker.last_x if tracker.last_x is not None else x0[i * copies]
        record = tracker.record
        if copies > 1:
            record["copy_best_obj"] = [paper.trackers[n].record["best_obj"]
                                       for n in range(i * copies, (i + 1) * copies)]
        results.append(OptimizeResult(target, "paper", space.to_display(bests[0]), space.to_rgb01(bests[0]),
                                      space.to_display(last), record, params.to_json(),
                                      extra_images=[space.to_display(b) for b in bests[1:]]))
    return results
