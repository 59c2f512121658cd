"""One batch of targets through a method, and the advice when most of them fail."""

from __future__ import annotations

from typing import Callable, Sequence

from deepvis.engine.featvis.methods import Params, method_of
from deepvis.engine.featvis.objectives import Target
from deepvis.models.model import Model
from deepvis.engine.featvis.result import OptimizeResult

class OptimizeWarning(UserWarning):
    """Most units of a run did not end as their layer's maximum ("majority failure")."""


def failure_advice(results: Sequence[OptimizeResult], params: Params, where: str = "") -> str | None:
    """A message with the fix to try when most unit targets ended in "majority failure" (their optimized image does
    not make them their layer's largest value, or for a conv unit the largest channel at its position), else None."""
    units = [r for r in results if r.record.get("meta_result") in ("majority success", "majority failure")]
    failed = sum(r.record.get("meta_result") == "majority failure" for r in units)
    if not units or failed * 2 <= len(units):
        return None
    method = method_of(params).name
    if method == "paper":
        lr = params.lr_params.get("lr", params.lr_params.get("max_lr"))
        key = "lr" if "lr" in params.lr_params else "max_lr"
        fix = (f"try a larger step (--lr-params '{{\"{key}\": {lr * 10:g}}}' in Python lr_params={{'{key}': "
               f"{lr * 10:g}}}), more iterations (--max-iter), or --preset paper1 (its step follows the gradient)")
    else:
        fix = "try more --steps or a larger --lr"
    return (f"{failed} of {len(units)} units{where} ended in 'majority failure' (the optimized image does not make "
            f"the unit its layer's largest value, or a conv unit the largest channel at its position): {fix}")


def optimize_targets(model: Model, targets: Sequence[Target], params: Params,
                     on_step: Callable[[int], None] | None = None, **context) -> list[OptimizeResult]:
    """One batch of targets through the method ``params`` belongs to (``context``: what its ``prepare`` gave)."""
    return method_of(params).run(model, targets, params, on_step, **context)


