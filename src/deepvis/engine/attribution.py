"""Attribution maps for any unit: the Grad-CAM family, input x gradient, SmoothGrad, integrated gradients.

Every method explains one **unit** (a class logit ``classifier:285`` is one unit like any other; ``layer:c@y,x`` a
position; ``layer:c@cls`` an extra token of a vision transformer) of any model the toolbox loads. The unit's
*score* is its value: the logit, the value at ``@y,x`` or at the token, and for a channel of a spatial layer
without a position the sum of its map. Its gradients come from :class:`deepvis.backprop.Trace` (one forward pass,
graph kept), so the rectifier rules (deconv, guided) and layer layouts (channels-last maps, tokens on their patch
grid) are the trace's: a Grad-CAM layer is read through its (C, H, W) view whatever its layout.

- ``gradcam`` (Selvaraju et al. 2017): ``relu(sum_k w_k A_k)``, ``w_k = mean_ij dS/dA_kij`` at a layer A (default:
  the last layer with a spatial view before the unit's layer, in forward order), upsampled bilinearly to the input;
- ``gradcam++`` (Chattopadhay et al. 2018): ``w_k = sum_ij a_kij relu(g_kij)``, ``a = g^2 / (2 g^2 + sum_ab A_kab g^3)``
  (g = dS/dA; the exponential-score closed form of the paper);
- ``guided-gradcam``: guided backprop at the input times the (upsampled) Grad-CAM;
- ``input-x-gradient``: ``x * dS/dx`` (x the preprocessed input);
- ``smoothgrad`` (Smilkov et al. 2017): the mean of a base mode's input signal (``gradient``, ``deconv``, ``guided``)
  over ``samples`` noisy copies ``x + N(0, (sigma (max x - min x))^2)``;
- ``integrated-gradients`` (Sundararajan et al. 2017): ``(x - b) * sum_i w_i dS/dx(b + alpha_i (x - b))`` over
  ``steps`` points of a Riemann rule (left, right, middle, trapezoid, as Captum names them) or Gauss-Legendre, from
  a baseline b (black, blurred or uniform-noise image).

The noisy copies and path points run as one batch (or chunks of ``batch_size``), never one forward pass each. The
heat map (``Attribution.map``, H x W at input resolution) of an input-space method is ``sum_c |raw_c|``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from deepvis.pixels import render
from deepvis.engine.backprop import MODES, RULES, Trace, trace
from deepvis.core.errors import DeepvisError, UnitError
from deepvis.models.model import Model, as_model
from deepvis.core.units import Unit, parse_unit

METHODS = ("gradcam", "gradcam++", "guided-gradcam", "input-x-gradient", "smoothgrad", "integrated-gradients")
#: The methods computed at a layer (Grad-CAM family): their ``layer`` setting applies.
CAM_METHODS = ("gradcam", "gradcam++", "guided-gradcam")
BASELINES = ("black", "blur", "uniform")
INTEGRATIONS = ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gausslegendre")
#: Gaussian blur sigma (pixels) of the ``blur`` baseline of integrated gradients.
BLUR_SIGMA = 10.0
#: Rows per forward pass of the batched methods. Smaller batches keep a convolution's working set in cache: on
#: EfficientNet-Lite0 (224 px, CPU) a forward + backward pass costs per row about 1.4x less at 8 rows than at 32
#: (benchmarks/bench_attribution.py); more rows per pass only add memory.
BATCH_SIZE = 8


@dataclass
class Attribution:
    """What a unit's score draws on in one input: ``map`` (H, W) float32 at the input's resolution (not scaled),
    ``raw`` the method's own tensor ((C, H, W) at the input for input-space methods, (1, h, w) at the layer for
    Grad-CAM), ``image`` the input as the model saw it (HxWx3 in [0, 1]), and how it was made."""

    map: np.ndarray
    raw: torch.Tensor | None
    method: str
    unit: Unit
    settings: dict = field(default_factory=dict)
    image: np.ndarray | None = field(default=None, repr=False)

    def overlay(self, alpha: float = 0.5) -> np.ndarray:
        """The map in jet colours (scaled to [0, 1]) over the input image: HxWx3 float in [0, 1]."""
        if self.image is None:
            raise DeepvisError("this attribution has no input image to draw over")
        return render.heat_overlay(self.image, self.map, alpha)


# ------------------------------------------------------------------------------------------------ helpers
def _order(model: Model) -> list[str]:
    """Layer names in the order their forward passes finish (the layer catalog's order)."""
    return [info.name for info in model.layers()]


def _is_spatial(shape) -> bool:
    return shape is not None and len(shape) == 3 and shape[1] * shape[2] > 1


def default_cam_layer(model: Model | nn.Module, unit: str | Unit, candidates: Iterable[str] | None = None) -> str:
    """The Grad-CAM layer of a unit: the last layer with a spatial (C, H, W) view (H * W > 1) that finishes before
    the unit's layer in forward order (among ``candidates`` when given, e.g. the layers a kept trace recorded); the
    unit's own layer when it is spatial and nothing spatial comes before it."""
    model = as_model(model)
    unit = parse_unit(unit)
    infos = {info.name: info for info in model.layers()}
    if unit.layer not in infos:
        raise UnitError(f"unknown layer '{unit.layer}'")
    allowed = set(candidates) if candidates is not None else None
    order = _order(model)
    before = order[:order.index(unit.layer)]
    for name in reversed(before):
        info = infos[name]
        if (allowed is None or name in allowed) and info.probeable and _is_spatial(info.shape):
            return name
    if _is_spatial(infos[unit.layer].shape):
        return unit.layer
    raise DeepvisError(f"no layer with a spatial map comes before '{unit.layer}': give a Grad-CAM layer")


def check_cam_layer(model: Model, unit: Unit, layer: str) -> None:
    """Raise unless ``layer`` can be a Grad-CAM layer of ``unit``: known, spatial, not after the unit's layer."""
    infos = {info.name: info for info in model.layers()}
    if layer not in infos:
        close = difflib.get_close_matches(layer, list(infos), n=3)
        raise UnitError(f"unknown layer '{layer}'" + (f"; did you mean {', '.join(map(repr, close))}?" if close else ""))
    if not _is_spatial(infos[layer].shape):
        raise DeepvisError(f"Grad-CAM needs a layer with a spatial (C, H, W) view; '{layer}' is "
                           f"{infos[layer].describe() if hasattr(infos[layer], 'describe') else infos[layer].shape}")
    order = _order(model)
    if unit.layer in order and order.index(layer) > order.index(unit.layer):
        raise DeepvisError(f"the Grad-CAM layer '{layer}' runs after the unit's layer '{unit.layer}': its "
                           "gradient is zero; give a layer before it")


def score_signal(act: torch.Tensor, unit: Unit) -> str | torch.Tensor:
    """The start signal of a unit's score at its layer's view ``act`` (batch included): a one-hot at a position or
    token (the trace's own), else ones on the unit's channel (the sum of its map; one value on vector layers)."""
    if unit.position is not None or unit.token is not None:
        return "map"
    if not 0 <= unit.channel < act.shape[1]:
        raise UnitError(f"channel {unit.channel} is out of range: layer '{unit.layer}' has {act.shape[1]} channels")
    signal = torch.zeros_like(act)
    signal[:, unit.channel] = 1.0
    return signal


def _score_backward(traced: Trace, unit: Unit, to: Sequence[str] = (), to_input: bool = True,
                    retain_graph: bool = True):
    act = traced.activations.get(unit.layer)
    if act is None:
        raise DeepvisError(f"layer '{unit.layer}' was not recorded by this trace")
    return traced.backward(unit, score_signal(act, unit), to=list(to), to_input=to_input, retain_graph=retain_graph)


def cam_from(activation: torch.Tensor, grad: torch.Tensor, plus: bool = False) -> torch.Tensor:
    """Grad-CAM (or Grad-CAM++ with ``plus``) from a layer's view ``activation`` and the score's gradient there,
    both (N, C, h, w): (N, 1, h, w), rectified."""
    a, g = activation.detach(), grad.detach()
    if plus:
        g2, g3 = g * g, g * g * g
        denominator = 2 * g2 + (a * g3).sum(dim=(2, 3), keepdim=True)
        alpha = torch.where(denominator != 0, g2 / torch.where(denominator != 0, denominator, torch.ones_like(g2)),
                            torch.zeros_like(g2))
        weights = (alpha * g.clamp(min=0)).sum(dim=(2, 3), keepdim=True)
    else:
        weights = g.mean(dim=(2, 3), keepdim=True)
    return (weights * a).sum(dim=1, keepdim=True).clamp(min=0)


def plain_gradient_at(traced: Trace, layer: str, unit_layer: str) -> bool:
    """Whether ``traced`` gives the plain gradient at ``layer`` of a unit at ``unit_layer``: a gradient-mode trace,
    or a deconv / guided one whose rules changed no rectifier that runs after ``layer`` up to ``unit_layer`` (the
    backward pass between them is then plain autograd: e.g. EfficientNet's head -> pool -> classifier), so that a
    Grad-CAM can share the backward pane's trace whatever its mode. A trace whose graph starts at a layer
    (``graph_from``) serves that layer and later ones."""
    recorded = list(traced.activations)  # in forward order
    if traced.graph_from is not None and (layer not in recorded or traced.graph_from not in recorded
                                          or recorded.index(layer) < recorded.index(traced.graph_from)):
        return False
    if traced.mode == "gradient":
        return True
    if traced.mode not in RULES or layer not in traced.modified or unit_layer not in traced.modified:
        return False
    return traced.modified[layer] == traced.modified[unit_layer]


def gradcam_from_trace(traced: Trace, unit: str | Unit, layer: str, plus: bool = False) -> torch.Tensor:
    """Grad-CAM (``plus``: Grad-CAM++) of ``unit`` at ``layer`` from a trace that recorded both layers and gives
    the plain gradient at ``layer`` (:func:`plain_gradient_at`): (N, 1, h, w) at the layer's resolution. The
    backward pass stops at the layer (no input gradient)."""
    unit = parse_unit(unit)
    if not plain_gradient_at(traced, layer, unit.layer):
        raise DeepvisError(f"Grad-CAM needs the plain gradient at '{layer}': this {traced.mode}-mode trace changes "
                           f"rectifiers between it and '{unit.layer}'")
    act = traced.activations[layer]
    if layer == unit.layer:  # the score's gradient at its own layer is its start signal
        signal = score_signal(act, unit)
        if isinstance(signal, str):
            if unit.token is not None:
                raise DeepvisError("a Grad-CAM of an extra token at its own layer is empty: give an earlier layer")
            grad = torch.zeros_like(act)
            grad[:, unit.channel, unit.position[0], unit.position[1]] = 1.0
        else:
            grad = signal
    else:
        grad = _score_backward(traced, unit, [layer], to_input=False).layer_grads[layer]
    return cam_from(act, grad, plus)


def upsample(cam: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, 1, h, w) -> (N, 1, H, W), bilinear (``align_corners=False``, as Captum's ``interpolate``)."""
    if tuple(cam.shape[-2:]) == tuple(size):
        return cam
    return F.interpolate(cam, size=tuple(size), mode="bilinear", align_corners=False)


def integration_rule(method: str, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(alphas, weights) of ``steps`` points on [0, 1] for an integration ``method`` (Captum's names and values)."""
    if steps < 2:
        raise DeepvisError(f"integrated gradients need at least 2 steps, got {steps}")
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        return (torch.tensor(0.5 * (1 + nodes), dtype=torch.float64),
                torch.tensor(0.5 * weights, dtype=torch.float64))
    if method not in INTEGRATIONS:
        raise DeepvisError(f"unknown integration method {method!r}: use one of {', '.join(INTEGRATIONS)}")
    deltas = [1 / steps] * steps
    if method == "riemann_trapezoid":
        deltas[0] /= 2
        deltas[-1] /= 2
        alphas = torch.linspace(0, 1, steps)
    elif method == "riemann_left":
        alphas = torch.linspace(0, 1 - 1 / steps, steps)
    elif method == "riemann_middle":
        alphas = torch.linspace(1 / (2 * steps), 1 - 1 / (2 * steps), steps)
    else:
        alphas = torch.linspace(1 / steps, 1, steps)
    return alphas.double(), torch.tensor(deltas, dtype=torch.float64)


def make_baseline(model: Model, x: torch.Tensor, kind: str | torch.Tensor = "black", seed: int = 0) -> torch.Tensor:
    """A baseline input like ``x`` (1, C, H, W): ``black`` (zero pixels, preprocessed), ``blur`` (the image blurred,
    sigma :data:`BLUR_SIGMA`), ``uniform`` (uniform random pixels, seeded), or a given tensor."""
    if isinstance(kind, torch.Tensor):
        return kind.to(device=x.device, dtype=x.dtype).expand_as(x)
    pre = model.preprocessing
    if kind == "black":
        return pre.normalize(torch.zeros(3, *x.shape[-2:], dtype=x.dtype, device=x.device))[None]
    if kind == "uniform":
        generator = torch.Generator().manual_seed(seed)
        pixels = torch.rand(3, *x.shape[-2:], generator=generator, dtype=x.dtype)
        return pre.normalize(pixels.to(x.device))[None]
    if kind == "blur":
        channels = [torch.from_numpy(render.gaussian_blur(c, BLUR_SIGMA)) for c in x[0].detach().float().cpu()]
        return torch.stack(channels)[None].to(device=x.device, dtype=x.dtype)
    raise DeepvisError(f"unknown baseline {kind!r}: use one of {', '.join(BASELINES)}")


def _like(batch: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``batch`` in the memory format of ``x``: an image from ``Model.input`` is channels-last (as decoded), and
    the batch's convolutions then run in that layout (faster on CPU than NCHW for the same values)."""
    if batch.dim() == 4 and x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) \
            and not x.is_contiguous():
        return batch.contiguous(memory_format=torch.channels_last)
    return batch.contiguous()


def _input_signal(model, batch: torch.Tensor, unit: Unit, mode: str, batch_size: int) -> torch.Tensor:
    """The input signal (gradient, deconv or guided) of the unit's score for every row of ``batch``, in chunks
    of ``batch_size`` rows, one trace each (stopped at the unit's layer)."""
    if batch_size < 1:
        raise DeepvisError(f"batch_size must be at least 1, got {batch_size}")
    out = []
    for start in range(0, batch.shape[0], batch_size):
        chunk = batch[start:start + batch_size]
        traced = trace(model, chunk, [unit.layer], mode, stop_early=True)
        # one pass per trace: the graph is freed as the backward pass walks it, not kept and freed after
        out.append(_score_backward(traced, unit, retain_graph=False).input_grad)
        del traced
    return torch.cat(out)


def _heat(raw: torch.Tensor) -> np.ndarray:
    """(C, H, W) input-space attribution -> (H, W): ``sum_c |raw_c|``."""
    return raw.abs().sum(dim=0).float().cpu().numpy()


# ------------------------------------------------------------------------------------------------ methods
def gradcam(model, x: torch.Tensor, unit, layer: str | None = None, plus: bool = False,
            traced: Trace | None = None) -> torch.Tensor:
    """Grad-CAM (or ++) of a preprocessed batch ``x``: (N, 1, h, w) at the layer. ``traced``: a trace of ``x`` to
    reuse when it recorded both layers and gives the plain gradient at the layer (:func:`plain_gradient_at`)."""
    model, unit = as_model(model), parse_unit(unit)
    layer = layer or default_cam_layer(model, unit)
    check_cam_layer(model, unit, layer)
    if traced is None or not {layer, unit.layer} <= set(traced.activations) \
            or not plain_gradient_at(traced, layer, unit.layer):
        traced = trace(model, x, [layer, unit.layer], "gradient", stop_early=True)
    return gradcam_from_trace(traced, unit, layer, plus)


def guided_gradcam(model, x: torch.Tensor, unit, layer: str | None = None) -> torch.Tensor:
    """Guided backprop at the input times the Grad-CAM upsampled to the input: (N, C, H, W)."""
    model, unit = as_model(model), parse_unit(unit)
    cam = upsample(gradcam(model, x, unit, layer), tuple(x.shape[-2:]))
    guided = _score_backward(trace(model, x, [unit.layer], "guided", stop_early=True), unit).input_grad
    return guided * cam


def input_x_gradient(model, x: torch.Tensor, unit) -> torch.Tensor:
    """``x * dS/dx``: (N, C, H, W)."""
    model, unit = as_model(model), parse_unit(unit)
    grad = _score_backward(trace(model, x, [unit.layer], "gradient", stop_early=True), unit).input_grad
    return x.detach() * grad


def smoothgrad(model, x: torch.Tensor, unit, samples: int = 32, sigma: float = 0.15, mode: str = "gradient",
               noise: torch.Tensor | None = None, seed: int = 0, batch_size: int = BATCH_SIZE) -> torch.Tensor:
    """SmoothGrad of one preprocessed input (1, C, H, W): the mean input signal of ``mode`` over ``samples`` copies
    with Gaussian noise of standard deviation ``sigma * (max x - min x)`` (or the given ``noise`` tensor, (samples,
    C, H, W), added as it is). (1, C, H, W)."""
    model, unit = as_model(model), parse_unit(unit)
    if mode not in MODES:
        raise DeepvisError(f"unknown SmoothGrad base mode {mode!r}: use one of {', '.join(MODES)}")
    if noise is None:
        if samples < 1:
            raise DeepvisError(f"SmoothGrad needs at least 1 sample, got {samples}")
        stdev = float(sigma) * float(x.max() - x.min())
        generator = torch.Generator().manual_seed(seed)
        noise = (torch.randn((samples, *x.shape[1:]), generator=generator) * stdev).to(device=x.device,
                                                                                      dtype=x.dtype)
    noisy = _like(x.detach().expand(noise.shape[0], *x.shape[1:]) + noise.to(device=x.device, dtype=x.dtype), x)
    return _input_signal(model, noisy, unit, mode, batch_size).mean(dim=0, keepdim=True)


def integrated_gradients(model, x: torch.Tensor, unit, steps: int = 32, baseline: str | torch.Tensor = "black",
                         method: str = "gausslegendre", seed: int = 0, batch_size: int = BATCH_SIZE) -> torch.Tensor:
    """Integrated gradients of one preprocessed input (1, C, H, W) from a ``baseline`` along the straight path,
    ``steps`` points of an integration ``method`` (see :func:`integration_rule`), in batches: (1, C, H, W)."""
    model, unit = as_model(model), parse_unit(unit)
    alphas, weights = integration_rule(method, steps)
    base = make_baseline(model, x, baseline, seed).detach()
    x = x.detach()
    path = _like(torch.cat([base + float(alpha) * (x - base) for alpha in alphas.tolist()]), x)
    grads = _input_signal(model, path, unit, "gradient", batch_size)
    step = torch.tensor(weights.tolist(), dtype=grads.dtype, device=grads.device).view(-1, *[1] * (grads.dim() - 1))
    total = (grads * step).sum(dim=0, keepdim=True)
    return total * (x - base)


# ------------------------------------------------------------------------------------------------ one call
def attribute(model: Model | nn.Module, image, unit: str | Unit, method: str = "gradcam", layer: str | None = None,
              *, steps: int = 32, samples: int = 32, sigma: float = 0.15, mode: str = "gradient",
              baseline: str | torch.Tensor = "black", integration: str = "gausslegendre",
              noise: torch.Tensor | None = None, seed: int = 0, batch_size: int = BATCH_SIZE, resize: str | None = None,
              traced: Trace | None = None) -> Attribution:
    """The attribution map of ``unit`` for one image (path, PIL, array; a tensor is taken as preprocessed).

    ``method``: one of :data:`METHODS`. ``layer``: the Grad-CAM layer (default :func:`default_cam_layer`).
    ``steps``, ``baseline``, ``integration``: integrated gradients. ``samples``, ``sigma`` (a fraction of the
    input's range), ``mode`` (base: gradient, deconv, guided), ``noise``: SmoothGrad. ``seed``: its noise and the
    uniform baseline. ``batch_size``: rows per forward pass of the batched methods (:data:`BATCH_SIZE`).
    ``traced``: a trace of the same input to reuse for Grad-CAM (the live toolbox keeps one per input; see
    :func:`gradcam`).
    """
    model = as_model(model)
    unit = parse_unit(unit)
    if method not in METHODS:
        raise DeepvisError(f"unknown attribution method {method!r}: use one of {', '.join(METHODS)}")
    if layer is not None and method not in CAM_METHODS:
        raise DeepvisError(f"--layer applies to the Grad-CAM methods ({', '.join(CAM_METHODS)}), not {method}")
    x = model.input(image, resize)[:1]
    size = tuple(x.shape[-2:])
    settings: dict = {}
    if method in CAM_METHODS:
        layer = layer or default_cam_layer(model, unit)
        settings["layer"] = layer
    if method in ("gradcam", "gradcam++"):
        raw = gradcam(model, x, unit, layer, plus=method == "gradcam++", traced=traced)[0]
        heat = upsample(raw[None], size)[0, 0].float().cpu().numpy()
    else:
        if method == "guided-gradcam":
            raw = guided_gradcam(model, x, unit, layer)[0]
        elif method == "input-x-gradient":
            raw = input_x_gradient(model, x, unit)[0]
        elif method == "smoothgrad":
            settings.update(samples=samples if noise is None else int(noise.shape[0]), sigma=sigma, mode=mode,
                            seed=seed)
            raw = smoothgrad(model, x, unit, samples, sigma, mode, noise, seed, batch_size)[0]
        else:
            settings.update(steps=steps, baseline=baseline if isinstance(baseline, str) else "tensor",
                            integration=integration)
            raw = integrated_gradients(model, x, unit, steps, baseline, integration, seed, batch_size)[0]
        heat = _heat(raw)
    pixels = model.preprocessing.denormalize(x[0].detach().float()).clamp(0, 1).permute(1, 2, 0).cpu().numpy()
    return Attribution(heat.astype(np.float32), raw.detach(), method, unit, settings, pixels)
