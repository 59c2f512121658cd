"""MACO (Fel et al., NeurIPS 2023, "Unlocking Feature Visualization for Deeper Networks with MAgnitude Constrained
Optimization"): only the Fourier *phase* of the image is optimized; its magnitude is fixed to the average spectrum
of natural images -- here the user's own images (a store's find-max images, or the bundled photos), never a
download. The image is a canvas larger than the model's input; every step sees several random crops of it (plus
a little noise), batched over units and crops; NAdam does the ascent. The accumulated ``|d objective / d canvas|``
is a transparency (attribution) map: where on the canvas the unit looked.

Batched: one canvas per target; every crop of a batch is evaluated in one forward pass."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from deepvis.core.errors import DeepvisError
from deepvis.models.model import Model
from deepvis.pixels.images import load_image
from deepvis.pixels.samples import sample_images
from deepvis.engine.featvis.diversity import diversity_term
from deepvis.engine.featvis import loop
from deepvis.engine.featvis.modern import COLOR_CORRELATION_SQRT
from deepvis.engine.featvis.objectives import Target, evaluate
from deepvis.engine.featvis.result import OptimizeResult


@dataclass(frozen=True)
class MacoParams:
    """Settings of MACO. ``canvas`` is the side of the optimized image as a multiple of the model's input side;
    each step takes ``crops`` random crops of ``crop_size`` (min, max) of the canvas side, their centres at most
    ``spread`` of the side from the canvas centre at the first step and ``spread_end`` at the last (linearly between;
    None: ``spread`` throughout), resized to the input size, with Gaussian ``noise`` added.
    ``push_dir`` +1 maximizes, -1 minimizes."""

    steps: int = field(default=512, metadata={"help": "NAdam steps", "min": 1})
    lr: float = field(default=0.3, metadata={"help": "NAdam learning rate (of the phase, radians)"})
    canvas: float = field(default=1.5, metadata={"help": "canvas side as a multiple of the input side"})
    crops: int = field(default=4, metadata={"help": "random crops of the canvas per step", "min": 1})
    crop_size: tuple[float, float] = (0.5, 0.8)
    spread: float = field(default=0.5, metadata={
        "help": "how far a crop's centre may lie from the canvas centre at the first step, a fraction of the canvas "
                "side (0.5: anywhere a crop fits; 0: every crop centred, so a unit objective's feature stays at the "
                "centre)"})
    spread_end: float | None = field(default=0.0, metadata={
        "help": "the spread at the last step, reached linearly from --spread (the same value: one spread "
                "throughout); by default the crops end centred"})
    noise: float = field(default=0.05, metadata={"help": "Gaussian noise added to each crop"})
    contrast: float = field(default=1.0, metadata={"help": "scale of the standardized image before the sigmoid"})
    copies: int = field(default=1, metadata={"help": "images per unit", "min": 1})
    diversity: float = field(default=0.0, metadata={"help": "weight of the diversity term across copies"})
    seed: int = field(default=0, metadata={"help": "random seed of the start phase and the crops"})
    push_dir: float = 1.0

    def __post_init__(self) -> None:
        if self.push_dir not in (1, -1):
            raise DeepvisError(f"push_dir must be +1 (maximize) or -1 (minimize), got {self.push_dir}")
        if self.spread_end is not None and self.spread_end == self.spread:  # constant: recorded as before
            object.__setattr__(self, "spread_end", None)
        spreads = (self.spread,) if self.spread_end is None else (self.spread, self.spread_end)
        if not all(math.isfinite(v) for v in (self.lr, self.canvas, self.noise, self.contrast, *spreads,
                                              *self.crop_size)):
            raise DeepvisError("lr, canvas, noise, contrast, spread and crop_size must be finite numbers")
        if not all(0 <= v <= 0.5 for v in spreads):
            raise DeepvisError(f"spread and spread_end must be between 0 (crops centred) and 0.5 (anywhere), got "
                               f"{', '.join(map(str, spreads))}")
        if self.steps < 1 or self.crops < 1 or self.copies < 1 or self.lr <= 0 or self.canvas < 1 or \
                self.noise < 0 or self.diversity < 0 or self.contrast <= 0:
            raise DeepvisError("steps, crops and copies must be >= 1, lr > 0, canvas >= 1, contrast > 0, noise and "
                               "diversity >= 0")
        if self.diversity > 0 and self.copies < 2:
            raise DeepvisError("the diversity term compares several images of a unit: give copies >= 2")
        if not 0 < self.crop_size[0] <= self.crop_size[1] <= 1:
            raise DeepvisError(f"crop_size must be (min, max) with 0 < min <= max <= 1, got {self.crop_size}")

    def with_(self, **changes) -> "MacoParams":
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_json(self) -> dict:
        data = asdict(self)
        data["crop_size"] = list(self.crop_size)
        if self.spread == 0.5:  # as before the setting existed: earlier stores' units stay done
            del data["spread"]
        if self.spread_end is None:
            del data["spread_end"]
        return data

    def canvas_size(self, input_size: tuple[int, int]) -> tuple[int, int]:
        return int(round(input_size[0] * self.canvas)), int(round(input_size[1] * self.canvas))


def _color_matrix() -> torch.Tensor:
    matrix = COLOR_CORRELATION_SQRT
    return matrix / matrix.norm(dim=0).max()


def natural_spectrum(images: Sequence, size: tuple[int, int]) -> np.ndarray:
    """The mean Fourier magnitude, (3, H, W // 2 + 1) float32, of ``images`` (paths or PIL images) resized to
    ``size``, each decorrelated (the inverse of the colour matrix the parameterization recorrelates with) and
    standardized: the fixed magnitude of MACO's images."""
    height, width = size
    inverse = torch.linalg.inv(_color_matrix())
    total, count = None, 0
    for source in images:
        picture = load_image(source).resize((width, height))
        x = torch.from_numpy(np.asarray(picture, np.float32) / 255.0).permute(2, 0, 1).double()
        x = torch.einsum("ij,jhw->ihw", inverse.double(), x)
        x = (x - x.mean(dim=(1, 2), keepdim=True)) / (x.std() + 1e-8)
        magnitude = torch.fft.rfft2(x).abs()
        total = magnitude if total is None else total + magnitude
        count += 1
    if not count:
        raise DeepvisError("MACO needs at least one natural image to estimate its spectrum from")
    return (total / count).float().numpy()


_SAMPLE_SPECTRA: dict[tuple[int, int], np.ndarray] = {}


def sample_spectrum(size: tuple[int, int]) -> np.ndarray:
    """The spectrum of the bundled photos (``deepvis.sample_images()``) at ``size``, computed once per process."""
    if size not in _SAMPLE_SPECTRA:
        _SAMPLE_SPECTRA[size] = natural_spectrum(sample_images(), size)
    return _SAMPLE_SPECTRA[size]


class PhaseImage(torch.nn.Module):
    """A batch of RGB canvases in [0, 1] with a fixed magnitude spectrum and learnable phases: ``irfft2`` of
    ``magnitude * exp(i phase)``, standardized (times ``contrast``), colours recorrelated, sigmoid. The magnitude
    is a buffer."""

    def __init__(self, count: int, magnitude: torch.Tensor, height: int, width: int, generator: torch.Generator,
                 contrast: float = 1.0):
        super().__init__()
        self.height, self.width, self.contrast = height, width, contrast
        self.register_buffer("magnitude", magnitude.clone())
        self.register_buffer("color", _color_matrix())
        self.phase = torch.nn.Parameter((torch.rand((count,) + tuple(magnitude.shape), generator=generator) * 2 - 1)
                                        * math.pi)

    def forward(self) -> torch.Tensor:
        spectrum = torch.polar(self.magnitude.expand_as(self.phase), self.phase)
        image = torch.fft.irfft2(spectrum, s=(self.height, self.width))
        image = image - image.mean(dim=(1, 2, 3), keepdim=True)
        image = image * (self.contrast / (image.std(dim=(1, 2, 3), keepdim=True) + 1e-8))
        image = torch.einsum("ij,njhw->nihw", self.color, image)
        return torch.sigmoid(image)


def random_crops(canvas: torch.Tensor, count: int, size: tuple[float, float], out: tuple[int, int],
                 generator: torch.Generator, spread: float = 0.5) -> torch.Tensor:
    """(N * count, 3, *out): ``count`` random square-ish crops of each canvas (side a random fraction in ``size``
    of the canvas side; centre at most ``spread`` of the side from the canvas centre, and the crop inside the
    canvas), resized to ``out``; crop ``c`` of canvas ``n`` is row ``n * count + c``."""
    n = canvas.shape[0]
    total = n * count
    fraction = size[0] + torch.rand(total, generator=generator) * (size[1] - size[0])
    room = (1 - fraction).clamp(max=2 * spread)  # grid units: the canvas side is 2
    centre = (torch.rand(total, 2, generator=generator) * 2 - 1) * room[:, None]
    zeros = torch.zeros(total)
    theta = torch.stack([torch.stack([fraction, zeros, centre[:, 1]], 1),
                         torch.stack([zeros, fraction, centre[:, 0]], 1)], 1).to(canvas)
    grid = F.affine_grid(theta, [total, 3, out[0], out[1]], align_corners=False)
    source = canvas.repeat_interleave(count, dim=0)
    return F.grid_sample(source, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def centre_crop(canvas: torch.Tensor, fraction: float, size: tuple[int, int]) -> torch.Tensor:
    """The canvas's centre crop of ``fraction`` of its side, at ``size``: the scale the network saw it at during
    the run (the mean crop size), which is what is saved and scored."""
    squeeze = canvas.dim() == 3
    x = canvas[:, None] if squeeze else canvas
    h, w = x.shape[-2:]
    ch, cw = max(1, int(round(h * fraction))), max(1, int(round(w * fraction)))
    top, left = (h - ch) // 2, (w - cw) // 2
    x = x[..., top:top + ch, left:left + cw]
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
    return x[:, 0] if squeeze else x


def optimize_maco(model: Model, targets: Sequence[Target], params: MacoParams,
                  on_step: Callable[[int], None] | None = None, spectrum: np.ndarray | None = None
                  ) -> list[OptimizeResult]:
    """Optimize one canvas per target with MACO (all targets and all their crops in one batch per step).

    ``spectrum``: the fixed magnitude, (3, H, W // 2 + 1) for the canvas size (:func:`natural_spectrum`); by
    default that of the bundled photos. The steps run in :func:`loop.ascend`. Each result's ``alpha`` is the
    transparency map (H, W) in [0, 1]."""
    pre = model.preprocessing
    size = tuple(pre.input_size)
    height, width = params.canvas_size(size)
    if spectrum is None:
        spectrum = sample_spectrum((height, width))
    magnitude = torch.as_tensor(np.asarray(spectrum), dtype=torch.float32)
    if tuple(magnitude.shape) != (3, height, width // 2 + 1):
        raise DeepvisError(f"the MACO spectrum has shape {tuple(magnitude.shape)}, the canvas needs "
                           f"{(3, height, width // 2 + 1)}")
    device = model.device
    generator = torch.Generator().manual_seed(int(params.seed))
    copies = params.copies
    canvases = [t for t in targets for _ in range(copies)]
    image = PhaseImage(len(canvases), magnitude, height, width, generator, params.contrast).to(device)
    alpha = torch.zeros(len(canvases), height, width, device=device)

    steps_taken = [0]

    def spread() -> float:
        """This step's spread: constant, or linear from ``spread`` (first step) to ``spread_end`` (last step)."""
        if params.spread_end is None or params.steps == 1:
            return params.spread
        share = min(steps_taken[0], params.steps - 1) / (params.steps - 1)
        return params.spread + share * (params.spread_end - params.spread)

    def views(canvas: torch.Tensor) -> torch.Tensor:
        crops = random_crops(canvas, params.crops, params.crop_size, size, generator, spread())
        steps_taken[0] += 1
        if params.noise:
            crops = crops + params.noise * torch.randn(crops.shape, generator=generator).to(crops)
        return pre.normalize(crops)

    def on_gradient(canvas: torch.Tensor, _evaluation) -> None:
        alpha.add_(canvas.grad.detach().abs().sum(1))  # where the objective looked: the transparency map

    ascent = loop.Ascent(image, views, [t for t in canvases for _ in range(params.crops)],
                         torch.optim.NAdam(image.parameters(), lr=params.lr),
                         terms=[diversity_term(params.diversity, copies, params.crops)] if params.diversity else (),
                         on_gradient=on_gradient)
    steps = loop.ascend(model, ascent, params.steps, on_step)
    history = [values.view(len(canvases), params.crops).mean(1) for values in steps]  # each canvas's mean
    with torch.no_grad():
        fraction = sum(params.crop_size) / 2
        final = centre_crop(image(), fraction, size)
        values = evaluate(model, pre.normalize(final), canvases).values
    results = []
    for i, target in enumerate(targets):
        rows = list(range(i * copies, (i + 1) * copies))
        pictures = [final[r].permute(1, 2, 0).float().cpu().numpy() for r in rows]
        a = alpha[rows[0]] / alpha[rows[0]].max().clamp(min=1e-12)
        a = centre_crop(a[None], fraction, size)[0].cpu().numpy()
        record = {"ii": list(range(params.steps)), "obj": [float(h[rows[0]]) for h in history],
                  "final_obj": [float(values[r]) for r in rows]}
        first = record["final_obj"][0]
        record.update(best_obj=first, best_ii=params.steps, last_obj=first, meta_result="done", canvas=[height, width])
        results.append(OptimizeResult(target, "maco", pictures[0], pictures[0], pictures[0], record, params.to_json(),
                                      extra_images=pictures[1:], alpha=a))
    return results


def store_spectrum(model: Model, params: MacoParams, store) -> np.ndarray:
    """The spectrum MACO uses when optimizing into ``store``: the one saved there for this canvas size, else the
    mean spectrum of the store's find-max images (or of the bundled photos when it has none), saved there."""
    size = params.canvas_size(tuple(model.preprocessing.input_size))
    saved = store.read_spectrum()
    if saved is not None and tuple(saved["magnitude"].shape) == (3, size[0], size[1] // 2 + 1):
        return saved["magnitude"]
    files, source = [], "sample_images"
    if store.manifest_path.is_file():
        manifest = store.read_manifest()
        root = Path(manifest.image_root)
        files = [root / name for name in store.read_image_list()]
        files = [f for f in files if f.is_file()]
        source = str(root)
    if files:
        step = max(1, len(files) // 256)  # at most ~256 images: the mean converges quickly
        magnitude = natural_spectrum(files[::step], size)
    else:
        magnitude = sample_spectrum(size)
    store.write_spectrum(magnitude, {"source": source, "images": len(files[::max(1, len(files) // 256)])
                                     if files else 4, "canvas": list(size)})
    return magnitude
