"""What a unit's pictures are in the store (optimized images, crops by kind and rank), the site files they become,
and a hash of what they are made from (:func:`unit_sources`)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from deepvis.jobs.export.config import SETTINGS
from deepvis.jobs.export.site_files import canonical_json
from deepvis.store import CROP_KINDS, Manifest, Store, layer_dirname


@dataclass
class UnitSources:
    """A unit's pictures: what each site file is made from, the optimized ones with captions, crops by kind."""

    layer: str
    channel: int
    pictures: dict[str, Path | tuple[str, int]]  # site file (relative to the root) -> what it is made from, in display
    # order: an optimized image's store file, or a crop's (kind, rank)
    optimized: list[tuple[str, str]]  # (caption, site file)
    crops: dict[str, list[str | None]]  # kind -> site file by rank
    record: dict | None  # the optimization record
    source: str  # hash of what its pictures are made from


def unit_sources(store: Store, layer: str, channel: int, k: int) -> UnitSources:
    """What a unit's pictures are in the store, and the site files they become."""
    folder = f"{layer_dirname(layer)}/{channel}"
    pictures: dict[str, Path | tuple[str, int]] = {}
    optimized = []
    record = store.read_optimized_record(layer, channel)
    if store.optimized_file(layer, channel).is_file():
        candidates = [("best", "optimized", "optimized.jpg"), ("input", "what the network saw", "optimized_input.jpg")]
        n = 1
        while store.optimized_file(layer, channel, n).is_file():
            candidates.append((n, f"copy {n}", f"optimized_{n:02d}.jpg"))
            n += 1
        for which, caption, name in candidates:
            path = store.optimized_file(layer, channel, which)
            if path.is_file():
                pictures[f"{folder}/{name}"] = path
                optimized.append((caption, f"{folder}/{name}"))
    crops: dict[str, list[str | None]] = {}
    crops_record, crop_files = store.read_crops_record(layer, channel), store.crop_files(layer, channel)
    have = store.crop_ranks(layer, channel, crops_record, crop_files)
    for kind in CROP_KINDS:
        ranks = [f"{folder}/{kind}_{rank:02d}.jpg" if rank in have.get(kind, ()) else None for rank in range(k)]
        for rank, name in enumerate(ranks):
            if name:
                pictures[name] = (kind, rank)
        if any(ranks):
            crops[kind] = ranks
    sizes = {name: path.stat().st_size for name, path in pictures.items() if isinstance(path, Path)}
    sizes.update({path.name: path.stat().st_size for path in crop_files})
    made_from = [SETTINGS, crops_record, record, sizes]
    source = hashlib.sha256(canonical_json(made_from).encode("utf-8")).hexdigest()[:16]
    return UnitSources(layer, channel, pictures, optimized, crops, record, source)


def labels_of(model, manifest: Manifest, layer: str) -> list[str] | None:
    """The model's labels when ``layer`` is its label layer (the classifier), else None."""
    if model is None or not getattr(model, "labels", None):
        return None
    shape = tuple(manifest.layers[layer].shape)
    return list(model.labels) if model.is_label_layer(layer, shape) else None
