"""Backward passes from a unit to the input (and to any layer): plain gradient, deconv, guided backprop.

The modes' rectifier rules live in :mod:`deepvis.engine.rules`, the instrumented passes (:class:`Trace`) in
:mod:`deepvis.engine.trace`; this module is the one-image entry point (:func:`backprop`) and its batched core, and
re-exports the names of the other two, whose old home it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from deepvis.core.units import Unit, parse_unit
from deepvis.engine.rules import MODES, RULES, Mode, RectifierRules, rectifier_rules
from deepvis.engine.rules import _RECTIFIERS, _arg  # noqa: F401  (receptive fields import them from here)
from deepvis.engine.trace import SIGNALS, Backward, Signal, Start, Trace, start_signal, trace
from deepvis.models.model import Model, as_model
from deepvis.models.preprocessing import Preprocessing
from deepvis.pixels.render import back_image

__all__ = ["MODES", "RULES", "SIGNALS", "Backward", "BackpropResult", "Mode", "RectifierRules", "Signal", "Start",
           "Trace", "backprop", "backprop_batch", "rectifier_rules", "start_signal", "trace"]


@dataclass
class BackpropResult:
    """The backward pass of one unit for one image.

    ``input_grad`` is the gradient (or deconv / guided signal) at the model input, (C, H, W) in the model's
    channel order; ``layer_grads`` holds the same at requested layers (zeros for layers above the unit).
    """

    unit: Unit
    mode: str
    signal: str
    input_grad: torch.Tensor
    activation: torch.Tensor
    layer_grads: dict[str, torch.Tensor] = field(default_factory=dict)
    rectifiers_modified: int = 0
    preprocessing: Preprocessing = field(default_factory=Preprocessing, repr=False)

    def rgb_grad(self) -> np.ndarray:
        """The input gradient as (H, W, 3) in RGB channel order."""
        return self.preprocessing.to_rgb(self.input_grad.float()).permute(1, 2, 0).cpu().numpy()

    def image(self, filter: str = "raw") -> np.ndarray:
        """The input gradient rendered with a back filter (``raw``, ``gray``, ``norm``, ``normblur``): HxWx3 in [0, 1]."""
        return back_image(self.rgb_grad(), filter)


def backprop_batch(model: Model | nn.Module, x: torch.Tensor, unit: str | Unit | Sequence[str | Unit],
                   mode: Mode = "gradient", signal: Signal | torch.Tensor = "map",
                   layers: Iterable[str] = ()) -> Backward:
    """Batched core of :func:`backprop` on a preprocessed (N, C, H, W) input: one trace stopped at the unit's
    layer (or the last of ``layers``), one backward pass.

    ``unit`` may be one unit per image; ``signal`` may be a tensor of the unit layer's output shape (batch
    included): the gradient to start from, e.g. one-hots at a different position for each image.
    """
    units = parse_unit(unit) if isinstance(unit, (str, Unit)) else [parse_unit(u) for u in unit]
    layer = units.layer if isinstance(units, Unit) else units[0].layer
    layers = [name for name in dict.fromkeys(layers) if name != layer]
    return trace(model, x, [layer, *layers], mode, stop_early=True).backward(units, signal, layers,
                                                                            retain_graph=False)


def backprop(model: Model | nn.Module, image, unit: str | Unit, mode: Mode = "gradient", signal: Signal = "map",
             layers: Iterable[str] = (), resize: str | None = None) -> BackpropResult:
    """Backward pass from one unit to the input image (and to ``layers``) in ``gradient``, ``deconv`` or ``guided`` mode.

    The start signal is the unit's whole activation map (``signal='map'``, the original live view), a one-hot at
    its spatial maximum (``'argmax'``), or a one-hot at the unit's own ``@y,x`` position when it has one.
    """
    model = as_model(model)
    unit = parse_unit(unit)
    layers = list(layers)
    x = model.input(image, resize)[:1]
    result = backprop_batch(model, x, unit, mode, signal, layers)
    layer_grads = dict(result.layer_grads)
    if unit.layer in layers:
        layer_grads[unit.layer] = start_signal(result.activation, unit, signal)
    signal_used = f"onehot@{unit.position[0]},{unit.position[1]}" if unit.position else signal
    return BackpropResult(unit=unit, mode=mode, signal=signal_used, input_grad=result.input_grad[0],
                          activation=result.activation[0], layer_grads={k: v[0] for k, v in layer_grads.items()},
                          rectifiers_modified=result.rectifiers_modified, preprocessing=model.preprocessing)
