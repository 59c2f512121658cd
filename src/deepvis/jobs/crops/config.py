"""What a crops run is asked (:class:`CropsConfig`, the one place for its settings' defaults) and what it did
(:class:`CropsReport`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from deepvis.store import Store

#: Rows (top images) per batched backward pass of a crops run.
BATCH_ROWS = 64


@dataclass(frozen=True)
class CropsConfig:
    """The settings of a crops run. ``layers``: the store's layers to make (None: all); ``kinds``: any of
    :data:`~deepvis.jobs.crops.KINDS` (None: :func:`~deepvis.jobs.crops.default_kinds`); ``channels``: the units of
    each layer (None: all; past a layer's last are left out, with a note); ``force``: use a model other than the
    store's anyway, and redo every unit asked for; ``progress``: show a progress bar; ``batch_rows``: about how
    many top images one batched backward pass takes."""

    layers: Sequence[str] | None = None
    kinds: tuple[str, ...] | None = None
    channels: Sequence[int] | None = None
    force: bool = False
    progress: bool = True
    batch_rows: int = BATCH_ROWS


@dataclass
class LayerCrops:
    """A layer's share of a run: units (re)made, and units skipped as already made from their current top-k."""

    made: int = 0
    current: int = 0


@dataclass
class CropsReport:
    """What a crops run did: the ``store`` written, the ``kinds`` made, per layer the units made and skipped as
    current, its ``seconds``, and ``notes`` for the user (the command line prints them)."""

    store: Store
    kinds: tuple[str, ...]
    layers: dict[str, LayerCrops] = field(default_factory=dict)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def made(self) -> int:
        """Units (re)made, over every layer."""
        return sum(layer.made for layer in self.layers.values())

    @property
    def current(self) -> int:
        """Units skipped as already current, over every layer."""
        return sum(layer.current for layer in self.layers.values())
