"""Top-k class predictions."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from .errors import ModelError
from .models.model import Model


@dataclass(frozen=True)
class Prediction:
    index: int
    label: str
    prob: float

    def to_json(self) -> dict:
        return asdict(self)


def probabilities(model: Model, x: torch.Tensor) -> torch.Tensor:
    """Class probabilities (N, classes) for a preprocessed batch."""
    with torch.no_grad():
        out = model.net(x)
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelError(f"the model's output has shape {shape}; predictions need (batch, classes)")
    return out.float() if model.outputs == "probs" else out.float().softmax(dim=1)


def top_predictions(model: Model, probs: torch.Tensor, top: int = 5) -> list[Prediction]:
    """The ``top`` largest of one image's class probabilities (classes,), labelled."""
    values, indices = probs.topk(min(max(1, top), probs.numel()))
    return [Prediction(int(i), model.label(int(i)), float(v)) for v, i in zip(values, indices)]


def predict(model: Model, image, top: int = 5, resize: str | None = None) -> list[Prediction]:
    """The ``top`` most probable classes for one image (path, PIL image, array, or preprocessed tensor)."""
    return top_predictions(model, probabilities(model, model.input(image, resize))[0], top)
