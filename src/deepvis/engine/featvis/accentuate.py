"""Feature accentuation (Hamblin et al. 2024, "Feature Accentuation: Revealing 'What' Features Respond to in
Natural Images"): start from a real image and change it only as much as needed to excite a unit -- the image
lives in the same Fourier parameterization as the modern recipe (colour-decorrelated, 1/f-scaled spectrum, sigmoid),
initialized to reproduce the image exactly, with an L2 pull back toward it; every step sees a few random crops.
The result shows what in *this* image drives the unit. The path-similarity check (Geirhos et al. 2024) compares
the per-layer activations of the accentuated image with the original's: a high rank correlation means it still
takes the natural image's path through the network.

>>> result = deepvis.accentuate(model, "cat.jpg", "blocks.10:7")
>>> result.before, result.after, result.distance, result.path_similarity
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
import numpy as np
import torch

from deepvis.core.errors import DeepvisError
from deepvis.models.model import Model
from deepvis.pixels.images import load_image
from deepvis.engine.probe import Probe
from deepvis.engine.featvis.quality import path_layers, spearman
from deepvis.engine.featvis.maco import random_crops
from deepvis.engine.featvis.modern import COLOR_CORRELATION_SQRT
from deepvis.engine.featvis import loop
from deepvis.engine.featvis.objectives import Combination, Target, evaluate, make_target


@dataclass
class AccentuationResult:
    """``image`` the accentuated image and ``original`` the start, (H, W, 3) in [0, 1] at the model's input size;
    ``before`` / ``after`` the objective on each; ``distance`` the RMS pixel change (0-1 scale);
    ``path_similarity`` the mean Spearman correlation of per-layer channel means (accentuated vs original);
    ``record`` the per-step objective and settings."""

    target: Target | Combination
    image: np.ndarray
    original: np.ndarray
    before: float
    after: float
    distance: float
    path_similarity: float
    record: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"target": self.target.to_json(), "before": self.before, "after": self.after,
                "distance": self.distance, "path_similarity": self.path_similarity, "record": self.record}


def _color() -> torch.Tensor:
    matrix = COLOR_CORRELATION_SQRT
    return matrix / matrix.norm(dim=0).max()


def accentuate(model: Model, image, unit: str, objective: str | None = None, steps: int = 64, lr: float = 0.05,
               reg: float = 20.0, crops: int = 2, crop_size: tuple[float, float] = (0.85, 1.0), noise: float = 0.02,
               seed: int = 0) -> AccentuationResult:
    """Accentuate ``unit`` in ``image`` (a path, PIL image or array; fitted to the model's input size).

    ``objective``: ``unit`` (one position; the default when the unit names ``@y,x``) or ``channel`` (the
    channel's mean; the default otherwise). ``unit`` may combine two units, ``"A - B"``, ``"A + B"`` or ``"A * B"``
    (:class:`objectives.Combination`; each part's objective as for a single unit). The loss is
    ``-objective / (|before| + 1) + reg * mean((x - x0)^2)`` (the objective scaled by its start so one ``reg`` fits
    units of any scale); Adam on the spectrum, in the shared loop (:func:`loop.ascend`)."""
    if steps < 1 or lr <= 0 or reg < 0 or crops < 1 or not 0 < crop_size[0] <= crop_size[1] <= 1:
        raise DeepvisError("steps and crops must be >= 1, lr > 0, reg >= 0, 0 < crop_size min <= max <= 1")
    target = make_target(model, unit, objective)
    objective_kind = objective or target.kind
    pre = model.preprocessing
    device = model.device
    size = tuple(pre.input_size)
    original = torch.from_numpy(np.asarray(pre.fit(load_image(image), "stretch"), np.float32) / 255.0).permute(2, 0, 1)
    original = original.to(device)[None]
    color = _color().to(device)
    height, width = size
    # the pre-sigmoid, decorrelated image whose spectrum reproduces the original exactly
    z = torch.logit(original.clamp(1e-3, 1 - 1e-3))
    z = torch.einsum("ij,njhw->nihw", torch.linalg.inv(color), z)
    freq = torch.sqrt(torch.fft.fftfreq(height, device=device)[:, None] ** 2 +
                      torch.fft.rfftfreq(width, device=device)[None, :] ** 2)
    scale = 1.0 / torch.clamp(freq, min=1.0 / max(height, width))
    spectrum = torch.view_as_real(torch.fft.rfft2(z) / scale)
    spectrum_image = SpectrumImage(spectrum, scale, color, size)
    with torch.no_grad():
        start_pixels = spectrum_image()

    def values_of(pixels: torch.Tensor) -> torch.Tensor:
        return evaluate(model, pre.normalize(pixels), [target] * pixels.shape[0]).values

    with torch.no_grad():
        before = float(values_of(original)[0])
    generator = torch.Generator().manual_seed(int(seed))

    def views(pixels: torch.Tensor) -> torch.Tensor:
        views = random_crops(pixels, crops, crop_size, size, generator)
        if noise:
            views = views + noise * torch.randn(views.shape, generator=generator).to(views)
        return pre.normalize(views)

    norm = abs(before) + 1.0
    ascent = loop.Ascent(spectrum_image, views, [target] * crops,
                         torch.optim.Adam(spectrum_image.parameters(), lr=lr),
                         objective=lambda values: -(values.mean() * target.sign) / norm,
                         terms=[lambda pixels, _evaluation: reg * ((pixels - start_pixels) ** 2).mean()])
    history = [float(values.mean()) for values in loop.ascend(model, ascent, steps)]
    with torch.no_grad():
        final = spectrum_image()
        after = float(values_of(final)[0])
        distance = float(((final - original) ** 2).mean().sqrt())
        similarity = path_similarity(model, final, original)
    return AccentuationResult(target, final[0].permute(1, 2, 0).cpu().numpy(),
                              original[0].permute(1, 2, 0).cpu().numpy(), before, after, distance, similarity,
                              {"obj": history, "steps": steps, "lr": lr, "reg": reg, "crops": crops,
                               "crop_size": list(crop_size), "noise": noise, "seed": seed, "objective": objective_kind})


class SpectrumImage(torch.nn.Module):
    """One image from a learnable spectrum ``raw`` (real view of the complex rfft2), 1/f ``scale``d, colours
    recorrelated by ``color``, sigmoid: the modern recipe's parameterization, started from a given spectrum."""

    def __init__(self, spectrum: torch.Tensor, scale: torch.Tensor, color: torch.Tensor, size: tuple[int, int]):
        super().__init__()
        self.raw = torch.nn.Parameter(spectrum.clone())
        self.register_buffer("scale", scale)
        self.register_buffer("color", color)
        self.size = size

    def forward(self) -> torch.Tensor:
        z = torch.fft.irfft2(torch.view_as_complex(self.raw) * self.scale, s=self.size)
        return torch.sigmoid(torch.einsum("ij,njhw->nihw", self.color, z))


def path_similarity(model: Model, a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over the model's default conv layers of the Spearman correlation between the per-channel means of two
    (1, 3, H, W) [0, 1] images."""
    layers = path_layers(model)
    x = model.preprocessing.normalize(torch.cat([a, b]))
    with torch.no_grad(), Probe(model, layers, stop_early=True) as probe:
        probe.run(x)
    scores = []
    for name in layers:
        means = probe[name].reshape(2, probe[name].shape[1], -1).mean(2).float().cpu().numpy()
        scores.append(spearman(means[0], means[1]))
    return float(np.mean(scores)) if scores else math.nan
