"""The paper's hyperparameters: one dataclass with the original's defaults, and Table 1's four presets."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

from deepvis.core.errors import DeepvisError

START_AT = ("mean_plus_rand", "randu", "mean")
LR_POLICIES = {"constant": ("lr",), "progress": ("max_lr", "desired_prog"),
               "progress01": ("max_lr", "early_prog", "late_prog_mult")}


@dataclass(frozen=True)
class PaperParams:
    """Regularized activation maximization as in Yosinski et al. 2015 (``optimize_image.py``'s options).

    Percentiles are 0-100 (0: off); ``blur_radius`` is the Gaussian sigma in pixels, applied every ``blur_every``
    iterations; ``decay`` is the L2 decay per step. ``push_dir`` +1 maximizes, -1 minimizes. ``max_iter`` (also
    readable as ``steps``, the name every method shares) is the number of iterations. ``copies`` images per target
    (each from its own seed, ``seed + copy``), made different from each other by a ``diversity`` term, as in the
    modern recipe.

    A field whose metadata has ``help`` is a command-line flag (``--blur-radius``); ``choices``, ``metavar`` and
    ``min`` shape it.
    """

    start_at: str = field(default="mean_plus_rand", metadata={
        "help": "start image: N(0, 10) around the mean, uniform 0-255, or the mean", "choices": START_AT})
    seed: int = field(default=0, metadata={"help": "random seed of the start image"})
    push_dir: float = 1.0
    decay: float = field(default=0.0, metadata={"help": "L2 decay per step"})
    blur_radius: float = field(default=0.0, metadata={"help": "Gaussian blur sigma, pixels"})
    blur_every: int = field(default=0, metadata={"help": "blur every N steps, 0: never"})
    small_val_percentile: float = field(default=0.0, metadata={
        "help": "zero values whose magnitude is below this percentile, 0-100 (0: off)", "metavar": "P"})
    small_norm_percentile: float = field(default=0.0, metadata={
        "help": "zero pixels whose colour norm is below this percentile", "metavar": "P"})
    px_benefit_percentile: float = field(default=0.0, metadata={
        "help": "zero pixels whose benefit (gradient x -value) is below this percentile", "metavar": "P"})
    px_abs_benefit_percentile: float = field(default=0.0, metadata={
        "help": "zero pixels whose absolute benefit is below this percentile", "metavar": "P"})
    lr_policy: str = field(default="constant", metadata={"help": "learning-rate policy", "choices": tuple(LR_POLICIES)})
    lr_params: dict = field(default_factory=lambda: {"lr": 1.0}, metadata={
        "help": "the lr policy's numbers as JSON, e.g. '{\"lr\": 100}'", "metavar": "JSON"})
    max_iter: int = field(default=500, metadata={"help": "iterations", "min": 1})
    copies: int = field(default=1, metadata={"help": "images per unit", "min": 1})
    diversity: float = field(default=0.0, metadata={"help": "weight of the diversity term across copies"})

    def __post_init__(self) -> None:
        object.__setattr__(self, "lr_params", dict(self.lr_params))  # never shared with a preset
        if self.start_at not in START_AT:
            raise DeepvisError(f"unknown start {self.start_at!r}: use one of {', '.join(START_AT)}")
        if self.lr_policy not in LR_POLICIES:
            raise DeepvisError(f"unknown lr policy {self.lr_policy!r}: use one of {', '.join(LR_POLICIES)}")
        missing = [k for k in LR_POLICIES[self.lr_policy] if k not in self.lr_params]
        if missing:
            raise DeepvisError(f"lr policy {self.lr_policy!r} needs lr_params {', '.join(LR_POLICIES[self.lr_policy])}"
                               f" (missing {', '.join(missing)})")
        bad = [k for k, v in self.lr_params.items() if not _positive_number(v)]
        if bad:
            raise DeepvisError(f"lr_params {bad[0]!r} must be a positive number, got {self.lr_params[bad[0]]!r}")
        if not all(math.isfinite(v) for v in (self.decay, self.blur_radius, self.small_val_percentile,
                                               self.small_norm_percentile, self.px_benefit_percentile,
                                               self.px_abs_benefit_percentile)):
            raise DeepvisError("decay, blur radius and percentiles must be finite numbers")
        if self.copies < 1 or not math.isfinite(self.diversity) or self.diversity < 0:
            raise DeepvisError("copies must be >= 1 and diversity a finite number >= 0")
        if self.diversity > 0 and self.copies < 2:
            raise DeepvisError("the diversity term compares several images of a unit: give copies >= 2")
        if self.copies > 1 and self.start_at == "mean":
            raise DeepvisError("copies of the 'mean' start are one image: give start_at mean_plus_rand or randu")
        if self.push_dir not in (1, -1, 1.0, -1.0):
            raise DeepvisError(f"push_dir must be +1 (maximize) or -1 (minimize), got {self.push_dir}")
        if self.max_iter < 1 or self.blur_every < 0 or self.blur_radius < 0 or not 0 <= self.decay < 1:
            raise DeepvisError("max_iter must be >= 1, blur_every and blur_radius >= 0, decay in [0, 1)")
        for name in ("small_val_percentile", "small_norm_percentile", "px_benefit_percentile",
                     "px_abs_benefit_percentile"):
            if not 0 <= getattr(self, name) <= 100:
                raise DeepvisError(f"{name} must be between 0 and 100, got {getattr(self, name)}")

    @property
    def steps(self) -> int:
        """The number of iterations (``max_iter``), under the step-count name all methods share."""
        return self.max_iter

    def with_(self, **changes) -> "PaperParams":
        """A copy with some settings changed (``None`` values are ignored)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_json(self) -> dict:
        """Every setting, as stores record them (``max_iter``, not ``steps``; ``copies`` and ``diversity`` only when
        not 1 and 0: existing stores, made before they existed, stay valid)."""
        data = asdict(self)
        if self.copies == 1 and self.diversity == 0:
            del data["copies"], data["diversity"]
        return data


def _positive_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


#: Table 1 of the paper (``doc/running-optimize-image.md``); ``paper3`` made most of its figures.
PRESETS: dict[str, PaperParams] = {
    "paper1": PaperParams(decay=0.0, blur_radius=0.5, blur_every=4, small_norm_percentile=50, max_iter=500,
                          lr_policy="progress", lr_params={"max_lr": 100.0, "desired_prog": 2.0}),
    "paper2": PaperParams(decay=0.3, blur_radius=0.0, blur_every=0, small_norm_percentile=20, max_iter=750,
                          lr_policy="constant", lr_params={"lr": 100.0}),
    "paper3": PaperParams(decay=0.0001, blur_radius=1.0, blur_every=4, max_iter=1000,
                          lr_policy="constant", lr_params={"lr": 100.0}),
    "paper4": PaperParams(decay=0.0, blur_radius=0.5, blur_every=4, px_abs_benefit_percentile=90, max_iter=1000,
                          lr_policy="progress", lr_params={"max_lr": 1e8, "desired_prog": 2.0}),
}
DEFAULT_PRESET = "paper3"


def preset(name: str) -> PaperParams:
    """One of Table 1's settings by name (``paper1`` ... ``paper4``)."""
    try:
        return replace(PRESETS[name])  # a copy: changing its lr_params never changes the preset
    except KeyError:
        raise DeepvisError(f"unknown preset {name!r}: use one of {', '.join(PRESETS)}") from None
