"""What a unit's crops are made from, whether they are current (the store's one test, which a re-scan asks too),
and the units a run (re)makes."""

from __future__ import annotations

from dataclasses import dataclass

from deepvis.store import Manifest, Store
from deepvis.store.staleness import crops_current


def made_from(store: Store, manifest: Manifest, layer: str, network: str) -> dict:
    """What every crop of ``layer`` is made from besides its unit's top-k: the layer's crops basis and the network
    (its weights hash)."""
    return {"basis": store.crops_basis(manifest, layer), "network": network}


#: Whether a unit's crops are current (the store decides it, for a re-scan and for every crops run alike).
is_current = crops_current


@dataclass(frozen=True)
class Todo:
    """A unit a run (re)makes: its ``channel``, the ``record`` its pictures are made from (top-k hash, basis,
    network) and ``saved``: its crops record as read before ({}: none), which the writer needs (not read again)."""

    channel: int
    record: dict
    saved: dict
