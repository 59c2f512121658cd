"""Whether a unit's crops are current: the one test every part of the crops job asks (which units a run makes,
which units a layer's sprites show)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from deepvis.store import Manifest, Store


def made_from(store: Store, manifest: Manifest, layer: str, network: str) -> dict:
    """What every crop of ``layer`` is made from besides its unit's top-k: the layer's crops basis and the network
    (its weights hash)."""
    return {"basis": store.crops_basis(manifest, layer), "network": network}


def is_current(record: dict | None, topk: str, basis: dict, kinds: Iterable[str] = ()) -> bool:
    """Whether a unit's crops ``record`` says it was made from its current top-k (``topk``: its hash) and
    ``basis`` (:func:`made_from`), with at least ``kinds``: then its pictures need no remaking."""
    if record is None or record.get("topk") != topk or any(record.get(k) != v for k, v in basis.items()):
        return False
    return set(kinds) <= set(record.get("kinds", []))


@dataclass(frozen=True)
class Todo:
    """A unit a run (re)makes: its ``channel``, the ``record`` its pictures are made from (top-k hash, basis,
    network) and ``saved``: its crops record as read before ({}: none), which the writer needs (not read again)."""

    channel: int
    record: dict
    saved: dict
