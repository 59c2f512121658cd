"""A unit's crops: its montages (one picture file a kind, every rank's picture a tile of it), the record of what
they were made from with each kind's tiles, the layer's crops plan, and reading one rank's picture back (also from
the per-rank files of stores of earlier deepvis versions). Every write is atomic; the record is written last."""

from __future__ import annotations

import json
import os
from pathlib import Path

from PIL import Image

from deepvis.core.files import atomic_write_bytes, remove_if_present
from deepvis.store.layout import CROP_KINDS, StoreLayout

#: How crops are drawn, part of every crop's basis: a field smaller than ``min_size`` pixels is shown with
#: context around it up to that size, the field marked by an ``outline``-pixel box drawn just outside it.
CROPS_SETTINGS = {"min_size": 32, "outline": 1}


def _crop_file_kind(name: str) -> str | None:
    """The kind of a unit's crop picture file name: ``<kind>.jpg`` (a montage) or an earlier deepvis's
    ``<kind>_<rank:02d>.jpg``; None for any other file."""
    stem, dot, extension = name.rpartition(".")
    if not dot or extension != "jpg":
        return None
    if stem in CROP_KINDS:
        return stem
    kind, sep, rank = stem.rpartition("_")
    return kind if sep and rank.isdigit() and kind in CROP_KINDS else None


def _read_rgb(path: Path) -> Image.Image:
    """A picture file as an RGB image, read whole (the file closed)."""
    with Image.open(path) as image:
        return image.convert("RGB")


def _cut(montage: Image.Image, box) -> Image.Image:
    """One tile of a montage, ``box`` = (x, y, width, height)."""
    x, y, w, h = box
    return montage.crop((x, y, x + w, y + h))


