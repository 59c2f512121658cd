"""The on-disk store of per-unit results; the one module that knows its layout (no other module, and no JavaScript,
spells a store file name: the server hands the browser URLs from :meth:`Store.url`). Every write is atomic.

```
STORE/manifest.json                          Manifest: format, model, preprocessing, image source, k, layers, ...
STORE/images.txt                             image index -> path relative to the image root
STORE/.find-max-checkpoint-R-of-W.pt         an interrupted scan's progress, per process
STORE/<layer>/topk.npz                       values, images, y, x: (C, k) arrays, rank 0 = highest
STORE/<layer>/<channel:04d>/<kind>.jpg       montage of the unit's k pictures of one kind, by rank: the crops
                                             (kind image) or backward images (deconv, gradient, guided); the only
                                             picture file of a kind (one rank's: :meth:`Store.unit_crop`)
STORE/<layer>/<channel:04d>/crops.json       what the unit's crops were made from (top-k hash, basis, network,
                                             kinds) and each kind's tiles by rank (x, y, width, height in its
                                             montage), written last; no record or another top-k: stale
STORE/<layer>/<channel:04d>/optimized.png    best optimized image (+ optimized_input.png, optimized_NN.png copies,
                                             optimized_alpha.png: MACO's transparency map, optimized.json: the
                                             record, written last)
STORE/<layer>/evaluation.json                deepvis evaluate: quality metrics per unit and method
STORE/spectrum.npz                           MACO's fixed magnitude spectrum, estimated from the store's images
STORE/<layer>/sprite_<kind>.jpg              every channel of one kind in a square grid (pattern mode)
STORE/<layer>/sprites.json                   what each sprite was made from
STORE/<layer>/crops_plan.json                how the layer's crops are made (effective receptive field, backward
                                             window), measured once and kept while its network and images are
STORE/site/                                  the static site deepvis export writes by default (deepvis.export)
```
The manifest's ``recipe`` reloads the store's model (:func:`deepvis.jobs.provenance.model_from_manifest`);
:func:`deepvis.jobs.provenance.check_model` refuses another. A re-scan (:meth:`Store.invalidate`) removes exactly the derived files it made stale.
``<layer>`` is the layer name with every character outside ``[A-Za-z0-9._-]`` percent-encoded. Readers also accept
stores of earlier deepvis versions, which wrote each rank's picture as its own file ``<kind>_<rank:02d>.jpg`` (and
no tiles in the record), and the original toolbox's ``unit_jpg_vis`` layout (``max_im/``, ``max_deconv/``,
``regularized_opt/``; its montages cannot be cut by rank).
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import math
import os
import string
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import numpy as np
from PIL import Image

from deepvis.core.errors import DeepvisError
from deepvis.core.files import remove_if_present, atomic_write_bytes

FORMAT_VERSION = 1
#: Side of one channel's cell in a layer sprite, pixels.
SPRITE_TILE = 64
#: Per-unit pictures made from a unit's top-k images: the receptive-field crop and its backward images.
CROP_KINDS = ("image", "deconv", "gradient", "guided")
#: Kinds of layer sprites: the optimized images, and the best (rank 0) picture of each crop kind.
SPRITE_KINDS = ("optimized",) + CROP_KINDS
_SAFE = set(string.ascii_letters + string.digits + "._-")
#: Numbers for temporary file names, unique within the process (with its pid and the thread: across them too).


def sprite_tile(picture: Image.Image) -> Image.Image:
    """A picture as one channel's tile of a layer sprite (:data:`SPRITE_TILE` pixels a side, RGB)."""
    if picture.size == (SPRITE_TILE, SPRITE_TILE) and picture.mode == "RGB":
        return picture
    return picture.convert("RGB").resize((SPRITE_TILE, SPRITE_TILE), Image.BILINEAR)


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


@functools.lru_cache(maxsize=4096)
def layer_dirname(layer: str) -> str:
    """The layer name with every character outside ``[A-Za-z0-9._-]`` percent-encoded (UTF-8)."""
    return "".join(c if c in _SAFE else "".join(f"%{b:02X}" for b in c.encode("utf-8")) for c in layer)


