"""The passes of a live input: its forward pass (plain, traced for a backward pass, or recording attention, as the
last view asked) and a unit's backward pass, from the input's kept trace when it has one.

Every function here runs the model: the caller holds the toolbox's model lock.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch

from deepvis.core.units import Unit
from deepvis.engine.attention import AttentionMaps, record_attention
from deepvis.engine.backprop import Trace, trace
from deepvis.engine.probe import Probe
from deepvis.models.model import Model

__all__ = ["Forward", "NextPass", "backward", "forward"]


@dataclass(frozen=True)
class NextPass:
    """How the next input's forward pass runs, from the last view: traced in ``trace_mode`` when it showed a
    backward pass (so the first backward pass needs no other forward pass; None: a plain forward), keeping the
    graph only from ``trace_from`` (a Grad-CAM overlay without the backward pane), recording attention when it
    showed an attention overlay (references to Q and K; a map is computed when the overlay reads it)."""

    trace_mode: str | None = None
    trace_from: str | None = None
    attention: bool = False


@dataclass
class Forward:
    """A new input's forward pass: the model's output, the recorded activations (batch dim kept, on the device),
    its trace when it was traced and its attention maps when they were recorded."""

    output: torch.Tensor
    activations: dict[str, torch.Tensor]
    traced: Trace | None = None
    attention: AttentionMaps | None = None


def forward(model: Model, x: torch.Tensor, recorded: list[str], plan: NextPass) -> Forward:
    """The forward pass of a new input ``x`` recording the layers ``recorded``, run as ``plan`` asks: traced in its
    mode when the next view will likely show a backward pass (one forward pass serves both), else a plain one."""
    recording = record_attention(model) if plan.attention else nullcontext()
    with recording:
        if plan.trace_mode is None:
            with torch.no_grad(), Probe(model, recorded) as probe:
                out = probe.run(x)
            activations, traced = probe.activations, None
        else:
            traced = trace(model, x, recorded, plan.trace_mode, graph_from=plan.trace_from)
            out, activations = traced.output, traced.activations
    attention = recording.maps if isinstance(recording, record_attention) else None
    return Forward(out, activations, traced, attention)


def backward(model: Model, x: torch.Tensor, recorded: list[str], kept: Trace | None, origin: Unit, mode: str,
             layer: str | None = None) -> tuple[Trace, tuple[torch.Tensor, torch.Tensor | None, bool]]:
    """The backward pass of ``origin`` in ``mode`` on the input ``x``: from ``kept`` (the input's kept trace) when
    it is a whole trace in ``mode`` (no forward pass), else from a new trace recording ``recorded``.

    Returns the trace used (for the caller to keep) and (the input gradient; the gradient at ``layer`` or None, the
    origin's own map when ``layer`` is its layer; whether rectifiers were modified), on the CPU, no batch dim.
    """
    traced = kept
    if traced is None or traced.mode != mode or traced.graph_from is not None:
        traced = trace(model, x, recorded, mode)
    to = [layer] if layer and layer != origin.layer else []
    found = traced.backward(origin, to=to)
    if layer == origin.layer:
        layer_grad = torch.zeros_like(found.activation[0])
        layer_grad[origin.channel] = found.activation[0, origin.channel]
    else:
        layer_grad = found.layer_grads[layer][0] if layer else None
    return traced, (found.input_grad[0].float().cpu(), None if layer_grad is None else layer_grad.float().cpu(),
                    found.rectifiers_modified)
