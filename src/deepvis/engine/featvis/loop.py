"""The one ascent loop every optimization method runs: make the batch of images from its parameters, take the
method's views of them, evaluate the targets (one per view), descend ``objective + extra terms``, step.

A method supplies an :class:`Ascent`: its parameterization (a module whose ``forward()`` gives the images), its
views, its optimizer (a ``torch.optim`` optimizer, or any object with ``zero_grad()`` and ``step()``: the paper's
regularized gradient step is one), and optionally a scaled objective, extra loss terms (diversity across copies,
accentuation's pull back to its photo), a hook that sees the images' gradient after each backward pass (MACO's
transparency map, the paper's per-iteration records) and a stop test (the paper stops when every image's gradient is
zero)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import torch

from deepvis.models.model import Model
from deepvis.engine.featvis.objectives import Combination, Evaluation, Target, evaluate


class Step(Protocol):
    """What the loop needs of an optimizer: ``zero_grad()`` before each pass, ``step()`` after the backward pass."""

    def zero_grad(self, set_to_none: bool = True) -> None: ...

    def step(self) -> None: ...


#: An extra loss term: ``term(images, evaluation) -> scalar`` (images: the parameterization's output).
Term = Callable[[torch.Tensor, Evaluation], torch.Tensor]


@dataclass
class Ascent:
    """What one method brings to :func:`ascend`.

    ``image``: the parameterization, ``image() -> (N, C, H, W)``; ``views(images)``: the model inputs of a step
    (normalized), one row per entry of ``targets``; ``optimizer``: see :class:`Step`; ``objective(values)``: the loss
    of the (V,) objective values, by default ``-(values * sign).sum()`` (ascent on every target); ``terms``: added to
    it; ``on_gradient(images, evaluation)``: called after the backward pass, ``images.grad`` filled in; ``stop()``:
    True ends the loop after the current step."""

    image: torch.nn.Module
    views: Callable[[torch.Tensor], torch.Tensor]
    targets: Sequence[Target | Combination]
    optimizer: Step
    objective: Callable[[torch.Tensor], torch.Tensor] | None = None
    terms: Sequence[Term] = ()
    on_gradient: Callable[[torch.Tensor, Evaluation], None] | None = None
    stop: Callable[[], bool] | None = None


def ascend(model: Model, ascent: Ascent, steps: int, on_step: Callable[[int], None] | None = None
           ) -> list[torch.Tensor]:
    """Run up to ``steps`` steps of ``ascent``; returns each step's (V,) objective values (detached), calling
    ``on_step(i)`` after step ``i``."""
    objective = ascent.objective
    if objective is None:
        signs = torch.tensor([t.sign for t in ascent.targets], device=model.device)
        objective = lambda values: -(values * signs).sum()  # noqa: E731
    history = []
    for step in range(steps):
        ascent.optimizer.zero_grad(set_to_none=True)
        with torch.enable_grad():
            images = ascent.image()
            if ascent.on_gradient is not None and images.requires_grad:
                images.retain_grad()
            evaluation = evaluate(model, ascent.views(images), ascent.targets)
            loss = objective(evaluation.values)
            for term in ascent.terms:
                loss = loss + term(images, evaluation)
            loss.backward()
        if ascent.on_gradient is not None:
            ascent.on_gradient(images, evaluation)
        ascent.optimizer.step()
        history.append(evaluation.values.detach())
        if on_step is not None:
            on_step(step)
        if ascent.stop is not None and ascent.stop():
            break
    return history
