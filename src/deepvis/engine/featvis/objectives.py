"""What an optimized image should excite: a unit (one position of a channel), a whole channel, or a direction in
a layer's channel space. Each image of a batch has its own target, and its objective depends on its own image only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import torch

from deepvis.core.errors import UnitError
from deepvis.models.model import Model
from deepvis.engine.backprop import Trace, trace
from deepvis.engine.probe import layer_info
from deepvis.core.units import Unit, check_unit, parse_unit

#: What an objective reads of its layer (a :class:`Target`'s ``kind``; not a layout's nor a picture's kind).
ObjectiveKind = Literal["unit", "channel", "direction"]
OBJECTIVE_KINDS = ("unit", "channel", "direction")


@dataclass(frozen=True)
class Target:
    """An objective on one layer. ``unit``: the channel at ``position`` (the centre of a conv layer by default);
    ``channel``: the channel's mean over all positions; ``direction``: ``vector . activations`` over channels, at
    ``position`` or averaged over positions. ``sign`` +1 maximizes, -1 minimizes."""

    layer: str
    channel: int = 0
    position: tuple[int, int] | None = None
    kind: ObjectiveKind = "unit"
    vector: tuple[float, ...] | None = None
    sign: float = 1.0

    @property
    def unit(self) -> Unit:
        return Unit(self.layer, self.channel, self.position)

    def __str__(self) -> str:
        if self.kind == "direction":
            return f"{self.layer}:direction" + (f"@{self.position[0]},{self.position[1]}" if self.position else "")
        return str(Unit(self.layer, self.channel, self.position if self.kind == "unit" else None))

    def to_json(self) -> dict:
        return {"target": str(self), "layer": self.layer, "channel": self.channel if self.kind != "direction" else None,
                "position": list(self.position) if self.position else None, "kind": self.kind, "sign": self.sign,
                "vector": list(self.vector) if self.vector is not None else None}


#: How two targets combine on one image: ``a - b`` excites a but not b, ``a + b`` both, ``a * b`` their interaction
#: (high only where both are).
OPERATORS = {"-": torch.sub, "+": torch.add, "*": torch.mul}


@dataclass(frozen=True)
class Combination:
    """Two targets evaluated on the same image and combined (``left op right``): an objective like any other,
    for every method. Written ``"blocks.8:3 - blocks.8:5"`` (spaces around the operator)."""

    left: Target
    op: str
    right: Target
    sign: float = 1.0
    kind = "combination"
    position = None

    @property
    def layer(self) -> str:
        return self.left.layer

    @property
    def channel(self) -> int:
        return self.left.channel

    def __str__(self) -> str:
        return f"{self.left} {self.op} {self.right}"

    def to_json(self) -> dict:
        return {"target": str(self), "layer": self.layer, "kind": self.kind, "op": self.op, "sign": self.sign,
                "left": self.left.to_json(), "right": self.right.to_json()}


def make_target(model: Model, unit: str | Unit | Target | Combination, kind: ObjectiveKind | None = "unit",
                sign: float = 1.0, vector: Sequence[float] | None = None) -> Target | Combination:
    """Check a unit against the layer catalog and fill in its position (the centre for a ``unit`` of a conv layer).
    A string ``"A - B"``, ``"A + B"`` or ``"A * B"`` makes a :class:`Combination` of two targets of ``kind``.
    ``kind`` None: ``unit`` where the unit names a position ``@y,x``, else ``channel`` (each part on its own)."""
    if isinstance(unit, (Target, Combination)):
        return unit
    if isinstance(unit, str):
        for op in OPERATORS:
            left, found, right = unit.partition(f" {op} ")
            if found:
                return Combination(make_target(model, left.strip(), kind, 1.0, vector), op,
                                   make_target(model, right.strip(), kind, 1.0, vector), float(sign))
    if kind is None:
        kind = "unit" if parse_unit(unit).position is not None else "channel"
    if kind not in OBJECTIVE_KINDS:
        raise UnitError(f"unknown objective {kind!r}: use one of {', '.join(OBJECTIVE_KINDS)}")
    if kind == "direction" and isinstance(unit, str) and ":" not in unit:
        unit = f"{unit}:0"
    unit = parse_unit(unit)
    info = layer_info(model, unit.layer)
    channels, spatial = info.shape[0], info.shape[1:]
    if unit.token is not None:
        raise UnitError(f"optimize works on grid positions and whole channels: '{unit}' names an extra token; use "
                        f"'{unit.layer}:{unit.channel}' or '@y,x'")
    check_unit(unit, info.shape, channel=kind != "direction")
    position = unit.position
    if position is not None:
        if kind == "channel":
            raise UnitError(f"the channel objective uses the whole channel: drop '@{position[0]},{position[1]}' from "
                            f"'{unit}', or use the unit objective")
    elif kind == "unit" and len(spatial) == 2:
        position = (spatial[0] // 2, spatial[1] // 2)  # the original warned that (0, 0) has edge effects
    if kind == "channel":
        position = None
    if kind == "direction":
        if vector is None or len(vector) != channels:
            raise UnitError(f"a direction objective on layer '{unit.layer}' needs a vector of {channels} values")
        vector = tuple(float(v) for v in vector)
    return Target(unit.layer, unit.channel, position, kind, vector if kind == "direction" else None, float(sign))


def objective_values(acts: torch.Tensor, targets: Sequence[Target]) -> torch.Tensor:
    """(N,) objective values (before ``sign``) of a layer's (N, C, ...) activations, one target per image."""
    values = []
    for n, target in enumerate(targets):
        act = acts[n]
        if target.kind == "direction":
            vector = torch.tensor(target.vector, dtype=act.dtype, device=act.device)
            act = (act * vector.view(-1, *([1] * (act.dim() - 1)))).sum(0, keepdim=True)
            channel = 0
        else:
            channel = target.channel
        if target.position is not None:
            values.append(act[channel, target.position[0], target.position[1]])
        else:
            values.append(act[channel].mean())
    return torch.stack(values)


