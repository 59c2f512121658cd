"""Activation maximization: synthetic images that a unit loves.

Two methods, both batched (one image per target, each target's result independent of the others):

- ``paper``: Yosinski et al. 2015's regularized gradient ascent in pixel space (decay, blur, percentile clipping,
  learning-rate policies; presets ``paper1``-``paper4`` from Table 1, ``paper3`` by default);
- ``modern``: a Fourier-space, colour-decorrelated image with random jitter / scale / rotation, Adam, and an
  optional diversity term (Olah et al. 2017);
- ``maco``: only the Fourier phase is optimized, the magnitude fixed to natural images' spectrum; crops of a larger
  canvas; a transparency map from the accumulated gradients (Fel et al. 2023).

``accentuate`` changes a real image just enough to excite a unit (Hamblin et al. 2024); ``evaluate.py`` measures
the quality of optimized images against a unit's dataset examples.

>>> results = deepvis.optimize(model, ["classifier:285", "blocks.10:7"], preset="paper3", max_iter=200)
>>> deepvis.save_image(results[0].image, "cat.png")
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Callable, Sequence

from deepvis.core.errors import DeepvisError
from deepvis.models.model import Model
from deepvis.core.progress import Progress
from deepvis.pixels.render import save_image
from deepvis.core.units import Unit
from deepvis.engine.featvis.methods import METHODS, Method, Params, method_named, method_of
from deepvis.engine.featvis.accentuate import AccentuationResult, accentuate
from deepvis.engine.featvis.maco import MacoParams
from deepvis.engine.featvis.modern import ModernParams
from deepvis.engine.featvis.objectives import Target, make_target
from deepvis.engine.featvis.presets import DEFAULT_PRESET, PRESETS, PaperParams, preset
from deepvis.engine.featvis.result import OptimizeResult
from deepvis.engine.featvis.run import OptimizeWarning, failure_advice, optimize_targets

__all__ = ["AccentuationResult", "accentuate", "DEFAULT_PRESET", "METHODS", "PRESETS", "MacoParams", "Method",
           "ModernParams", "OptimizeResult", "OptimizeWarning", "PaperParams", "Params", "Target", "failure_advice",
           "make_params", "make_target", "method_named", "method_of", "optimize", "optimize_to_files", "preset"]


def optimize(model: Model, units: Sequence[str | Unit | Target] | str | Unit | Target, method: str = "paper",
             params: Params | None = None, objective: str = "unit", sign: float = 1.0,
             on_step: Callable[[int], None] | None = None, progress: bool = True,
             **settings) -> list[OptimizeResult]:
    """Optimize one image per unit, all in one batch; returns one :class:`OptimizeResult` per unit, in order.

    ``progress`` shows a progress bar as the command line does (tqdm on a terminal and in notebooks, plain lines in
    logs); a run where most units end in "majority failure" says so, with the fix to try (a warning).

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
    steps = method_of(params).steps(params)
    bar = Progress(len(targets) * steps, "optimize", unit="unit-steps", enabled=progress)
    counted = [0]

    def step(ii: int) -> None:
        counted[0] += 1
        bar.update(len(targets))
        if on_step is not None:
            on_step(ii)

    results = optimize_targets(model, targets, params, step)
    bar.update(len(targets) * (steps - counted[0]))
    bar.close()
    advice = failure_advice(results, params)
    if advice:
        warnings.warn(advice, OptimizeWarning, stacklevel=2)
    return results


def optimize_to_files(model: Model, units: Sequence[str | Unit | Target] | str | Unit | Target,
                      output: str | Path, params: Params, objective: str = "unit") -> list[tuple[Path, OptimizeResult]]:
    """Optimize single units (one batch) and write each one's picture and record beside ``output`` (``OUT.png``):
    ``OUT.png`` and ``OUT.json`` for one unit, ``OUT_00.png``, ``OUT_01.png`` ... for several, and
    ``OUT_copyN.png`` for further copies (``copies``). Returns each picture's path with its result."""
    output = Path(output)
    if not output.parent.is_dir():
        raise DeepvisError(f"cannot write '{output}': the folder '{output.parent}' does not exist")
    results = optimize(model, units, method_of(params).name, params, objective=objective, progress=False)
    written = []
    for n, result in enumerate(results):
        path = output.with_name(f"{output.stem}_{n:02d}{output.suffix}") if len(results) > 1 else output
        save_image(result.image, path)
        for copy, image in enumerate(result.extra_images, start=1):
            save_image(image, path.with_name(f"{path.stem}_copy{copy}{path.suffix}"))
        if result.alpha is not None:
            save_image(result.alpha, path.with_name(f"{path.stem}_alpha{path.suffix}"))
        path.with_suffix(".json").write_text(json.dumps(result.to_json(), indent=1), encoding="utf-8")
        written.append((path, result))
    return written


def make_params(method: str = "paper", params: Params | None = None, preset_name: str | None = None,
                **settings) -> Params:
    """The settings of a method: a preset (paper) or the defaults (modern), with single settings changed."""
    preset_name = settings.pop("preset", None) or preset_name
    chosen = method_named(method)
    if params is None:
        params = chosen.defaults(preset_name)
    elif preset_name:
        raise DeepvisError("give either params or a preset, not both")
    if method_of(params) is not chosen:
        raise DeepvisError(f"method {method!r} takes {chosen.params_type.__name__}, got {type(params).__name__}")
    names = chosen.setting_names()
    unknown = [k for k in settings if k not in names]
    if unknown:
        raise DeepvisError(f"unknown {method} setting {unknown[0]!r}: use any of {', '.join(names)}")
    try:
        return params.with_(**settings)
    except TypeError as exc:
        raise DeepvisError(f"bad {method} setting: {exc}") from None
