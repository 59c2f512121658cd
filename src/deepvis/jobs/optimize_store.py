"""Optimizing whole layers into a store: batches of units, a progress bar, per-unit files written atomically,
units already done with the same settings skipped (so a killed run resumes), and a layer sprite for the
toolbox's pattern mode."""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from deepvis.core.errors import DeepvisError
from deepvis.core.progress import Progress
from deepvis.core.units import Unit, check_unit, clamp_channels
from deepvis.engine.featvis.methods import Params, method_of
from deepvis.engine.featvis.objectives import make_target
from deepvis.engine.featvis.result import OptimizeResult
from deepvis.engine.featvis.run import OptimizeWarning, failure_advice, optimize_targets
from deepvis.engine.probe import layer_info
from deepvis.models.model import Model, weights_hash
from deepvis.pixels.render import png_bytes
from deepvis.jobs.provenance import check_model
from deepvis.store import Store


log = logging.getLogger(__name__)

#: Sprites are rebuilt from all of a layer's pictures: at most this often while a run goes on, and at its end.
SPRITE_EVERY_SECONDS = 60.0


@dataclass(frozen=True)
class OptimizeStoreConfig:
    """Every setting of optimizing whole layers into a store, with its default (the one place for them:
    ``deepvis optimize --out`` takes its flags' defaults from here). ``channels``: None for every channel;
    ``batch_size`` units are optimized together (results do not depend on it); ``force`` redoes units done."""

    out: str | Path
    layers: tuple[str, ...]
    params: Params
    channels: Sequence[int] | None = None
    objective: str = "unit"
    batch_size: int = 16
    force: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))  # any sequence given; the config stays immutable


@dataclass(frozen=True)
class OptimizeStoreReport:
    """What a run did: the store, the units asked for, those already done with the same settings (skipped), and
    warnings with the fix to try where most of a layer's units failed."""

    store: Store
    layers: tuple[str, ...]
    asked: int
    already_done: int
    warnings: tuple[str, ...] = ()


def optimize_to_store(model: Model, out: str | Path, layers: Sequence[str], params: Params, **settings: Any) -> Store:
    """Optimize ``layers`` into the store ``out`` (``settings``: the other fields of :class:`OptimizeStoreConfig`,
    e.g. ``channels=``, ``force=``); returns the store. Where most of a layer's units failed, an
    :class:`OptimizeWarning` says so with the fix to try, as :func:`deepvis.optimize` does
    (:func:`run_optimize_to_store` returns them in its report instead)."""
    report = run_optimize_to_store(model, OptimizeStoreConfig(out, layers, params, **settings))
    for warning in report.warnings:
        warnings.warn(warning, OptimizeWarning, stacklevel=2)
    return report.store


def run_optimize_to_store(model: Model, config: OptimizeStoreConfig) -> OptimizeStoreReport:
    """Optimize every unit (or ``channels``) of ``layers`` and write each unit's optimized images and record, plus
    each layer's ``optimized`` sprite, into the store ``out`` (:meth:`Store.write_optimized`).

    Units whose record has the same model, method, settings and objective are skipped; units made
    with other settings are an error unless ``force`` (which redoes every unit asked for). ``batch_size`` units are
    optimized together (one image each; results do not depend on the batch).
    """
    params, channels, objective, batch_size = config.params, config.channels, config.objective, config.batch_size
    if batch_size < 1:
        raise DeepvisError("batch size must be at least 1")
    store = Store(config.out)
    provenance = {"model": model.spec, "weights": weights_hash(model),
                  "input_size": list(model.preprocessing.input_size), "objective": objective,
                  "method": method_of(params).name, "params": params.to_json()}
    _check_store_model(store, model, provenance, config.force)
    counts = {layer: layer_info(model, layer).channels for layer in dict.fromkeys(config.layers)}
    asked: list[tuple[str, int]] = []
    for layer, count in counts.items():
        if channels is not None and not list(channels):
            raise DeepvisError("no channels to optimize (empty channel range)")
        wanted = clamp_channels(channels, count, layer, "optimize")
        for channel in wanted:
            check_unit(Unit(layer, channel), layer_info(model, layer).shape)
        asked += [(layer, c) for c in wanted]
    work = asked if config.force else _not_done(store, asked, provenance)
    steps = method_of(params).steps(params)
    # counted in unit-steps (a unit advanced by one iteration), so a long batch shows progress and an ETA too
    bar = Progress(len(asked) * steps, "optimize", unit="unit-steps", enabled=config.progress,
                   initial=(len(asked) - len(work)) * steps)
    if len(work) < len(asked):
        log.info("optimize: %d of %d units already done with these settings (--force redoes them)",
                 len(asked) - len(work), len(asked))
    last_sprite = time.monotonic()
    method = method_of(params)
    context = method.prepare(model, params, store) if method.prepare is not None and work else {}
    outcomes: dict[str, list[OptimizeResult]] = {}
    try:
        for start in range(0, len(work), batch_size):
            batch = work[start:start + batch_size]
            targets = [make_target(model, f"{layer}:{channel}", objective, params.push_dir)
                       for layer, channel in batch]
            began = time.perf_counter()
            stepped = [0]

            def on_step(_ii: int, size: int = len(batch)) -> None:
                stepped[0] += 1
                bar.update(size)

            results = optimize_targets(model, targets, params, on_step, **context)
            bar.update(len(batch) * (steps - stepped[0]))  # units that stopped early (grad 0) finish here
            seconds = time.perf_counter() - began
            for (layer, channel), result in zip(batch, results):
                outcomes.setdefault(layer, []).append(_outcome(result))
                save_result(result, store, layer, channel,
                            {**provenance, "seconds_per_batch": round(seconds, 3), "batch_size": len(batch),
                             "iterations": steps})
            if time.monotonic() - last_sprite > SPRITE_EVERY_SECONDS:
                _write_sprites(store, counts)
                last_sprite = time.monotonic()
    except KeyboardInterrupt:
        bar.close()
        _write_sprites(store, counts)
        saved = sum(store.read_optimized_record(layer, c) is not None for layer, c in asked)
        log.warning("optimize: interrupted; %d of %d units are saved, rerun the same command to continue", saved,
                    len(asked))
        raise
    bar.close()
    _write_sprites(store, counts)
    advice = [failure_advice(results, params, f" of {layer}") for layer, results in outcomes.items()]
    return OptimizeStoreReport(store, tuple(counts), len(asked), len(asked) - len(work),
                               tuple(a for a in advice if a))