class CropFiles(StoreLayout):
    """Reading, writing and removing a unit's crops, montages and crops record."""

    def crop_files(self, layer: str, channel: int) -> list[Path]:
        """Every montage a unit has, and every per-rank picture file an earlier deepvis wrote (any kind)."""
        folder = self.unit_dir(layer, channel)
        try:
            names = os.listdir(folder)  # one directory read: this runs for every unit made
        except OSError:
            return []
        return [folder / name for name in sorted(names) if _crop_file_kind(name) is not None]

    def crop_ranks(self, layer: str, channel: int, record: dict | None = None,
                   files: list[Path] | None = None) -> dict[str, list[int]]:
        """By kind, the ranks a unit has a picture for (see :meth:`unit_crops`), without reading any picture;
        ``record`` / ``files``: the unit's crops record and :meth:`crop_files` where the caller read them already."""
        record = self.read_crops_record(layer, channel) if record is None else record
        files = self.crop_files(layer, channel) if files is None else files
        found = {}
        for kind in CROP_KINDS:
            tiles = self._tiles(layer, channel, kind, record, files)
            ranks = ([rank for rank, box in enumerate(tiles) if box] if tiles is not None
                     else sorted(self._rank_files(kind, files)))
            if ranks:
                found[kind] = ranks
        return found

    def unit_crops(self, layer: str, channel: int, kind: str) -> dict[int, Image.Image]:
        """A unit's pictures of ``kind`` by rank: cut from its montage by the tiles its crops record gives, or the
        per-rank files of a store of an earlier deepvis. Empty where it has none; an unreadable picture raises
        ``OSError``."""
        files = self.crop_files(layer, channel)
        tiles = self._tiles(layer, channel, kind, self.read_crops_record(layer, channel), files)
        if tiles is not None:
            montage = _read_rgb(self.unit_file(layer, channel, kind))
            return {rank: _cut(montage, box) for rank, box in enumerate(tiles) if box}
        return {rank: _read_rgb(path) for rank, path in sorted(self._rank_files(kind, files).items())}

    def unit_crop(self, layer: str, channel: int, kind: str, rank: int) -> Image.Image | None:
        """A unit's picture of ``kind`` for its ``rank``-th top image (see :meth:`unit_crops`), or None."""
        montage = self.unit_file(layer, channel, kind)
        tiles = self._tiles(layer, channel, kind, self.read_crops_record(layer, channel),
                            [montage] if montage.is_file() else [])
        if tiles is not None:
            box = tiles[rank] if 0 <= rank < len(tiles) else None
            return _cut(_read_rgb(montage), box) if box else None
        path = self._rank_file(layer, channel, kind, rank)
        return _read_rgb(path) if path.is_file() else None

    def _tiles(self, layer: str, channel: int, kind: str, record: dict | None, files: list[Path]) -> list | None:
        """The kind's tiles by rank in its montage, from the unit's crops ``record``, when it has them and the
        montage is among the unit's ``files`` (else None: no crops, or a store of an earlier deepvis)."""
        tiles = (record or {}).get("tiles")
        if not isinstance(tiles, dict) or not isinstance(tiles.get(kind), list) or \
                self.unit_file(layer, channel, kind) not in files:
            return None
        return tiles[kind]

    def _rank_file(self, layer: str, channel: int, kind: str, rank: int) -> Path:
        """Where earlier deepvis versions wrote one rank's picture of a kind as its own file."""
        return self.unit_dir(layer, channel) / f"{kind}_{rank:02d}.jpg"

    @staticmethod
    def _rank_files(kind: str, files: list[Path]) -> dict[int, Path]:
        """Among a unit's crop ``files``, a store of an earlier deepvis's per-rank pictures of a kind, by rank."""
        return {int(path.stem[len(kind) + 1:]): path for path in files
                if _crop_file_kind(path.name) == kind and path.stem != kind}

    def read_crops_record(self, layer: str, channel: int) -> dict | None:
        """What a unit's crops were made from (``topk``, ``basis``, ``network``, ``kinds``), or None."""
        return self._read_json(self.crops_record_path(layer, channel))

    def read_crops_records(self, layer: str, channels) -> dict[int, dict | None]:
        """:meth:`read_crops_record` of each of ``channels``: the layer folder listed once, and only the units with
        a folder read (a layer's sprites look at every channel's record, most of them often not made)."""
        folder = os.fspath(self.layer_dir(layer))
        try:
            folders = set(os.listdir(folder))
        except OSError:
            folders = set()
        name = self.crops_record_path(layer, 0).name
        return {channel: self._read_json(os.path.join(folder, f"{channel:04d}", name)) if f"{channel:04d}" in folders
                else None for channel in channels}  # plain strings: pathlib's objects cost more than the reads

    def read_crops_plan(self, layer: str) -> dict | None:
        """The layer's saved crops plan (see :meth:`crops_plan_path`), or None."""
        return self._read_json(self.crops_plan_path(layer))

    def write_crops_plan(self, layer: str, plan: dict) -> None:
        """Save the layer's crops plan (measured again at will: not flushed to the disk)."""
        atomic_write_bytes(self.crops_plan_path(layer), json.dumps(plan, indent=1).encode("utf-8"), durable=False)

    def write_crops(self, layer: str, channel: int, montages: dict[str, bytes], tiles: dict[str, list],
                    record: dict, old: dict | None = None) -> dict:
        """Write a unit's montages (kind -> JPEG bytes: its one picture file of that kind) and, last, its record
        with ``tiles`` (kind -> by rank, the (x, y, width, height) of that rank's picture in the montage, or None).
        The old record goes first; every other picture file of the kinds written goes (an earlier deepvis's
        per-rank files), and so does every other kind unless the old record was made from the same (``topk``,
        ``basis``, ``network``): then its kinds (files and tiles) are kept and added to the record. ``old``: the
        unit's record where the caller read it already (:meth:`read_crops_record`; {} for none), else it is read here.
        Returns the record written.

        A run killed part way leaves no record that describes pictures not on disk, and loses no kind it was not
        asked to remake: the record is first cut down to the kinds kept (or removed), the new one written last."""
        unknown = [kind for kind in montages if kind not in CROP_KINDS]
        if unknown:
            self.unit_file(layer, channel, unknown[0])  # the error naming it
        folder = os.fspath(self.unit_dir(layer, channel))
        record_path = os.path.join(folder, "crops.json")
        old = (self.read_crops_record(layer, channel) if old is None else old) or {}
        same = bool(old) and all(old.get(key) == record.get(key) for key in ("topk", "basis", "network"))
        kinds = sorted(montages)
        keep = set(old.get("kinds", [])) - set(kinds) if same else set()
        old_tiles = old.get("tiles") if same and isinstance(old.get("tiles"), dict) else {}
        kept_tiles = {kind: old_tiles[kind] for kind in keep if kind in old_tiles}
        if keep:  # the record, first, says only what stays untouched
            atomic_write_bytes(record_path, json.dumps({**old, "kinds": sorted(keep), "tiles": kept_tiles})
                               .encode("utf-8"), durable=False)
        else:
            remove_if_present(record_path)
        written = {f"{kind}.jpg" for kind in montages}
        for kind, data in montages.items():  # pictures are remade from the top-k at will: not flushed one by one
            # renamed over the old one, never removed first: another run's record may name it, a reader may be
            # opening it (on ext4 a file renamed over another is flushed: ~0.4 ms a picture in a --force re-run)
            atomic_write_bytes(os.path.join(folder, f"{kind}.jpg"), data, durable=False)
        for path in self.crop_files(layer, channel):  # other kinds' montages, an earlier deepvis's per-rank files
            if path.name not in written and _crop_file_kind(path.name) not in keep:
                remove_if_present(os.fspath(path))
        record = {**record, "kinds": sorted(set(kinds) | keep),
                  "tiles": {kind: [list(box) if box else None for box in boxes]
                            for kind, boxes in sorted({**kept_tiles, **tiles}.items())}}
        # not flushed either: a record lost with its pictures in a power cut only means the unit is made again
        # and compact: json's C encoder (an indented record takes the slower Python one, for every unit made)
        atomic_write_bytes(record_path, json.dumps(record).encode("utf-8"), durable=False)
        return record

    def remove_crops(self, layer: str, channel: int) -> bool:
        """Remove a unit's crops, backward images, montages and record; True if there was anything."""
        files = self.crop_files(layer, channel)
        record = self.crops_record_path(layer, channel)
        for path in [record] + files:
            path.unlink(missing_ok=True)
        return bool(files)
