"""The store's layout: where each file lives (the one place that spells a store file name) and the URL of one.
:class:`StoreLayout` is the base every other part of :class:`deepvis.store.Store` builds on."""

from __future__ import annotations

import functools
import json
import string
from pathlib import Path
from urllib.parse import quote

from deepvis.core.errors import DeepvisError

#: Per-unit pictures made from a unit's top-k images: the receptive-field crop and its backward images.
CROP_KINDS = ("image", "deconv", "gradient", "guided")
#: Kinds of layer sprites: the optimized images, and the best (rank 0) picture of each crop kind.
SPRITE_KINDS = ("optimized",) + CROP_KINDS
_SAFE = set(string.ascii_letters + string.digits + "._-")


@functools.lru_cache(maxsize=4096)
def layer_dirname(layer: str) -> str:
    """The layer name with every character outside ``[A-Za-z0-9._-]`` percent-encoded (UTF-8)."""
    return "".join(c if c in _SAFE else "".join(f"%{b:02X}" for b in c.encode("utf-8")) for c in layer)


class StoreLayout:
    """The paths of a store's files under ``root`` (nothing is read or written here but small JSON records)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def layer_dir(self, layer: str) -> Path:
        return self.root / layer_dirname(layer)

    def unit_dir(self, layer: str, channel: int) -> Path:
        return self.layer_dir(layer) / f"{channel:04d}"

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    @property
    def image_list_path(self) -> Path:
        return self.root / "images.txt"

    @property
    def site_path(self) -> Path:
        """Where ``deepvis export`` writes the store's static site by default (and the toolbox looks for it)."""
        return self.root / "site"

    def topk_path(self, layer: str) -> Path:
        return self.layer_dir(layer) / "topk.npz"

    def checkpoint(self, rank: int, world: int) -> Path:
        """Where process ``rank`` of ``world`` keeps an interrupted find-max scan's progress."""
        return self.root / f".find-max-checkpoint-{rank}-of-{world}.pt"

    def unit_file(self, layer: str, channel: int, kind: str) -> Path:
        """A unit's montage of its pictures of ``kind`` (one of :data:`CROP_KINDS`), one per top image; one rank's
        picture is :meth:`~deepvis.store.Store.unit_crop`."""
        if kind not in CROP_KINDS:
            raise DeepvisError(f"unknown kind {kind!r}: use any of {', '.join(CROP_KINDS)}")
        return self.unit_dir(layer, channel) / f"{kind}.jpg"

    def optimized_file(self, layer: str, channel: int, which: str | int = "best") -> Path:
        """A unit's optimization result: ``"best"`` image (displayed), ``"input"`` (what the network saw),
        copy ``n`` (1, 2, ...), or ``"record"`` (the JSON of settings and per-iteration results)."""
        names = {"best": "optimized.png", "input": "optimized_input.png", "record": "optimized.json",
                 "alpha": "optimized_alpha.png"}
        if isinstance(which, int) and which >= 1:
            name = f"optimized_{which:02d}.png"
        elif which in names:
            name = names[which]
        else:
            raise ValueError(f"which optimized file: 'best', 'input', 'alpha', 'record' or a copy number >= 1, not "
                             f"{which!r}")
        return self.unit_dir(layer, channel) / name

    @property
    def spectrum_path(self) -> Path:
        """MACO's fixed magnitude spectrum, estimated from the store's own images."""
        return self.root / "spectrum.npz"

    def evaluation_path(self, layer: str) -> Path:
        """The layer's quality metrics (``deepvis evaluate``)."""
        return self.layer_dir(layer) / "evaluation.json"

    def crops_record_path(self, layer: str, channel: int) -> Path:
        """A unit's "made from" record of its crops, backward images and montages (written last)."""
        return self.unit_dir(layer, channel) / "crops.json"

    def crops_plan_path(self, layer: str) -> Path:
        """How the layer's crops are made (its effective receptive field, its backward passes' window), measured once."""
        return self.layer_dir(layer) / "crops_plan.json"

    def sprites_record_path(self, layer: str) -> Path:
        """The layer's "made from" record of its sprites, by kind."""
        return self.layer_dir(layer) / "sprites.json"

    def sprite_path(self, layer: str, kind: str) -> Path:
        """Where the layer's sprite of ``kind`` (one of :data:`SPRITE_KINDS`) is written."""
        if kind not in SPRITE_KINDS:
            raise DeepvisError(f"unknown sprite kind {kind!r}: use any of {', '.join(SPRITE_KINDS)}")
        return self.layer_dir(layer) / f"sprite_{kind}.jpg"

    def url(self, path: str | Path) -> str:
        """The URL path of a file in the store, relative to the store root, percent-encoded once (the server
        serves the store under a prefix and decodes it once: the result names the file exactly)."""
        return quote(Path(path).relative_to(self.root).as_posix(), safe="/")

    def unit_channels(self, layer: str) -> list[int]:
        """The channels that have a folder in the store."""
        folder = self.layer_dir(layer)
        if not folder.is_dir():
            return []
        return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and len(p.name) == 4 and p.name.isdigit())

    @staticmethod
    def _read_json(path: str | Path) -> dict | None:
        """A JSON record (an object), or None when it is missing, unreadable or not an object."""
        try:
            with open(path, "rb") as handle:
                data = json.loads(handle.read())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None
