"""An input of the live toolbox: one image as the network sees it, with its forward pass; and the error for an input
id the toolbox no longer holds."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from deepvis.core.errors import DeepvisError
from deepvis.engine.attention import AttentionMaps
from deepvis.engine.predict import Prediction

__all__ = ["Input", "InputNotFound"]


class InputNotFound(DeepvisError, LookupError):
    """An input id the live toolbox no longer holds (dropped from its cache, or never sent): the app answers 404."""


@dataclass
class Input:
    """One image as the network sees it, with its forward pass."""

    id: str
    name: str
    image: Image.Image  # fitted to the input size, RGB
    x: torch.Tensor  # (1, C, H, W) on the model's device
    activations: dict[str, torch.Tensor]  # default layers, no batch dim, on the CPU
    predictions: list[Prediction]
    forward_ms: float
    nbytes: int = 0
    attention: AttentionMaps | None = None  # recorded in its forward pass when the last view showed attention
    _maxima: dict = field(default_factory=dict, repr=False)

    def channel_maxima(self, layer: str) -> tuple[np.ndarray, list]:
        """Each channel's largest activation at ``layer``: as numbers, and rounded for the page (None where not
        finite); computed once per input and layer (in NumPy: no torch threads woken for a small reduction)."""
        found = self._maxima.get(layer)
        if found is None:
            acts = self.activations[layer]
            maxima = acts.reshape(acts.shape[0], -1).numpy().max(axis=1)
            rounded = np.round(maxima.astype(np.float64), 4)
            shown = rounded.tolist()
            for index in np.flatnonzero(~np.isfinite(rounded)).tolist():
                shown[index] = None
            found = maxima, shown
            self._maxima[layer] = found
        return found

    def info(self) -> dict:
        """What the page is told of a new input: its id, name, forward time and predictions."""
        return {"input": self.id, "name": self.name, "forward_ms": round(self.forward_ms, 2),
                "predictions": [p.to_json() for p in self.predictions]}
