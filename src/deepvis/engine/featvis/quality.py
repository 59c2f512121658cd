"""What the quality measures of feature visualizations are computed from (``deepvis evaluate`` and accentuation
share them): the penultimate features and path layers of a model, rank correlation, the power spectrum's slope."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from deepvis.engine.probe import Probe, default_layers, layer_info
from deepvis.models.model import Model


def penultimate_layer(model: Model) -> str:
    """The input of the classifier: the default layer before the first one with one channel per label (the
    logits), else the second-to-last layer."""
    names = default_layers(model)
    labels = len(model.labels or [])
    for before, name in zip(names, names[1:]):
        if labels and layer_info(model, name).shape[0] == labels and len(layer_info(model, name).shape) == 1:
            return before
    return model.layer_names()[-2]


def path_layers(model: Model) -> list[str]:
    """The default layers with a spatial map (C, H, W), H * W > 1: the path an image takes."""
    out = []
    for name in default_layers(model):
        shape = layer_info(model, name).shape
        if len(shape) == 3 and shape[1] * shape[2] > 1:
            out.append(name)
    return out


def spectral_slope(image: np.ndarray) -> float:
    """The slope of log power against log spatial frequency (radially averaged, grey levels, frequencies from 2
    cycles per image to 0.4 of Nyquist... up to the largest full ring): about -2 for natural images."""
    grey = np.asarray(image, np.float64)
    if grey.ndim == 3:
        grey = grey.mean(axis=2)
    grey = grey - grey.mean()
    h, w = grey.shape
    window = np.outer(np.hanning(h), np.hanning(w))
    power = np.abs(np.fft.fftshift(np.fft.fft2(grey * window))) ** 2
    yy, xx = np.indices((h, w))
    radius = np.hypot(yy - h // 2, xx - w // 2).astype(int)
    counts = np.bincount(radius.ravel())
    sums = np.bincount(radius.ravel(), power.ravel())
    top = min(h, w) // 2
    r = np.arange(2, top)
    ring = sums[r] / np.maximum(counts[r], 1)
    keep = ring > 0
    if keep.sum() < 2:
        return 0.0
    return float(np.polyfit(np.log(r[keep]), np.log(ring[keep]), 1)[0])


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)).astype(np.float64), np.argsort(np.argsort(b)).astype(np.float64)
    ra -= ra.mean()
    rb -= rb.mean()
    denominator = np.sqrt((ra ** 2).sum() * (rb ** 2).sum())
    return float((ra * rb).sum() / denominator) if denominator > 0 else 0.0


class Features:
    """One forward pass per batch of (H, W, 3) [0, 1] images: the penultimate features, the per-channel means of
    the path layers, and the target layer's channel maxima."""

    def __init__(self, model: Model, layer: str):
        self.model, self.layer = model, layer
        self.penultimate, self.path = penultimate_layer(model), path_layers(model)
        self.forwards = 0

    def __call__(self, images: Sequence[np.ndarray], batch: int = 16) -> dict[str, torch.Tensor]:
        pre = self.model.preprocessing
        size = tuple(pre.input_size)
        out: dict[str, list] = {"features": [], "path": [], "channel_max": []}
        layers = list(dict.fromkeys(self.path + [self.penultimate, self.layer]))
        for start in range(0, len(images), batch):
            chunk = []
            for image in images[start:start + batch]:
                x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1)
                if tuple(x.shape[1:]) != size:
                    x = F.interpolate(x[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0]
                chunk.append(x)
            x = pre.normalize(torch.stack(chunk).to(self.model.device))
            with torch.no_grad(), Probe(self.model, layers, stop_early=True) as probe:
                probe.run(x)
            self.forwards += len(chunk)
            out["features"].append(probe[self.penultimate].reshape(len(chunk), -1).float().cpu())
            out["path"].append([probe[name].reshape(len(chunk), probe[name].shape[1], -1).mean(2).float().cpu()
                                for name in self.path])
            acts = probe[self.layer]
            out["channel_max"].append(acts.reshape(len(chunk), acts.shape[1], -1).amax(2).float().cpu())
        return {"features": torch.cat(out["features"]),
                "path": [torch.cat([p[i] for p in out["path"]]) for i in range(len(self.path))],
                "channel_max": torch.cat(out["channel_max"])}


def leave_one_out(vectors: torch.Tensor) -> float:
    """The mean cosine similarity between different rows of unit ``vectors``."""
    k = len(vectors)
    similarity = vectors @ vectors.T
    return float((similarity.sum() - similarity.diagonal().sum()) / max(k * (k - 1), 1))


def path_similarity(one: list[torch.Tensor], index: int, reference: list[torch.Tensor]) -> float:
    return float(np.mean([spearman(layer[index].numpy(), ref.numpy()) for layer, ref in zip(one, reference)]))
