"""Optimizing whole layers into a store: batches of units, a progress bar, per-unit files written atomically,
units already done skipped (so a killed run resumes), and a layer sprite for the toolbox's pattern mode."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Sequence

from ..errors import DeepvisError
from ..models.model import Model
from ..probe import layer_info
from ..progress import Progress
from ..store import Store
from .modern import ModernParams, optimize_modern
from .objectives import make_target
from .paper import optimize_paper
from .presets import PaperParams

DONE_FILE = "optimized.json"


def optimize_to_store(model: Model, out: str | Path, layers: Sequence[str], params: PaperParams | ModernParams,
                      channels: Sequence[int] | None = None, objective: str = "unit", batch_size: int = 16,
                      force: bool = False, progress: bool = True) -> Store:
    """Optimize every unit (or ``channels``) of ``layers`` and write ``<layer>/<channel>/optimized.png`` and
    ``optimized.json`` plus ``<layer>/sprite_optimized.jpg`` into the store ``out``.

    Units that already have ``optimized.json`` are skipped unless ``force``. ``batch_size`` units are optimized
    together (one image each; results do not depend on the batch).
    """
    if batch_size < 1:
        raise DeepvisError("batch size must be at least 1")
    store = Store(out)
    _check_store_model(store, model)
    work: list[tuple[str, int]] = []
    counts = {}
    for layer in dict.fromkeys(layers):
        count = layer_info(model, layer).channels
        counts[layer] = count
        wanted = list(channels) if channels is not None else list(range(count))
        bad = [c for c in wanted if not 0 <= c < count]
        if bad:
            raise DeepvisError(f"channel {bad[0]} out of range for layer '{layer}' ({count} channels, 0-{count - 1})")
        work += [(layer, c) for c in wanted if force or not (store.unit_dir(layer, c) / DONE_FILE).is_file()]
    total = sum(len(channels) if channels is not None else counts[name] for name in counts)
    steps = params.max_iter if isinstance(params, PaperParams) else params.steps
    sign = params.push_dir
    bar = Progress(total, "optimize", unit="units", enabled=progress, initial=total - len(work))
    info = {"model": model.spec, "objective": objective}
    done = 0
    try:
        for start in range(0, len(work), batch_size):
            batch = work[start:start + batch_size]
            targets = [make_target(model, f"{layer}:{channel}", objective, sign) for layer, channel in batch]
            began = time.perf_counter()
            if isinstance(params, PaperParams):
                results = optimize_paper(model, targets, params)
            else:
                results = optimize_modern(model, targets, params)
            seconds = time.perf_counter() - began
            for (layer, channel), result in zip(batch, results):
                result.save(store.unit_dir(layer, channel),
                            {**info, "seconds_per_batch": round(seconds, 3), "batch_size": len(batch),
                             "iterations": steps})
            done += len(batch)
            bar.update(len(batch))
            for layer in dict.fromkeys(layer for layer, _ in batch):
                store.write_sprite(layer, counts[layer], "optimized", tile_file="optimized.png")
    except KeyboardInterrupt:
        bar.close()
        print(f"optimize: interrupted; {total - len(work) + done} of {total} units are saved, rerun the same command "
              "to continue", file=sys.stderr)
        raise
    bar.close()
    for layer, count in counts.items():
        store.write_sprite(layer, count, "optimized", tile_file="optimized.png")
    return store


def _check_store_model(store: Store, model: Model) -> None:
    """A store holds one model's pictures: refuse to mix in another input size."""
    if not store.exists():
        return
    manifest = store.read_manifest()
    size = manifest.get("preprocessing", {}).get("input_size")
    if size is not None and tuple(size) != tuple(model.preprocessing.input_size):
        raise DeepvisError(f"the store '{store.root}' was made at input size {size}, the model now has "
                           f"{list(model.preprocessing.input_size)}: use the same --input-size or another --out")
