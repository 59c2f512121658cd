"""Activation maximization: synthetic images that a unit loves.

Two methods, both batched (one image per target, each target's result independent of the others):

- ``paper``: Yosinski et al. 2015's regularized gradient ascent in pixel space (decay, blur, percentile clipping,
  learning-rate policies; presets ``paper1``-``paper4`` from Table 1, ``paper3`` by default);
- ``modern``: a Fourier-space, colour-decorrelated image with random jitter / scale / rotation, Adam, and an
  optional diversity term (Olah et al. 2017).

>>> results = deepvis.optimize(model, ["classifier:285", "blocks.10:7"], preset="paper3", max_iter=200)
>>> deepvis.save_image(results[0].image, "cat.png")
"""

from __future__ import annotations

from typing import Callable, Sequence

from ..errors import DeepvisError
from ..models.model import Model
from ..units import Unit
from .modern import ModernParams
from .objectives import Target, make_target
from .presets import DEFAULT_PRESET, PRESETS, PaperParams, preset
from .result import OptimizeResult
from .run import optimize_targets, optimize_to_store

METHODS = ("paper", "modern")

__all__ = ["DEFAULT_PRESET", "METHODS", "PRESETS", "ModernParams", "OptimizeResult", "PaperParams", "Target",
           "make_params", "make_target", "optimize", "optimize_to_store", "preset"]


def optimize(model: Model, units: Sequence[str | Unit | Target] | str | Unit | Target, method: str = "paper",
             params: PaperParams | ModernParams | None = None, objective: str = "unit", sign: float = 1.0,
             on_step: Callable[[int], None] | None = None, **settings) -> list[OptimizeResult]:
    """Optimize one image per unit, all in one batch; returns one :class:`OptimizeResult` per unit, in order.

    ``params`` defaults to the ``paper3`` preset (``preset='paper1'`` picks another) or to :class:`ModernParams`;
    other keyword arguments change single settings (``max_iter=200``, ``steps=256``, ``seed=1`` ...).
    ``objective`` is ``unit`` (the centre position of a conv channel unless ``@y,x`` is given), ``channel`` (the
    channel's mean), or ``direction`` (give ``vector=``); ``sign=-1`` minimizes.
    """
    if isinstance(units, (str, Unit, Target)):
        units = [units]
    if not units:
        raise DeepvisError("give at least one unit to optimize")
    vector = settings.pop("vector", None)
    params = make_params(method, params, **settings)
    targets = [make_target(model, u, objective, params.push_dir * sign, vector) for u in units]
    return optimize_targets(model, targets, params, on_step)


def make_params(method: str = "paper", params: PaperParams | ModernParams | None = None,
                preset_name: str | None = None, **settings) -> PaperParams | ModernParams:
    """The settings of a method: a preset (paper) or the defaults (modern), with single settings changed."""
    preset_name = settings.pop("preset", None) or preset_name
    if method not in METHODS:
        raise DeepvisError(f"unknown method {method!r}: use one of {', '.join(METHODS)}")
    if params is None:
        params = preset(preset_name or DEFAULT_PRESET) if method == "paper" else ModernParams()
    elif preset_name:
        raise DeepvisError("give either params or a preset, not both")
    if preset_name and method != "paper":
        raise DeepvisError(f"presets belong to the paper's method, not {method!r}")
    expected = PaperParams if method == "paper" else ModernParams
    if not isinstance(params, expected):
        raise DeepvisError(f"method {method!r} takes {expected.__name__}, got {type(params).__name__}")
    unknown = [k for k in settings if k not in params.__dataclass_fields__]
    if unknown:
        raise DeepvisError(f"unknown {method} setting {unknown[0]!r}: use any of "
                           f"{', '.join(params.__dataclass_fields__)}")
    try:
        return params.with_(**settings)
    except TypeError as exc:
        raise DeepvisError(f"bad {method} setting: {exc}") from None
