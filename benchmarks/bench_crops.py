"""crops throughput: ``make_crops()`` (batched backward passes over several units' top images, on crop-sized
windows where the field is small) against the bare backward passes it needs, in one warm process.

    python benchmarks/bench_crops.py [--images 16] [--units 96] [--k 4] [--rounds 4] [--layers ...] [--old]

A small store is scanned first (the sample photos, flipped and shifted to make ``--images``). Then, per layer:
``make_crops(kinds=image guided, force=True)`` for ``--units`` channels, against the bare baseline: the same rows
(each top image's window or whole image, as the crops plan chose) in the same batches, one plain-autograd forward and
backward pass from one-hot start signals -- no hooks, no pictures, no files (target: crops >= 0.8x the baseline's
units/s). Each crops round makes the units as a first run does (their folders are removed, untimed, before it);
``--rerun`` times forced re-runs over the existing files instead, which on ext4 also pay the flush of every file
renamed over another (~0.4 ms a picture). A first, untimed call per layer measures the layer's crops plan (kept in the
store, as a real run does once per layer; its time is printed apart). The sides alternate which goes first, round by
round; the ratio is the median of the rounds' ratios (each printed), and the ratio of median process CPU times is
shown beside it (less swayed by other jobs on the machine). Beside the plain passes, the bare *guided* passes
(deepvis's ``backprop_batch``, the kind the crops draw: the rectifiers' rule adds a clamp forward and backward) on the
same rows: the passes the crops need, without pictures or files. ``--old`` also times the old way (one unit's k top
images per pass, whole images). ``--eta UNITS`` instead runs crops once over UNITS channels of every layer and prints,
at 5-75% of the run, the total its ETA predicted against the real total. ``--whole-run STEP`` measures a run as a user
starts it (``deepvis crops STORE``, every default layer of the bundled model in one call): every STEP-th channel of
every layer, so each layer's share of the units is its share of a full run, against the bare passes of the same units,
rounds alternating.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image, ImageOps

import deepvis
from deepvis.jobs import crops
from deepvis.jobs.crops import plan as crops_plan, run as crops_run
from deepvis.engine.backprop import backprop_batch
from deepvis.jobs.findmax import find_max
from deepvis.store import Store
from deepvis.core.units import Unit

LAYERS = ["blocks.2.depthwise.act", "blocks.6.depthwise.act", "head.act"]


def photos(folder: Path, count: int) -> None:
    sources = [Image.open(p).convert("RGB") for p in deepvis.sample_images()]
    for n in range(count):
        image = sources[n % len(sources)]
        if (n // len(sources)) % 2:
            image = ImageOps.mirror(image)
        shift = 8 * (n // (2 * len(sources)))
        image.crop((shift, shift, image.width, image.height)).save(folder / f"{n:03d}.png")


def bare(model, store: Store, layer: str, channels: range, batch_rows: int, mode: str | None = None,
         inputs: crops._Inputs | None = None) -> float:
    """Seconds for the plain forward + backward passes over the rows make_crops runs for ``channels``, their images
    decoded as make_crops decodes them (ahead, a thread per core; ``inputs``: decoded images shared between calls,
    as one crops run shares them between layers); with ``mode`` (``guided``), deepvis's backward passes of that
    mode instead (``backprop_batch``: the rectifiers' rule), still without pictures or files."""
    manifest = store.read_manifest()
    files = [Path(manifest.image_root) / p for p in store.read_image_list()]
    inputs = inputs if inputs is not None else crops._Inputs(model, files)
    plan = crops._plan(model, inputs, store, manifest, layer, ["guided"])
    top = store.read_topk(layer)
    size = tuple(model.preprocessing.input_size)
    module = dict(model.net.named_modules())[layer]
    rows = [(c, r) for c in channels for r in range(top["images"].shape[1]) if top["images"][c, r] >= 0]
    per = max(1, batch_rows // top["images"].shape[1]) * top["images"].shape[1]
    began = time.perf_counter()
    inputs.prefetch(list(dict.fromkeys(int(top["images"][c, r]) for c, r in rows)))
    for start in range(0, len(rows), per):
        batch = rows[start:start + per]
        tensors = [inputs.get(int(top["images"][c, r]))[0] for c, r in batch]
        units = [Unit(layer, c, (int(top["y"][c, r]), int(top["x"][c, r])) if top["y"][c, r] >= 0 else None)
                 for c, r in batch]
        if plan.window is not None:
            origins = [plan.origin(crops.unit_box(plan.field, *u.position, size), size) for u in units]
            x = crops._windows(tensors, origins, plan.window)
            units = [crops._local(u, o, plan.field) for u, o in zip(units, origins)]
        else:
            x = torch.stack(tensors)
        if mode is not None:
            backprop_batch(model, x, units, mode, signal="argmax")
            continue
        x = x.requires_grad_(True)
        seen = {}

        def hook(_m, _i, out):
            seen["act"] = out
            raise StopIteration

        handle = module.register_forward_hook(hook)
        try:
            with torch.enable_grad():
                try:
                    model.net(x)
                except StopIteration:
                    pass
                act = seen["act"]
                signal = torch.zeros_like(act)
                for n, u in enumerate(units):
                    if act.dim() == 4:
                        signal[n, u.channel, u.position[0], u.position[1]] = 1.0
                    else:
                        signal[n, u.channel] = 1.0
                torch.autograd.grad(act, x, grad_outputs=signal)
        finally:
            handle.remove()
    return time.perf_counter() - began


def eta_check(model, store: Store, layers: list[str], units: int) -> None:
    """How honest the ETA is: one make_crops run over ``units`` channels of every layer, its progress recorded; at
    each update, the total it predicts (elapsed + ETA) against the run's real total."""
    records = []

    class Recording(crops_run.Progress):
        def update(self, count, cost=None):
            super().update(count, cost)
            elapsed = time.perf_counter() - self._start
            records.append((elapsed, elapsed + self.eta()))

    original = crops_run.Progress
    crops_run.Progress = Recording
    try:
        began = time.perf_counter()
        crops.make_crops(model, store.root, layers=layers, kinds=("image", "guided"), channels=range(0, units),
                         force=True, progress=False)
        total = time.perf_counter() - began
    finally:
        crops_run.Progress = original
    bar_total = records[-1][0]
    print(f"ETA check: {units} units of each of {len(layers)} layers, {total:.0f} s in all ({bar_total:.0f} s after the "
          "plans); predicted total / real total, at each share of the run:")
    for share in (0.05, 0.1, 0.25, 0.5, 0.75):
        elapsed, predicted = next(((e, p) for e, p in records if e >= share * bar_total), records[-1])
        print(f"  at {elapsed:6.1f} s ({100 * elapsed / bar_total:3.0f}%): predicts {predicted:6.1f} s, "
              f"{predicted / bar_total:.2f}x the real {bar_total:.1f} s")


def timed_rounds(sides: dict, rounds: int, clear=None) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall and process CPU seconds of each side (name -> call) per round, each side going first in turn (the
    machine is noisy); ``clear()`` runs, untimed, before each crops round."""
    names = list(sides)
    wall = {name: [] for name in names}
    cpu = {name: [] for name in names}
    for round_ in range(rounds):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            if name == "crops" and clear is not None:
                clear()
            began, began_cpu = time.perf_counter(), time.process_time()
            sides[name]()
            wall[name].append(time.perf_counter() - began)
            cpu[name].append(time.process_time() - began_cpu)
    return wall, cpu


def cleared(store: Store, layer: str, channels) -> None:
    """Remove the units' folders (untimed, before a crops round): the round then makes them as a first run does."""
    for channel in channels:
        shutil.rmtree(store.unit_dir(layer, channel), ignore_errors=True)


def whole_run(model, store: Store, step: int, rounds: int, batch_rows: int, rerun: bool = False) -> None:
    """The ratio for a run over every layer of ``store`` at once (every ``step``-th channel of each layer)."""
    manifest = store.read_manifest()
    layers = list(manifest.layers)
    widest = max(record.channels for record in manifest.layers.values())
    units = {name: range(0, manifest.layers[name].channels, step) for name in layers}

    def made() -> None:
        with contextlib.redirect_stderr(io.StringIO()):  # the notes on channels past a layer's last
            crops.make_crops(model, store.root, kinds=("image", "guided"), channels=range(0, widest, step),
                             force=True, progress=False, batch_rows=batch_rows)

    def passes(mode: str | None = None) -> dict[str, float]:
        inputs = crops._Inputs(model, [Path(manifest.image_root) / p for p in store.read_image_list()])
        return {name: bare(model, store, name, units[name], batch_rows, mode, inputs) for name in layers}

    began = time.perf_counter()
    made()  # the layers' plans, measured once (kept in the store)
    print(f"whole run: {len(layers)} layers, {sum(map(len, units.values()))} units (every {step}th channel); "
          f"first call, plans measured: {time.perf_counter() - began:.1f} s")
    per_layer = []

    def clear() -> None:
        for name in layers:
            cleared(store, name, units[name])

    sides = {"crops": made, "bare": lambda: per_layer.append(passes()), "guided": lambda: passes("guided")}
    wall, _ = timed_rounds(sides, rounds, None if rerun else clear)
    total = sum(map(len, units.values()))
    for side, what in (("bare", "bare passes (plain gradient)"), ("guided", "bare guided passes")):
        ratios = [b / c for b, c in zip(wall[side], wall["crops"])]
        print(f"crops {total / statistics.median(wall['crops']):.1f} units/s, {what} "
              f"{total / statistics.median(wall[side]):.1f} units/s: ratio {statistics.median(ratios):.2f} "
              f"(rounds: {' '.join(f'{r:.2f}' for r in ratios)})")
    shares = {name: statistics.median(p[name] for p in per_layer) for name in layers}
    whole = sum(shares.values())
    print("bare passes' time by layer: " + ", ".join(f"{name} {100 * t / whole:.0f}%" for name, t in shares.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--units", type=int, default=96)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--batch-rows", type=int, default=crops.BATCH_ROWS)
    parser.add_argument("--layers", nargs="+", default=LAYERS)
    parser.add_argument("--old", action="store_true", help="also time the old way (one unit per pass, whole images)")
    parser.add_argument("--eta", type=int, default=0, metavar="UNITS",
                        help="only check the ETA: one run over UNITS channels of every layer")
    parser.add_argument("--rerun", action="store_true",
                        help="time crops re-runs over the units' existing files (--force) instead of first runs")
    parser.add_argument("--whole-run", type=int, default=0, metavar="STEP",
                        help="only time a run over every default layer (every STEP-th channel of each)")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = deepvis.load_model()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        photos(folder, args.images)
        layers = None if args.whole_run else args.layers  # a whole run: the default layers
        store = find_max(model, folder, Path(tmp) / "store", layers=layers, k=args.k, progress=False)
        if args.whole_run:
            whole_run(model, store, args.whole_run, args.rounds, args.batch_rows, args.rerun)
            return
        if args.eta:
            eta_check(model, store, args.layers, args.eta)
            return
        print(f"{'layer':24s} {'window':>9s} {'crops u/s':>10s} {'bare u/s':>9s} {'ratio':>6s} {'cpu ratio':>9s} "
              f"{'per-round ratios':>24s} {'guided u/s':>10s} {'vs guided':>9s}"
              + (f" {'old way u/s':>12s}" if args.old else ""))
        for layer in args.layers:
            channels = range(0, args.units)

            def made() -> None:
                crops.make_crops(model, store.root, layers=[layer], kinds=("image", "guided"), channels=channels,
                                 force=True, progress=False, batch_rows=args.batch_rows)

            # the layer's crops plan (effective field, window) is measured by the first call and kept in the store,
            # once per layer of a real run: a warm-up call, timed apart, keeps it out of the rounds
            began = time.perf_counter()
            made()
            warm_up = time.perf_counter() - began
            sides = {"crops": made, "bare": lambda: bare(model, store, layer, channels, args.batch_rows),
                     "guided": lambda: bare(model, store, layer, channels, args.batch_rows, "guided")}
            wall, cpu = timed_rounds(sides, args.rounds,
                                     None if args.rerun else lambda: cleared(store, layer, channels))
            ratios = [b / c for b, c in zip(wall["bare"], wall["crops"])]
            plan = crops._plan(model, crops._Inputs(model, [Path(store.read_manifest().image_root) / p
                                                            for p in store.read_image_list()]),
                               store, store.read_manifest(), layer, ["guided"])
            crops_rate = args.units / statistics.median(wall["crops"])
            bare_rate = args.units / statistics.median(wall["bare"])
            window = "x".join(map(str, plan.window)) if plan.window else "whole"
            guided = statistics.median(b / c for b, c in zip(wall["guided"], wall["crops"]))
            line = (f"{layer:24s} {window:>9s} {crops_rate:10.1f} {bare_rate:9.1f} {statistics.median(ratios):6.2f} "
                    f"{statistics.median(cpu['bare']) / statistics.median(cpu['crops']):9.2f} "
                    f"{' '.join(f'{r:.2f}' for r in ratios):>24s} {args.units / statistics.median(wall['guided']):10.1f} "
                    f"{guided:9.2f}  (first call, plan measured: {warm_up:.2f} s)")
            if args.old:
                window_at_most = crops_plan.WINDOW_AT_MOST
                crops_plan.WINDOW_AT_MOST = 0.0  # the old way: whole images, one unit per pass
                try:
                    began = time.perf_counter()
                    crops.make_crops(model, store.root, layers=[layer], kinds=("image", "guided"),
                                     channels=range(0, max(4, args.units // 4)), force=True, progress=False,
                                     batch_rows=args.k)
                    line += f" {max(4, args.units // 4) / (time.perf_counter() - began):12.1f}"
                finally:
                    crops_plan.WINDOW_AT_MOST = window_at_most
            print(line, flush=True)


if __name__ == "__main__":
    main()