def _read_rgb(path: Path) -> Image.Image:
    """A picture file as an RGB image, read whole (the file closed)."""
    with Image.open(path) as image:
        return image.convert("RGB")


def _cut(montage: Image.Image, box) -> Image.Image:
    """One tile of a montage, ``box`` = (x, y, width, height)."""
    x, y, w, h = box
    return montage.crop((x, y, x + w, y + h))


# ---------------------------------------------------------------------------------------------------- manifest
@dataclass
class LayerRecord:
    """One scanned layer: its channel count, output shape (C, H, W) or (C,), receptive field (JSON, None where a
    unit sees the whole input), layout (JSON, see :mod:`deepvis.layouts`)."""

    channels: int
    shape: list[int]
    receptive_field: dict | None = None
    layout: dict | None = None

    def to_json(self) -> dict:
        data = {"channels": self.channels, "shape": list(self.shape), "receptive_field": self.receptive_field}
        if self.layout is not None:
            data["layout"] = self.layout
        return data

    @classmethod
    def from_json(cls, data: dict) -> "LayerRecord":
        return cls(int(data["channels"]), [int(v) for v in data["shape"]], data.get("receptive_field"),
                   data.get("layout"))


@dataclass
class SkippedImage:
    """An image the scan could not read: its index in ``images.txt``, its path there, and why."""

    index: int
    path: str
    reason: str

    def to_json(self) -> dict:
        return {"index": self.index, "path": self.path, "reason": self.reason}

    @classmethod
    def from_json(cls, data: dict) -> "SkippedImage":
        return cls(int(data["index"]), str(data["path"]), str(data["reason"]))


@dataclass
class Manifest:
    """What a find-max scan was made from: ``manifest.json`` (``format`` is checked when read).

    ``model`` the model spec, ``weights_sha256`` its weights' hash, ``preprocessing`` its JSON, ``image_root`` the
    folder ``images.txt`` is relative to, ``images`` how many, ``k`` images per unit, ``layers`` by name,
    ``skipped`` unreadable images, ``config`` the settings a resumed scan must match, ``provenance`` how it was run,
    ``recipe`` how to load the model again (:mod:`deepvis.models.recipe`: spec, weights, config, mean and labels
    files as absolute paths with their SHA-256 hashes, ``--arch``, every preprocessing setting given; absent in
    stores of older deepvis versions, which still read: format 1 gains only this optional key).
    """

    model: str
    weights_sha256: str
    preprocessing: dict
    image_root: str
    images: int
    k: int
    layers: dict[str, LayerRecord]
    skipped: list[SkippedImage] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    recipe: dict | None = None
    format: int = FORMAT_VERSION

    @property
    def input_size(self) -> tuple[int, int]:
        """The model input size (height, width) the store was made at."""
        return tuple(self.preprocessing["input_size"])

    def to_json(self) -> dict:
        return {"format": self.format, "model": self.model, "weights_sha256": self.weights_sha256,
                "preprocessing": self.preprocessing, "image_root": self.image_root, "images": self.images,
                "k": self.k, "layers": {name: layer.to_json() for name, layer in self.layers.items()},
                "skipped": [s.to_json() for s in self.skipped], "config": self.config, "provenance": self.provenance,
                **({"recipe": self.recipe} if self.recipe is not None else {})}

    @classmethod
    def from_json(cls, data: dict, source: str = "the manifest") -> "Manifest":
        """Read a manifest's JSON; a format newer than this deepvis reads, or a missing field, is a DeepvisError."""
        if not isinstance(data, dict):
            raise DeepvisError(f"{source} is not a deepvis manifest (not a JSON object)")
        version = data.get("format", 1)
        if not isinstance(version, int) or version < 1:
            raise DeepvisError(f"{source} has an unknown format {version!r}")
        if version > FORMAT_VERSION:
            raise DeepvisError(f"{source} was written in store format {version} by a newer deepvis; this one reads "
                               f"format {FORMAT_VERSION} and older: upgrade deepvis (pip install -U deepvis)")
        try:
            return cls(model=data["model"], weights_sha256=data["weights_sha256"],
                       preprocessing=data["preprocessing"], image_root=data["image_root"], images=int(data["images"]),
                       k=int(data["k"]),
                       layers={name: LayerRecord.from_json(v) for name, v in data["layers"].items()},
                       skipped=[SkippedImage.from_json(s) for s in data.get("skipped", [])],
                       config=data.get("config", {}), provenance=data.get("provenance", {}),
                       recipe=data.get("recipe"), format=version)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DeepvisError(f"{source} is damaged ({type(exc).__name__}: {exc}): make the store again with "
                               "deepvis find-max") from None