def _outcome(result: OptimizeResult) -> OptimizeResult:
    """The part of a result the end-of-run summary needs (not its images)."""
    return OptimizeResult(result.target, result.method, None, None, None,
                          {"meta_result": result.record.get("meta_result")}, result.params)


def _write_sprites(store: Store, counts: dict[str, int]) -> None:
    for layer, count in counts.items():
        store.write_sprite(layer, count, "optimized")


def _same_settings(saved: dict, provenance: dict) -> str | None:
    """None when a unit's saved record was made with these settings, else what differs."""
    for key in ("weights", "input_size", "method", "objective", "params"):
        if saved.get(key) != provenance[key]:
            return f"{key} {saved.get(key)!r} instead of {provenance[key]!r}" if key != "params" else "other settings"
    return None


def _not_done(store: Store, asked: list[tuple[str, int]], provenance: dict) -> list[tuple[str, int]]:
    """The units still to do; an error when some were done with other settings (a mixed store misleads)."""
    todo, clash = [], None
    for layer, channel in asked:
        saved = store.read_optimized_record(layer, channel)
        if saved is None:  # not done, or an unreadable record: do it
            todo.append((layer, channel))
            continue
        difference = _same_settings(saved, provenance)
        if difference and clash is None:
            clash = f"{layer}:{channel} was optimized with {difference}"
    if clash:
        raise DeepvisError(f"the store '{store.root}' already holds units made differently ({clash}): add --force "
                           "to redo them, or choose another --out")
    return todo


def _check_store_model(store: Store, model: Model, provenance: dict, force: bool) -> None:
    """A store holds one model's pictures: refuse another model's weights, preprocessing or input size (with
    ``force``: a warning, and the units redone)."""
    if not store.exists():
        return
    manifest = store.read_manifest()
    size = list(manifest.input_size)
    if size != provenance["input_size"] and not force:
        raise DeepvisError(f"the store '{store.root}' was made at input size {size}, the model now has "
                           f"{provenance['input_size']}: use the same --input-size or another --out")
    check_model(store, model, force=force, manifest=manifest)


def save_result(result: OptimizeResult, store: Store | str | Path, layer: str, channel: int,
                info: dict | None = None) -> Path:
    """Write ``result`` as unit ``layer:channel`` of ``store``: the best image (displayed), what the network saw
    (when it differs), further copies, and the record (``info`` plus :meth:`OptimizeResult.to_json`), the record
    last (:meth:`Store.write_optimized`). Returns the best image's path."""
    store = store if isinstance(store, Store) else Store(store)
    input_image = None if result.input_image is result.image else png_bytes(result.input_image)
    return store.write_optimized(layer, channel, png_bytes(result.image), {**(info or {}), **result.to_json()},
                                 input_image=input_image, copies=[png_bytes(i) for i in result.extra_images],
                                 alpha=None if result.alpha is None else png_bytes(result.alpha))
