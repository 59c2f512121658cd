"""A crops run: which units need (re)making, their plans, then their pictures in batched backward passes, written
by the writer threads meanwhile, and each layer's sprites."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from deepvis.core.errors import DeepvisError
from deepvis.core.progress import Progress
from deepvis.core.units import Unit, check_unit, clamp_channels
from deepvis.jobs.crops.config import CropsConfig, CropsReport, LayerCrops
from deepvis.jobs.crops.kinds import KINDS, default_kinds
from deepvis.jobs.crops.pictures import group_pictures
from deepvis.jobs.crops.plan import layer_plan
from deepvis.jobs.crops.records import Todo, is_current, made_from
from deepvis.jobs.crops.writer import WriterPool, write_sprites
from deepvis.jobs.inputs import StoreInputs
from deepvis.jobs.provenance import check_model
from deepvis.models.model import Model, weights_hash
from deepvis.store import Manifest, Store

log = logging.getLogger(__name__)


def make_crops(model: Model, store: str | Path | Store, layers: Sequence[str] | None = None,
               **settings: Any) -> CropsReport:
    """:func:`run_crops` with its :class:`CropsConfig` from keywords: ``make_crops(model, store, layers, kinds=...,
    channels=..., force=..., progress=..., batch_rows=...)``."""
    return run_crops(model, store, CropsConfig(layers=layers, **settings))


def run_crops(model: Model, store: str | Path | Store, config: CropsConfig = CropsConfig()) -> CropsReport:
    """Write crops, backward images, montages and sprites for the units of a find-max store (see
    :class:`CropsConfig` for what is asked); returns what was done.

    Each unit's pictures are followed by a record of what they were made from (its top-k, the layer's receptive
    fields, the network and preprocessing, the kinds, how crops are drawn); a unit whose record says these kinds from
    the current top-k is skipped, any other is (re)made and its stale pictures removed. The model must be the
    store's (its weights hash and preprocessing; :func:`deepvis.jobs.provenance.check_model`): ``force`` uses another
    one anyway, and redoes every unit asked for.

    Fast: the backward images of several units' top images (about ``batch_rows`` rows) are one batched backward pass
    (each row its own unit), and where a layer's receptive field is small the rows are crop-sized windows of the
    inputs instead of whole images (checked, per layer, to give the same pictures as whole images)."""
    started = time.perf_counter()
    store = store if isinstance(store, Store) else Store(store)
    manifest = store.read_manifest()
    network = weights_hash(model)  # hashed once: the check, the plans and every unit's record use it
    check_model(store, model, force=config.force, manifest=manifest, network=network)
    kinds = tuple(config.kinds) if config.kinds is not None else default_kinds(model)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise DeepvisError(f"unknown kind {unknown[0]!r}: use any of {', '.join(KINDS)}")
    layers = list(config.layers or manifest.layers)
    missing = [name for name in layers if name not in manifest.layers]
    if missing:
        raise DeepvisError(f"layer '{missing[0]}' is not in the store (it has {', '.join(manifest.layers)})")
    if manifest.input_size != tuple(model.preprocessing.input_size):
        raise DeepvisError(f"the store was made at input size {list(manifest.input_size)}, the model "
                           f"now has {list(model.preprocessing.input_size)}: use the same --input-size")
    names = store.read_image_list()
    inputs = StoreInputs(model, [Path(manifest.image_root) / p for p in names])
    # which units need (re)making, first: the progress bar's ETA counts only real work, weighted per layer
    scan = _scan(store, manifest, layers, config, kinds, network, names)
    report = CropsReport(store, kinds, {name: LayerCrops(current=scan.current[name]) for name in layers})
    backward = [k for k in kinds if k != "image"]
    todo = scan.todo
    plans = {name: layer_plan(model, inputs, store, manifest, name, backward, network)
             for name in layers if todo[name]}
    k = max(int(manifest.k), 1)
    costs = {name: plan.cost(k, len(backward)) for name, plan in plans.items()}
    total, current = sum(scan.wanted.values()), report.current
    bar = Progress(total, "crops", unit="units", enabled=config.progress, initial=current,
                   total_cost=sum(costs[n] * len(todo[n]) for n in plans))
    per_group = max(1, config.batch_rows // k)
    groups = {name: [todo[name][s:s + per_group] for s in range(0, len(todo[name]), per_group)] for name in plans}
    needed = dict.fromkeys(int(i) for name in plans for unit in todo[name]
                           for i in scan.tops[name]["images"][unit.channel] if i >= 0)
    if len(needed) <= inputs.size:  # decoded before the bar starts: a one-off the first batches would otherwise carry
        inputs.prefetch(list(needed))
    # files are written (each atomically) by writer threads while the next passes run; the layers' groups are
    # interleaved in proportion to their work, so the rate is steady from the first minute and the ETA honest
    with WriterPool(store, scan.records, list(plans), backlog=4 * per_group) as writer:
        for name, index in interleave({name: [costs[name] * len(g) for g in gs] for name, gs in groups.items()}):
            group = groups[name][index]
            for unit in group_pictures(model, inputs, store, name, group, scan.tops[name], plans[name], kinds):
                writer.submit(name, unit)
            writer.settle()
            bar.update(len(group), cost=costs[name] * len(group))
            if index == len(groups[name]) - 1:  # the layer's last group: its files, then its sprites
                tiles = writer.finish(name)
                write_sprites(store, manifest, name, kinds, network, tiles, scan.hashes[name], scan.records[name])
    for name in layers:  # every asked layer's sprites are rewritten, as before, also where no unit needed work
        if name not in groups:
            write_sprites(store, manifest, name, kinds, network, None, scan.hashes[name], scan.records[name])
    bar.close()
    for name, count in writer.written.items():
        report.layers[name].made = count
    if current:
        _note(report, f"crops: {current} of {total} units were already made from their current top-k (--force "
                      "redoes them)")
    report.seconds = round(time.perf_counter() - started, 3)
    return report


@dataclass
class _Scan:
    """A run's look at the store before any work: per layer, its top-k (``tops``) and their ``hashes``, the units'
    crops ``records`` known (read, then written by the run), the units to (re)make (``todo``), how many units were
    asked (``wanted``) and how many of them are ``current``."""

    tops: dict[str, dict]
    hashes: dict[str, list[str]]
    records: dict[str, dict[int, dict | None]]
    todo: dict[str, list[Todo]]
    wanted: dict[str, int]
    current: dict[str, int]


def _scan(store: Store, manifest: Manifest, layers: list[str], config: CropsConfig, kinds: tuple[str, ...],
          network: str, names: list[str]) -> _Scan:
    """Which of the asked units need (re)making: any whose record is not :func:`is_current` with ``kinds`` (every
    one, with ``force``)."""
    wanted = {name: list(dict.fromkeys(clamp_channels(config.channels, manifest.layers[name].channels, name,
                                                      "crops"))) for name in layers}  # each channel once
    tops = {name: store.read_topk(name) for name in layers}
    hashes = {name: store.topk_hashes(name, tops[name], names) for name in layers}
    scan = _Scan(tops, hashes, {}, {}, {name: len(wanted[name]) for name in layers}, {})
    for name in layers:
        basis = made_from(store, manifest, name, network)
        scan.todo[name], scan.current[name] = [], 0
        records = scan.records[name] = store.read_crops_records(name, wanted[name])
        for channel in wanted[name]:
            check_unit(Unit(name, channel), tuple(manifest.layers[name].shape))
            saved = records[channel]
            if config.force or not is_current(saved, hashes[name][channel], basis, kinds):
                # saved: the writer needs it, not read again
                scan.todo[name].append(Todo(channel, {"topk": hashes[name][channel], **basis}, saved or {}))
                del records[channel]  # written again (or removed) below
            else:
                scan.current[name] += 1
    return scan


def _note(report: CropsReport, note: str) -> None:
    """A note for the user: in the report (the command line prints it) and the log."""
    report.notes.append(note)
    log.info(note)


def interleave(work: dict[str, list[float]]) -> list[tuple[str, int]]:
    """The order to run several layers' groups in: ``(layer, group index)``, each next group from the layer that has
    done the smallest share of its own work (``work``: each group's estimated cost, in order). Every layer starts
    in the first round, and every stretch of the run holds the same mix of layers: its rate is the whole run's."""
    totals = {name: sum(costs) or 1.0 for name, costs in work.items()}
    done = {name: 0.0 for name in work}
    nexts = {name: 0 for name in work}
    order = []
    while True:
        open_ = [name for name in work if nexts[name] < len(work[name])]
        if not open_:
            return order
        name = min(open_, key=lambda n: done[n] / totals[n])  # ties: the order given, so every layer starts early
        order.append((name, nexts[name]))
        done[name] += work[name][nexts[name]]
        nexts[name] += 1