@dataclass
class Evaluation:
    """One forward pass of a batch with one target per image: the (N,) objective ``values`` (before ``sign``,
    attached to the graph), for each target layer the rows that target it and their activations, and the trace
    to take the input gradient of any objective built from them."""

    values: torch.Tensor
    by_layer: dict[str, tuple[list[int], torch.Tensor]]
    trace: Trace

    def input_grad(self, objective: torch.Tensor) -> torch.Tensor:
        """The gradient of a scalar built from :attr:`values` with respect to the evaluated images."""
        return self.trace.backward(objective, retain_graph=False).input_grad


def evaluate(model: Model, x: torch.Tensor, targets: Sequence[Target | Combination]) -> Evaluation:
    """Evaluate the targets on ``x`` (one per image) in one traced forward pass, stopped after the last target
    layer; ``x`` keeps its own graph (a parameterization's). A layer that folds in-place layers (a Caffe import)
    gives its gradient from below them, as Caffe's backward pass did. A :class:`Combination` evaluates both its
    targets on its image; ``by_layer`` lists it under its left target's layer."""
    parts: list[tuple[int, Target, bool]] = []  # (image, target, is the image's main part)
    for n, t in enumerate(targets):
        if isinstance(t, Combination):
            parts += [(n, t.left, True), (n, t.right, False)]
        else:
            parts.append((n, t, True))
    layers = list(dict.fromkeys(t.layer for _, t, _ in parts))
    traced = trace(model, x, layers, stop_early=True, below_in_place=True, detach_input=False)
    values = x.new_zeros(len(targets))
    others = x.new_zeros(len(targets))
    by_layer = {}
    for layer in layers:
        mine = [p for p in parts if p[1].layer == layer]
        rows = [n for n, _, _ in mine]
        acts = traced[layer][rows]
        found = objective_values(acts, [t for _, t, _ in mine])
        main = [i for i, (_, _, is_main) in enumerate(mine) if is_main]
        second = [i for i, (_, _, is_main) in enumerate(mine) if not is_main]
        if main:
            values = values.index_put((torch.tensor([rows[i] for i in main], device=x.device),), found[main])
            by_layer[layer] = ([rows[i] for i in main], acts[main] if len(main) < len(mine) else acts)
        if second:
            others = others.index_put((torch.tensor([rows[i] for i in second], device=x.device),), found[second])
    for n, t in enumerate(targets):
        if isinstance(t, Combination):
            values = values.index_put((torch.tensor([n], device=x.device),),
                                      OPERATORS[t.op](values[n], others[n]).reshape(1))
    return Evaluation(values, by_layer, traced)


def layer_argmax(acts: torch.Tensor) -> list[tuple[int, ...]]:
    """Where each image's layer is highest: (channel, y, x) for conv layers, (channel,) otherwise."""
    flat = acts.detach().reshape(acts.shape[0], -1).argmax(dim=1).cpu()
    shape = tuple(acts.shape[1:])
    return [tuple(int(i) for i in torch.unravel_index(index, shape)) for index in flat]


def target_argmax(acts: torch.Tensor, targets: Sequence[Target | Combination]) -> list[tuple[int, ...]]:
    """What the paper's "majority" test compares each image's unit with: for a unit at a position of a conv layer,
    the strongest channel at that position, ``(channel, y, x)``; otherwise the layer's arg-max (:func:`layer_argmax`).

    A conv unit wins where no other feature is stronger at its own place. Neighbouring positions are left out: they
    see only part of the unit's receptive field (and pixels it does not see), so on them the same pattern, shifted, can
    drive a channel of large weights higher, in a layer without rectifiers even on every real image (on a LeNet's
    linear conv2, the best real image of none of the 50 units makes it the largest value of the whole layer)."""
    whole = layer_argmax(acts)
    found = []
    for n, target in enumerate(targets):
        position = target.position if getattr(target, "kind", None) == "unit" else None
        if position is None or acts.dim() != 4:
            found.append(whole[n])
            continue
        channel = int(acts[n, :, position[0], position[1]].detach().argmax())
        found.append((channel, int(position[0]), int(position[1])))
    return found


def is_target_max(target: Target, argmax: tuple[int, ...]) -> bool | None:
    """Whether the target unit is the arg-max :func:`target_argmax` found (arg-min when minimizing; taken of the
    signed layer): the paper's "majority" test. None for other objectives."""
    if target.kind != "unit":
        return None
    return argmax == (target.channel,) + (tuple(target.position) if target.position else ())
