"""Writing a run's pictures: each unit's montages and record, encoded and written by writer threads while the next
backward passes run, and each layer's sprites (every current unit's best picture) once its units are written."""

from __future__ import annotations

import hashlib
import io
import json
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from deepvis.jobs.crops.pictures import UnitPictures
from deepvis.jobs.crops.records import is_current, made_from
from deepvis.jobs.inputs import CORES
from deepvis.pixels import render
from deepvis.store import Manifest, Store, sprite_tile

#: Threads encoding and writing pictures while the next passes run: one per two cores, at most 4. Creating files
#: costs CPU (kernel) time; more threads than that on 2 cores only slowed torch's own threads down (crops of
#: blocks.2.depthwise.act: 0.64-0.67x the bare passes with 4 writers, 0.70-0.72x with 1 or 2).
WRITERS = max(1, min(4, CORES // 2))
#: Units whose sprite tiles (their best pictures, small) are kept in memory for their layer's sprites; the sprites
#: read any others back from the store.
SPRITE_TILES_KEPT = 2048
#: Pixels between the pictures of a unit's montage.
MONTAGE_PAD = 2


@dataclass(frozen=True)
class Written:
    """What writing a unit gave: its ``channel``, the crops ``record`` written and ``tiles``:
    ``{channel: {kind: sprite tile}}`` where its sprite tiles were made (else {})."""

    channel: int
    record: dict
    tiles: dict[int, dict]


@dataclass(frozen=True)
class _Job:
    """A unit handed to the writers: its layer, its pictures, and whether to make its sprite tiles."""

    layer: str
    unit: UnitPictures
    sprite: bool


@dataclass(frozen=True)
class _Pending:
    job: _Job
    future: Future


def _jpeg(image: np.ndarray) -> bytes:
    """A montage as JPEG, chroma at full resolution (4:4:4): a rank's tile cut from it is closer to the rendered
    picture than a JPEG of the tile alone at 4:2:0, whose colour bleeds across the tiles' edges."""
    buffer = io.BytesIO()
    render.to_pil(image).save(buffer, format="JPEG", quality=90, subsampling=0)
    return buffer.getvalue()


def _write_unit(store: Store, layer: str, channel: int, images: dict[str, list[np.ndarray]], ranks: list[int],
                record: dict, saved: dict | None = None, sprite: bool = True) -> Written:
    """Encode a unit's pictures, one montage per kind (its only picture file: each rank's tile is in the record), and
    write them: run by the writer threads, so the encoding (which frees the GIL) overlaps the next backward passes.
    ``saved``: the unit's crops record as read before ({}: none; None: read it here). Where ``sprite``, the result
    holds each kind's best (first rank's) picture at the sprites' tile size (not without a rank-0 picture)."""
    montages, tiles = {}, {}
    for kind, pictures in images.items():
        boxes = render.montage_boxes([p.shape[:2] for p in pictures], pad=MONTAGE_PAD)
        montages[kind] = _jpeg(render.montage(pictures, pad=MONTAGE_PAD))
        by_rank = [None] * (max(ranks) + 1)
        for rank, box in zip(ranks, boxes):
            by_rank[rank] = box
        tiles[kind] = by_rank
    written = store.write_crops(layer, channel, montages, tiles, record, old=saved)
    if not sprite or ranks[0] != 0:
        return Written(channel, written, {})
    return Written(channel, written, {channel: {kind: sprite_tile(render.to_pil(pictures[0]))
                                                for kind, pictures in images.items()}})


class WriterPool:
    """The writer threads of a run. Each unit written goes into ``records`` (layer -> channel -> crops record) and
    is counted in ``written``; the sprite tiles of the first :data:`SPRITE_TILES_KEPT` units of the layers in
    progress are kept for their layer's sprites. At most ``backlog`` units wait (a slow disk holds the passes back)."""

    def __init__(self, store: Store, records: dict[str, dict[int, dict | None]], layers: list[str], backlog: int,
                 threads: int = WRITERS):
        self.store, self.records, self.backlog = store, records, backlog
        self.written = dict.fromkeys(layers, 0)
        self._tiles: dict[str, dict[int, dict]] = {name: {} for name in layers}
        self._asked = dict.fromkeys(layers, 0)  # units whose writers make sprite tiles, per layer in progress
        self._pending: list[_Pending] = []
        self._threads = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="deepvis-crops-writer")

    def __enter__(self) -> "WriterPool":
        return self

    def __exit__(self, *exc) -> None:
        self._threads.shutdown(wait=True)

    def submit(self, layer: str, unit: UnitPictures) -> None:
        """Hand a unit's pictures to a writer thread."""
        sprite = sum(self._asked.values()) < SPRITE_TILES_KEPT  # the sprites read the others back
        self._asked[layer] += sprite
        job = _Job(layer, unit, sprite)
        self._pending.append(_Pending(job, self._threads.submit(_write_unit, *_arguments(self.store, job),
                                                                sprite=sprite)))

    def settle(self) -> None:
        """Wait for the oldest units while more than ``backlog`` wait."""
        while len(self._pending) > self.backlog:
            done = self._pending.pop(0)
            self._collect(done.job.layer, done.future.result())

    def finish(self, layer: str) -> dict[int, dict]:
        """Every unit of ``layer`` written; returns the sprite tiles made (channel -> kind -> tile). What no writer
        has started yet, this thread writes itself (from the end) instead of waiting idle."""
        ours = [p for p in self._pending if p.job.layer == layer]
        self._pending = [p for p in self._pending if p.job.layer != layer]
        for pending in reversed(ours):
            if pending.future.cancel():
                self._collect(layer, _write_unit(*_arguments(self.store, pending.job), sprite=pending.job.sprite))
        for pending in ours:
            if not pending.future.cancelled():
                self._collect(layer, pending.future.result())
        self._asked[layer] = 0
        return self._tiles.pop(layer)

    def _collect(self, layer: str, written: Written) -> None:
        self.records[layer][written.channel] = written.record
        self._tiles[layer].update(written.tiles)
        self.written[layer] += 1


def _arguments(store: Store, job: _Job) -> tuple:
    """:func:`_write_unit`'s positional arguments for ``job``."""
    unit = job.unit
    return store, job.layer, unit.todo.channel, unit.pictures, unit.ranks, unit.todo.record, unit.todo.saved


def write_sprites(store: Store, manifest: Manifest, name: str, kinds: tuple[str, ...], network: str,
                  made: dict | None = None, hashes: list[str] | None = None,
                  records: dict[int, dict | None] | None = None) -> None:
    """The layer's sprites of ``kinds`` from its current units; ``made``: channel -> kind -> sprite tile of the units
    this run made (their rank-0 pictures, already in memory: not read back from the store). ``hashes``: the layer's
    :meth:`~deepvis.store.Store.topk_hashes`, and ``records``: units' crops records, where the caller has them."""
    hashes = hashes if hashes is not None else store.topk_hashes(name)
    basis = made_from(store, manifest, name, network)
    count = manifest.layers[name].channels
    records = {**store.read_crops_records(name, [c for c in range(count) if c not in (records or {})]),
               **(records or {})}
    current = [c for c in range(count) if is_current(records[c], hashes[c], basis)]
    digest = hashlib.sha256(json.dumps([basis, [hashes[c] for c in current]]).encode()).hexdigest()[:16]
    made = made or {}
    saved = {} if made else store.read_sprites_record(name)
    for kind in kinds:
        if not made and (saved.get(kind) or {}).get("made_from") == digest and store.sprite_path(name, kind).is_file():
            continue  # made from exactly these units' pictures: nothing to redo (decoding every montage again)
        store.write_sprite(name, count, kind, [c for c in current if kind in records[c]["kinds"]], digest,
                           tiles={c: tiles[kind] for c, tiles in made.items() if kind in tiles})
