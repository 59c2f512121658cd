"""The modern recipe (Olah et al. 2017, Lucid): the image lives in a scaled Fourier basis with decorrelated colour,
every step sees a randomly jittered, scaled and rotated copy, and Adam does the ascent. Optional diversity term
across several images of the same target. Batched: one (or ``copies``) image per target."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from deepvis.core.errors import DeepvisError
from deepvis.models.model import Model
from deepvis.engine.featvis.diversity import diversity_term
from deepvis.engine.featvis import loop
from deepvis.engine.featvis.objectives import Target, evaluate
from deepvis.engine.featvis.result import OptimizeResult

#: The input size the transformations' pixel amounts (``jitter``) are given for; other sizes scale them.
REFERENCE_SIZE = 224

#: Square root of the colour correlation of ImageNet pixels (as Lucid measured it): decorrelated -> RGB.
COLOR_CORRELATION_SQRT = torch.tensor([[0.26, 0.09, 0.02],
                                       [0.27, 0.00, -0.05],
                                       [0.27, -0.09, 0.03]])


@dataclass(frozen=True)
class ModernParams:
    """Settings of the modern recipe. ``jitter`` in pixels of a 224-pixel input (:data:`REFERENCE_SIZE`: on a
    28-pixel input the default 8 becomes 1), ``scale`` a (min, max) zoom, ``rotate`` in degrees -- relative
    amounts, the same at every input size; ``push_dir`` +1 maximizes, -1 minimizes. A field whose metadata has ``help`` is a command-line flag (a ``True``
    boolean as ``--no-NAME``, which the help describes)."""

    steps: int = field(default=512, metadata={"help": "Adam steps", "min": 1})
    lr: float = field(default=0.05, metadata={"help": "Adam learning rate"})
    fourier: bool = field(default=True, metadata={"help": "optimize plain pixels instead of a Fourier spectrum"})
    decorrelate: bool = field(default=True, metadata={"help": "no colour decorrelation"})
    init_sd: float = 0.01
    decay_power: float = 1.0
    jitter: int = field(default=8, metadata={"help": "random shift, pixels of a 224-pixel input (scaled with the "
                                                     "input's size)"})
    scale: tuple[float, float] = (0.9, 1.1)
    rotate: float = field(default=10.0, metadata={"help": "random rotation, degrees"})
    copies: int = field(default=1, metadata={"help": "images per unit", "min": 1})
    diversity: float = field(default=0.0, metadata={"help": "weight of the diversity term across copies"})
    seed: int = field(default=0, metadata={"help": "random seed of the start image"})
    push_dir: float = 1.0

    def __post_init__(self) -> None:
        if self.push_dir not in (1, -1):
            raise DeepvisError(f"push_dir must be +1 (maximize) or -1 (minimize), got {self.push_dir}")
        numbers = (self.lr, self.init_sd, self.decay_power, self.rotate, self.diversity, *self.scale)
        if not all(math.isfinite(v) for v in numbers):
            raise DeepvisError("lr, rotate, diversity, scale and the spectrum settings must be finite numbers")
        if self.steps < 1 or self.copies < 1 or self.lr <= 0 or self.jitter < 0 or self.rotate < 0 or \
                self.diversity < 0:
            raise DeepvisError("steps and copies must be >= 1, lr > 0, jitter, rotate and diversity >= 0")
        if self.diversity > 0 and self.copies < 2:
            raise DeepvisError("the diversity term compares several images of a unit: give copies >= 2")
        if not 0 < self.scale[0] <= self.scale[1]:
            raise DeepvisError(f"scale must be (min, max) with 0 < min <= max, got {self.scale}")

    def with_(self, **changes) -> "ModernParams":
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_json(self) -> dict:
        data = asdict(self)
        data["scale"] = list(self.scale)
        return data


class FourierImage(torch.nn.Module):
    """A batch of RGB images in [0, 1] made from learnable spectra, with 1/f scaling (all frequencies learn at a
    similar speed) and a fixed colour decorrelation; plain pixels when ``fourier`` / ``decorrelate`` are off."""

    def __init__(self, count: int, height: int, width: int, params: ModernParams, generator: torch.Generator):
        super().__init__()
        self.height, self.width, self.params = height, width, params
        if params.fourier:
            freq_y = torch.fft.fftfreq(height)[:, None]
            freq_x = torch.fft.rfftfreq(width)[None, :]
            freq = torch.sqrt(freq_y**2 + freq_x**2)
            scale = 1.0 / torch.clamp(freq, min=1.0 / max(height, width)) ** params.decay_power
            self.register_buffer("spectrum_scale", scale * math.sqrt(height * width))
            shape = (count, 3, height, width // 2 + 1, 2)
        else:
            shape = (count, 3, height, width)
        self.raw = torch.nn.Parameter(torch.randn(shape, generator=generator) * params.init_sd)

    def forward(self) -> torch.Tensor:
        if self.params.fourier:
            spectrum = torch.view_as_complex(self.raw) * self.spectrum_scale
            image = torch.fft.irfft2(spectrum, s=(self.height, self.width)) / 4.0
        else:
            image = self.raw
        if self.params.decorrelate:
            matrix = COLOR_CORRELATION_SQRT.to(image.device)
            matrix = matrix / matrix.norm(dim=0).max()
            image = torch.einsum("ij,njhw->nihw", matrix, image)
        return torch.sigmoid(image)


def jitter_pixels(params: ModernParams, height: int, width: int) -> float:
    """The random shift's largest size in this input's pixels: ``jitter`` is given for a 224-pixel input."""
    return params.jitter * min(height, width) / REFERENCE_SIZE


def random_transform(images: torch.Tensor, params: ModernParams, generator: torch.Generator) -> torch.Tensor:
    """Each image jittered, scaled and rotated by its own random amounts, at the same size (reflected borders);
    the jitter scaled to the image's size (:func:`jitter_pixels`)."""
    n, _, h, w = images.shape
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(params.rotate)
    zoom = params.scale[0] + torch.rand(n, generator=generator) * (params.scale[1] - params.scale[0])
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * jitter_pixels(params, h, w)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos, -sin * h / w, shift[:, 1] * 2 / w], 1),
                         torch.stack([sin * w / h, cos, shift[:, 0] * 2 / h], 1)], 1).to(images)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def optimize_modern(model: Model, targets: Sequence[Target], params: ModernParams,
                    on_step: Callable[[int], None] | None = None) -> list[OptimizeResult]:
    """Optimize ``params.copies`` images per target with the modern recipe (all in one batch, :func:`loop.ascend`)."""
    pre = model.preprocessing
    height, width = pre.input_size
    device = model.device
    expanded = [t for t in targets for _ in range(params.copies)]
    generator = torch.Generator().manual_seed(int(params.seed))
    image = FourierImage(len(expanded), height, width, params, generator).to(device)
    ascent = loop.Ascent(image, lambda images: pre.normalize(random_transform(images, params, generator)), expanded,
                         torch.optim.Adam(image.parameters(), lr=params.lr),
                         terms=[diversity_term(params.diversity, params.copies)] if params.diversity else ())
    history = loop.ascend(model, ascent, params.steps, on_step)
    with torch.no_grad():
        final = image()
        values = evaluate(model, pre.normalize(final), expanded).values
    results = []
    for i, target in enumerate(targets):
        rows = list(range(i * params.copies, (i + 1) * params.copies))
        pictures = [final[r].permute(1, 2, 0).float().cpu().numpy() for r in rows]
        record = {"ii": list(range(params.steps)), "obj": [float(h[rows[0]]) for h in history],
                  "final_obj": [float(values[r]) for r in rows]}
        record.update(best_obj=record["final_obj"][0], best_ii=params.steps, last_obj=record["final_obj"][0],
                      meta_result="done")
        results.append(OptimizeResult(target, "modern", pictures[0], pictures[0], pictures[0], record, params.to_json(),
                                      extra_images=pictures[1:]))
    return results
