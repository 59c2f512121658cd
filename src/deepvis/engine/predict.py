"""Top-k class predictions."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import torch

from deepvis.core.errors import DeepvisError, ModelError
from deepvis.engine.probe import Probe
from deepvis.models.model import Model


@dataclass(frozen=True)
class Prediction:
    index: int
    label: str
    prob: float

    def to_json(self) -> dict:
        return asdict(self)


def probabilities(model: Model, x: torch.Tensor) -> torch.Tensor:
    """Class probabilities (N, classes) for a preprocessed batch."""
    with torch.no_grad(), Probe(model, [model.prob_layer] if model.prob_layer else []) as probe:
        out = model.net(x)
    probs = output_probabilities(model, out, probe.activations)
    if probs is None:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelError(f"the model's output has shape {shape}; predictions need (batch, classes) (a config file's "
                         "prob_layer can name the layer that has them)")
    return probs


def output_probabilities(model: Model, out, activations: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """Class probabilities (N, classes) from a forward pass: the ``prob_layer``'s output (recorded in
    ``activations``) when the model names one, else the network's output (softmax of logits); None when the
    output is not (batch, classes)."""
    if model.prob_layer:
        return activations[model.prob_layer].detach().flatten(1).float()
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        return None
    out = out.detach().float()
    return out if model.outputs == "probs" else out.softmax(dim=1)


def top_predictions(model: Model, probs: torch.Tensor, top: int = 5) -> list[Prediction]:
    """The ``top`` largest of one image's class probabilities (classes,), labelled."""
    values, indices = probs.topk(min(max(1, top), probs.numel()))
    return [Prediction(int(i), model.label(int(i)), float(v)) for v, i in zip(values, indices)]


def predict_images(model: Model, images: Sequence[str], top: int = 5, resize: str | None = None,
                   on_error: Callable[[str, DeepvisError], None] | None = None) -> list[tuple[str, list[Prediction]]]:
    """:func:`predict` for each image; an image that fails is left out and reported to ``on_error`` (so one bad file
    does not stop the rest), or raises without ``on_error``."""
    results = []
    for image in images:
        try:
            results.append((image, predict(model, image, top=top, resize=resize)))
        except DeepvisError as exc:
            if on_error is None:
                raise
            on_error(image, exc)
    return results


def predict(model: Model, image, top: int = 5, resize: str | None = None) -> list[Prediction]:
    """The ``top`` most probable classes for one image (path, PIL image, array, or preprocessed tensor)."""
    return top_predictions(model, probabilities(model, model.input(image, resize))[0], top)