# ---------------------------------------------------------------------------------------------------- the store
#: The pictures a unit's pane shows, by caption: (the kind in this layout, the file of the original toolbox's
#: unit_jpg_vis layout relative to the store root, with {layer} and {channel}, or None).
UNIT_PICTURES = {
    "optimized": ("optimized", "regularized_opt/{layer}/{layer}_{channel:04d}_montage.jpg"),
    "attribution": ("optimized_alpha", None),
    "images": ("image", "max_im/{layer}/{layer}_{channel:04d}.jpg"),
    "deconv": ("deconv", "max_deconv/{layer}/{layer}_{channel:04d}.jpg"),
    "guided": ("guided", None),
    "gradient": ("gradient", None),
}


#: How crops are drawn, part of every crop's basis: a field smaller than ``min_size`` pixels is shown with
#: context around it up to that size, the field marked by an ``outline``-pixel box drawn just outside it.
CROPS_SETTINGS = {"min_size": 32, "outline": 1}


class Store:
    """A directory of precomputed per-unit results for one model (also reads the original toolbox's
    ``unit_jpg_vis`` layout: ``max_im/``, ``max_deconv/``, ``regularized_opt/``)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    # ------------------------------------------------------------ paths
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
        picture is :meth:`unit_crop`."""
        if kind not in CROP_KINDS:
            raise DeepvisError(f"unknown kind {kind!r}: use any of {', '.join(CROP_KINDS)}")
        return self.unit_dir(layer, channel) / f"{kind}.jpg"

    def _rank_file(self, layer: str, channel: int, kind: str, rank: int) -> Path:
        """Where earlier deepvis versions wrote one rank's picture of a kind as its own file."""
        return self.unit_dir(layer, channel) / f"{kind}_{rank:02d}.jpg"

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

    def _original(self, pattern: str, layer: str, channel: int = 0) -> Path:
        return self.root / pattern.format(layer=layer_dirname(layer), channel=channel)

    def url(self, path: str | Path) -> str:
        """The URL path of a file in the store, relative to the store root, percent-encoded once (the server
        serves the store under a prefix and decodes it once: the result names the file exactly)."""
        return quote(Path(path).relative_to(self.root).as_posix(), safe="/")

    # ------------------------------------------------------------ what exists, for viewers
    def unit_pictures(self, layer: str, channel: int) -> dict[str, Path]:
        """The per-unit pictures that exist for a unit, by caption (``optimized``, ``images``, ``deconv``,
        ``guided``, ``gradient``), in this project's layout or, failing that, the original toolbox's."""
        found = {}
        for caption, (kind, original) in UNIT_PICTURES.items():
            mine = (self.optimized_file(layer, channel) if kind == "optimized" else
                    self.optimized_file(layer, channel, "alpha") if kind == "optimized_alpha" else
                    self.unit_file(layer, channel, kind))
            for path in (mine, self._original(original, layer, channel) if original else None):
                if path is not None and path.is_file():
                    found[caption] = path
                    break
        return found

    def sprites(self, layer: str) -> dict[str, Path]:
        """The layer's sprites that exist, by kind; the original toolbox's ``regularized_opt/<layer>/whole_layer.jpg``
        counts as ``optimized`` when there is no other."""
        found = {kind: self.sprite_path(layer, kind) for kind in SPRITE_KINDS if self.sprite_path(layer, kind).is_file()}
        original = self._original("regularized_opt/{layer}/whole_layer.jpg", layer)
        if "optimized" not in found and original.is_file():
            found = {"optimized": original, **found}
        return found

    def sprite(self, layer: str, kinds: tuple[str, ...] = ("optimized", "image")) -> Path | None:
        """The layer's sprite for pattern mode: the first of ``kinds`` that exists, else the original toolbox's
        ``regularized_opt/<layer>/whole_layer.jpg``."""
        for kind in kinds:
            path = self.sprite_path(layer, kind)
            if path.is_file():
                return path
        original = self._original("regularized_opt/{layer}/whole_layer.jpg", layer)
        return original if original.is_file() else None

    # ------------------------------------------------------------ writing pictures
    def write_sprite(self, layer: str, count: int, kind: str, channels=None, made_from: str | None = None,
                     tiles: dict | None = None) -> Path | None:
        """Every channel's picture of ``kind`` (the best optimized image, or the rank-0 crop kind) in a square grid
        (row-major, no spacing), the picture of a whole layer in pattern mode; channels without one (or not in
        ``channels``, when given: the units whose pictures are current) stay black. None, and no sprite left, if no
        channel has one. ``made_from`` (what the pictures were made from) goes into the layer's sprites record.
        ``tiles``: channel -> its tile (:func:`sprite_tile`) where the caller has it already (not read back)."""
        target = self.sprite_path(layer, kind)
        side = math.ceil(math.sqrt(count))
        sprite = Image.new("RGB", (side * SPRITE_TILE, side * SPRITE_TILE))
        found = False
        tiles = tiles or {}
        for channel in range(count) if channels is None else sorted(channels):
            if channel in tiles:
                tile = tiles[channel]
            elif kind == "optimized":
                path = self.optimized_file(layer, channel)
                tile = None
                if path.exists():
                    with Image.open(path) as image:
                        tile = image.convert("RGB")
            else:
                tile = self.unit_crop(layer, channel, kind, 0)
            if tile is not None:
                tile = sprite_tile(tile)
                row, col = divmod(channel, side)
                sprite.paste(tile, (col * SPRITE_TILE, row * SPRITE_TILE))
                found = True
        if not found:
            self.remove_sprite(layer, kind)
            return None
        buffer = io.BytesIO()
        sprite.save(buffer, format="JPEG", quality=90)
        # made again from the store's pictures at will, like them: not flushed to the disk (that took longer than the
        # rest of a sprite)
        atomic_write_bytes(target, buffer.getvalue(), durable=False)
        records = self.read_sprites_record(layer)
        records[kind] = {"made_from": made_from}
        atomic_write_bytes(self.sprites_record_path(layer), json.dumps(records, indent=1).encode("utf-8"),
                           durable=False)
        return target

    def read_sprites_record(self, layer: str) -> dict:
        """What each of the layer's sprites was made from, by kind (empty when none was recorded)."""
        return self._read_json(self.sprites_record_path(layer)) or {}

    def remove_sprite(self, layer: str, kind: str) -> None:
        self.sprite_path(layer, kind).unlink(missing_ok=True)
        records = self._read_json(self.sprites_record_path(layer))
        if records and kind in records:
            del records[kind]
            atomic_write_bytes(self.sprites_record_path(layer), json.dumps(records, indent=1).encode("utf-8"))

    @staticmethod
    def _read_json(path: str | Path) -> dict | None:
        try:
            with open(path, "rb") as handle:
                data = json.loads(handle.read())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    # ------------------------------------------------------------ crops and their "made from" records
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

    def remove_optimized(self, layer: str, channel: int) -> bool:
        """Remove a unit's optimized images and record; True if there was anything."""
        folder = self.unit_dir(layer, channel)
        files = list(folder.glob("optimized*.png")) + list(folder.glob("optimized.json")) if folder.is_dir() else []
        self.optimized_file(layer, channel, "record").unlink(missing_ok=True)
        for path in files:
            path.unlink(missing_ok=True)
        return bool(files)

    def unit_channels(self, layer: str) -> list[int]:
        """The channels that have a folder in the store."""
        folder = self.layer_dir(layer)
        if not folder.is_dir():
            return []
        return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and len(p.name) == 4 and p.name.isdigit())

    def topk_hashes(self, layer: str, top: dict | None = None, names: list[str] | None = None) -> list[str]:
        """Per channel, a hash of its top-k: the images (their paths in ``images.txt``) and positions, rank order.
        A unit's crops are current while this and the layer's :meth:`crops_basis` are what they were made from.
        ``top`` / ``names``: the layer's :meth:`read_topk` and :meth:`read_image_list` where the caller has them."""
        top = self.read_topk(layer) if top is None else top
        names = self.read_image_list() if names is None else names
        hashes = []
        for channel in range(top["images"].shape[0]):
            entries = [f"{names[i] if 0 <= i < len(names) else i}|{y}|{x}"
                       for i, y, x in zip(top["images"][channel].tolist(), top["y"][channel].tolist(),
                                          top["x"][channel].tolist()) if i >= 0]
            hashes.append(hashlib.sha256("\n".join(entries).encode("utf-8")).hexdigest()[:16])
        return hashes

    @staticmethod
    def crops_basis(manifest: "Manifest", layer: str) -> str:
        """A hash of what every crop of a layer depends on besides its top-k: the network, the preprocessing, the
        layer's receptive field and layout (its effective field is measured from these, on the store's images), and
        how crops are drawn (:data:`CROPS_SETTINGS`: crops made before a change of these are redone)."""
        record = manifest.layers[layer]
        basis = [manifest.weights_sha256, manifest.preprocessing, record.receptive_field, record.layout]
        if CROPS_SETTINGS:
            basis.append(CROPS_SETTINGS)
        return hashlib.sha256(json.dumps(basis, sort_keys=True).encode("utf-8")).hexdigest()[:16]

    def invalidate(self, manifest: "Manifest", previous: "Manifest | None" = None) -> dict[str, int]:
        """After a (re-)scan: remove every derived file that is no longer what the store's top-k and model would
        make — crops whose unit's top-k or layer basis changed (or whose record is missing), the crop sprites of a
        layer where any changed, optimized images of another network or input size, and everything of a layer
        the previous scan had and this one has not. Returns counts of removed units by what was removed."""
        removed = {"crops": 0, "optimized": 0}
        layers = list(manifest.layers) + [name for name in (previous.layers if previous else {})
                                          if name not in manifest.layers]
        for layer in layers:
            scanned = layer in manifest.layers
            hashes = self.topk_hashes(layer) if scanned else []
            basis = self.crops_basis(manifest, layer) if scanned else None
            changed = not scanned
            for channel in self.unit_channels(layer):
                record = self.read_crops_record(layer, channel)
                current = (record is not None and channel < len(hashes) and record.get("topk") == hashes[channel]
                           and record.get("basis") == basis and record.get("network") == manifest.weights_sha256)
                if not current and self.remove_crops(layer, channel):
                    removed["crops"] += 1
                    changed = True
                saved = self.read_optimized_record(layer, channel)
                if saved is not None and (saved.get("weights") != manifest.weights_sha256 or
                                          saved.get("input_size") != list(manifest.input_size)):
                    removed["optimized"] += self.remove_optimized(layer, channel)
                    self.remove_sprite(layer, "optimized")
            if changed:
                for kind in CROP_KINDS:
                    self.remove_sprite(layer, kind)
            if not scanned:
                self.topk_path(layer).unlink(missing_ok=True)
        return removed

    def write_optimized(self, layer: str, channel: int, best: bytes, record: dict, input_image: bytes | None = None,
                        copies: list[bytes] = (), alpha: bytes | None = None) -> Path:
        """Write a unit's optimization result (PNG bytes): the best image, what the network saw (when it differs),
        further copies, and the JSON ``record``. The old record goes first and the new one is written last, so a
        unit counts as done (:meth:`read_optimized_record`) only once all its pictures are new. Returns the best
        image's path."""
        self.optimized_file(layer, channel, "record").unlink(missing_ok=True)
        pictures = {self.optimized_file(layer, channel): best}
        if input_image is not None:
            pictures[self.optimized_file(layer, channel, "input")] = input_image
        pictures.update({self.optimized_file(layer, channel, n): data for n, data in enumerate(copies, start=1)})
        if alpha is not None:
            pictures[self.optimized_file(layer, channel, "alpha")] = alpha
        for path, data in pictures.items():
            atomic_write_bytes(path, data)
        for stale in self.unit_dir(layer, channel).glob("optimized_*.png"):
            if stale not in pictures:
                stale.unlink()
        atomic_write_bytes(self.optimized_file(layer, channel, "record"), json.dumps(record, indent=1).encode("utf-8"))
        return self.optimized_file(layer, channel)

    def read_optimized_record(self, layer: str, channel: int) -> dict | None:
        """A unit's optimization record, or None when it has none (not done, or an unreadable record)."""
        try:
            return json.loads(self.optimized_file(layer, channel, "record").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def write_spectrum(self, magnitude: np.ndarray, made_from: dict) -> None:
        """Save MACO's magnitude spectrum (and what it was estimated from)."""
        buffer = io.BytesIO()
        np.savez(buffer, magnitude=np.asarray(magnitude, np.float32), made_from=np.asarray(json.dumps(made_from)))
        atomic_write_bytes(self.spectrum_path, buffer.getvalue())

    def read_spectrum(self) -> dict | None:
        """``{"magnitude": (3, H, W//2+1) array, "made_from": dict}``, or None when the store has none."""
        try:
            with np.load(self.spectrum_path, allow_pickle=False) as data:
                return {"magnitude": data["magnitude"], "made_from": json.loads(str(data["made_from"]))}
        except (OSError, KeyError, ValueError):
            return None

    def write_evaluation(self, layer: str, evaluation: dict) -> Path:
        atomic_write_bytes(self.evaluation_path(layer), json.dumps(evaluation, indent=1).encode("utf-8"))
        return self.evaluation_path(layer)

    def read_evaluation(self, layer: str) -> dict | None:
        return self._read_json(self.evaluation_path(layer))

    # ------------------------------------------------------------ manifest and image list
    def exists(self) -> bool:
        return self.manifest_path.is_file()

    def has_pictures(self) -> bool:
        """Whether the folder holds per-unit pictures without a manifest (an optimize-only store) or the original
        toolbox's ``unit_jpg_vis`` layout."""
        if any((self.root / name).is_dir() for name in ("max_im", "max_deconv", "regularized_opt")):
            return True
        try:
            layers = [p for p in self.root.iterdir() if p.is_dir()]
            return any(unit.is_dir() and len(unit.name) == 4 and unit.name.isdigit()
                       for layer in layers for unit in layer.iterdir())
        except OSError:
            return False

    def read_manifest(self) -> Manifest:
        try:
            data = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DeepvisError(f"'{self.root}' is not a deepvis store (no manifest.json): "
                               "make one with deepvis find-max IMAGES --out STORE") from None
        except (OSError, ValueError) as exc:
            raise DeepvisError(f"cannot read '{self.manifest_path}': {exc}") from None
        return Manifest.from_json(data, f"'{self.manifest_path}'")

    def write_manifest(self, manifest: Manifest) -> None:
        atomic_write_bytes(self.manifest_path, json.dumps(manifest.to_json(), indent=2).encode("utf-8"))

    def write_image_list(self, relative_paths: list[str]) -> None:
        atomic_write_bytes(self.image_list_path, "".join(f"{p}\n" for p in relative_paths).encode("utf-8"))

    def read_image_list(self) -> list[str]:
        if not self.image_list_path.is_file():
            raise DeepvisError(f"'{self.root}' has no images.txt")
        return self.image_list_path.read_text(encoding="utf-8").splitlines()

    # ------------------------------------------------------------ top-k
    def write_topk(self, layer: str, values, images, ys, xs) -> None:
        buffer = io.BytesIO()
        np.savez(buffer, values=np.asarray(values, np.float32), images=np.asarray(images, np.int64),
                 y=np.asarray(ys, np.int64), x=np.asarray(xs, np.int64))
        atomic_write_bytes(self.topk_path(layer), buffer.getvalue())

    def read_topk(self, layer: str) -> dict[str, np.ndarray]:
        path = self.topk_path(layer)
        if not path.is_file():
            raise DeepvisError(f"the store '{self.root}' has no top-k for layer '{layer}': "
                               f"run deepvis find-max IMAGES --out {self.root} --layers {layer}")
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in ("values", "images", "y", "x")}
