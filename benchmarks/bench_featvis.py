"""Feature visualization at today's state of the art, measured: paper3, the modern recipe and MACO on units of two
layers of the bundled EfficientNet-Lite0, scored by ``deepvis evaluate`` against a find-max scan of scikit-image's
photos and the bundled samples; feature accentuation on the same units; optionally the speed against Lucent.

    python benchmarks/bench_featvis.py [--units 16] [--steps 512] [--layers blocks.8 blocks.12] [--lucent]
    python benchmarks/bench_featvis.py --lucent-only [--lucent-units 2] [--steps 512]

``--units`` per layer. Prints, per layer, the medians of each metric per method (the table in docs/optimize.md;
the accentuated images are scored as the method ``accentuated``: their path similarity to the unit's top-k
images), and the acceptance numbers over all units: MACO's spectral slope within 0.2 of the natural images',
plausibility of MACO >= modern, each method against the random-crop baseline, accentuation raising the unit and
its RMS change, the share of the optimize time that evaluate took. ``--lucent`` / ``--lucent-only`` (needs
``pip install --no-deps torch-lucent==0.1.8 kornia kornia_rs``, which leaves torch alone): per unit, the time
deepvis (modern, MACO; one unit, channel objective) takes until a step's objective reaches the channel activation
Lucent's final image has after ``--steps`` steps, over Lucent's time; Lucent and deepvis alternate sides between
units.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import deepvis
from deepvis.jobs.findmax import find_max
from deepvis.engine.featvis import make_params
from deepvis.jobs.optimize_store import optimize_to_store
from deepvis.engine.featvis.accentuate import accentuate
from deepvis.jobs.evaluate import evaluate_store, format_table
from deepvis.store import Store

sys.path.insert(0, str(Path(__file__).parent))
from bench_optimize_quality import skimage_photos


def featvis_photos(folder: Path) -> int:
    """The photos the feature-visualization benchmarks scan: scikit-image's and the bundled ones; their count."""
    folder.mkdir(parents=True, exist_ok=True)
    count = skimage_photos(folder)
    for path in deepvis.sample_images():
        shutil.copy(path, folder / path.name)
    return count + len(deepvis.sample_images())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=32)
    parser.add_argument("--steps", type=int, default=512, help="modern and MACO steps (paper3: 2x, capped at 1000)")
    parser.add_argument("--crops", type=int, help="MACO crops per step (default: MACO's)")
    parser.add_argument("--paper-steps", type=int, help="paper3 iterations (default: 2x --steps, at most 1000)")
    parser.add_argument("--layers", nargs="+", default=["blocks.8", "blocks.12"])
    parser.add_argument("--accentuate-steps", type=int, default=32)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--lucent", action="store_true", help="also the speed against Lucent 0.1.8")
    parser.add_argument("--lucent-units", type=int, default=2, help="units of the first layer timed against Lucent")
    parser.add_argument("--lucent-only", action="store_true", help="only the speed against Lucent")
    parser.add_argument("--climb", metavar="JSON", help='only the climb of settings on one unit: a list of '
                        '[name, method, {settings}], e.g. \'[["lr 0.3", "maco", {"crops": 1}]]\'')
    parser.add_argument("--paper-units", type=int, help="paper3 on this many of each layer's units (default: all)")
    parser.add_argument("--keep", metavar="DIR", help="keep the stores here")
    parser.add_argument("--resume", action="store_true", help="with --keep: reuse its find-max scan and the units "
                        "already optimized with the same settings")
    args = parser.parse_args()
    model = deepvis.load_model()
    if args.lucent_only:
        return lucent_speed(model, args)
    if args.climb:
        return climb(model, f"{args.layers[0]}:37", json.loads(args.climb), args.steps)
    tmp = Path(args.keep or tempfile.mkdtemp())
    images = tmp / "images"
    count = featvis_photos(images)
    started = time.perf_counter()
    if args.resume and (tmp / "store" / "manifest.json").is_file():
        store = Store(tmp / "store")
    else:
        store = find_max(model, images, tmp / "store", layers=args.layers, k=args.k, batch_size=8, progress=False,
                         force=True)
    print(f"find-max: {count} photos, k={args.k}, {time.perf_counter() - started:.1f} s")
    picks = {}
    for layer in args.layers:
        channels = model.layers()[model.layer_names().index(layer)].channels
        picks[layer] = np.linspace(0, channels - 1, args.units).round().astype(int).tolist()
    settings = {"maco": make_params("maco", steps=args.steps, crops=args.crops),
                "modern": make_params("modern", steps=args.steps),
                "paper": make_params("paper", max_iter=args.paper_steps or min(1000, 2 * args.steps))}
    stores = {"maco": store.root, "modern": tmp / "modern", "paper": tmp / "paper"}
    seconds = {}
    for method, params in settings.items():
        began = time.perf_counter()
        for layer in args.layers:
            channels = picks[layer]
            if method == "paper" and args.paper_units:
                channels = [channels[i] for i in np.linspace(0, len(channels) - 1, args.paper_units).round().astype(int)]
            optimize_to_store(model, stores[method], [layer], params, channels=channels, batch_size=args.units,
                              progress=False, force=not args.resume)
        seconds[method] = time.perf_counter() - began
        print(f"optimize {method}: {seconds[method]:.1f} s ({params.steps} steps; units already done are skipped "
              "with --resume)", flush=True)
    # accentuation: each unit's own best dataset image is too easy (already its maximum): use a fixed photo
    photo = deepvis.sample_images()[1]
    raised, distances, paths, accentuated = 0, [], [], {layer: {} for layer in args.layers}
    began = time.perf_counter()
    for layer in args.layers:
        for channel in picks[layer]:
            result = accentuate(model, photo, f"{layer}:{channel}", steps=args.accentuate_steps)
            raised += result.after > result.before
            distances.append(result.distance)
            paths.append(result.path_similarity)
            accentuated[layer][channel] = result.image
    accentuate_seconds = time.perf_counter() - began

    began = time.perf_counter()
    evaluations = evaluate_store(model, store.root, args.layers, others=[stores["modern"], stores["paper"]],
                                 extra={"accentuated": accentuated})
    evaluate_seconds = time.perf_counter() - began
    print(f"\n{args.units} units per layer, {args.steps} steps (paper3 {settings['paper'].steps}, MACO "
          f"{settings['maco'].crops} crops per step), {torch.get_num_threads()} threads\n")
    print(format_table(evaluations))
    total = sum(e["optimize_seconds"] for e in evaluations.values())  # from the units' records (--resume too)
    print(f"\nevaluate: {evaluate_seconds:.1f} s = {100 * evaluate_seconds / total:.1f}% of the optimize time it "
          f"evaluates ({total:.1f} s, from the records; it also scored the accentuated images)")
    counts = {"slope": 0, "slope_modern": 0, "better": 0, "units": 0}
    above = {m: 0 for m in ("maco", "modern", "paper", "accentuated")}
    scored = {m: 0 for m in above}  # units each method was run on (paper3: --paper-units)
    for layer, evaluation in evaluations.items():
        units = list(evaluation["units"].values())
        natural = evaluation["natural_slope"]
        near = sum(u["maco"]["slope_gap"] <= 0.2 for u in units)
        near_modern = sum(u["modern"]["slope_gap"] <= 0.2 for u in units)
        better = sum(u["maco"]["plausibility"] >= u["modern"]["plausibility"] for u in units)
        here = {m: sum(u[m]["plausibility"] > u["random_crops"]["plausibility"] for u in units if m in u)
                for m in above}
        mine = {m: sum(m in u for u in units) for m in above}
        n = len(units)
        for key, value in (("slope", near), ("slope_modern", near_modern), ("better", better), ("units", n)):
            counts[key] += value
        for m in above:
            above[m] += here[m]
            scored[m] += mine[m]
        print(f"{layer}: natural slope {natural:.2f}; MACO slope within 0.2 on {near}/{n} units (modern "
              f"{near_modern}/{n}); MACO plausibility >= modern on {better}/{n}; above random crops: "
              + ", ".join(f"{m} {c}/{mine[m]}" for m, c in here.items())
              + f"; random crops median {evaluation['median']['random_crops']['plausibility']:.3f}")
    n = counts["units"]
    print(f"all {n} units: MACO slope within 0.2 on {counts['slope']}/{n} (modern {counts['slope_modern']}/{n}); "
          f"MACO plausibility >= modern on {counts['better']}/{n} ({100 * counts['better'] / n:.0f}%); above random "
          "crops: " + ", ".join(f"{m} {c}/{scored[m]}" for m, c in above.items()))
    print(f"accentuation ({args.accentuate_steps} steps, photo {photo.name}): raised {raised}/{n} units; "
          f"RMS change median {statistics.median(distances):.4f}, max {max(distances):.4f} (0-1 pixels); path "
          f"similarity to the photo median {statistics.median(paths):.3f}, to the unit's top-k images median "
          + " / ".join(f"{e['median']['accentuated']['path']:.3f}" for e in evaluations.values())
          + f" (per layer); {accentuate_seconds:.1f} s")
    if args.lucent:
        lucent_speed(model, args)


def climb(model, unit: str, runs: list, steps: int) -> None:
    """Each run's objective (channel mean; a step's transformed view, mean of 4 steps) at quarters of ``steps``,
    and its final image's value: how fast settings climb, one run after the other."""
    from deepvis.engine.featvis import optimize

    for name, method, settings in runs:
        began = time.perf_counter()
        result, = optimize(model, unit, method, objective="channel", steps=steps, progress=False, **settings)
        obj = result.record["obj"]
        marks = [steps * q // 4 for q in range(1, 5)]
        print(f"{name}: {time.perf_counter() - began:.0f} s; at steps {marks}: "
              f"{[round(float(np.mean(obj[max(0, i - 4):i])), 2) for i in marks]}; final "
              f"{result.record['final_obj'][0]:.2f}", flush=True)


class _Reached(Exception):
    """Raised from a step callback to end a run: ``args`` = (seconds to reach the target or None, steps run)."""


def time_to_reach(model, unit: str, method: str, target: float, steps: int, cap: float) -> tuple[float | None, int]:
    """Seconds deepvis's ``method`` takes until the objective of a step's transformed views (the record's ``obj``)
    reaches ``target`` (channel-mean objective), and the steps it ran; None when it has not after ``steps`` steps
    or ``cap`` seconds. The one loop's ``evaluate`` is wrapped to read each step's value as it is computed."""
    import importlib

    from deepvis.engine.featvis import optimize

    # by module path (the name deepvis.optimize is also the function): every method's steps run in loop.ascend
    module = importlib.import_module("deepvis.engine.featvis.loop")
    original, seen = module.evaluate, []

    def recording(*args, **kwargs):
        evaluation = original(*args, **kwargs)
        seen.append(float(evaluation.values.detach().mean()))  # MACO: the mean over the step's crops
        return evaluation

    began = time.perf_counter()

    def step(ii: int) -> None:
        elapsed = time.perf_counter() - began
        if seen[-1] >= target:
            raise _Reached(elapsed, ii + 1)
        if elapsed > cap:
            raise _Reached(None, ii + 1)

    module.evaluate = recording
    try:
        optimize(model, unit, method, objective="channel", steps=steps, on_step=step, progress=False)
    except _Reached as reached:
        return reached.args
    finally:
        module.evaluate = original
    return None, steps


def lucent_speed(model, args) -> None:
    """Time for deepvis (modern, MACO) to reach the channel activation Lucent ends at after ``--steps`` steps, per
    unit, the order of Lucent and deepvis alternated between units; a deepvis run stops when it gets there (or
    after Lucent's own time: then it did not reach it faster)."""
    from bench_optimize_lucent import _stand_in_torchvision, channel_means, lucent_one

    _stand_in_torchvision()
    import kornia  # Lucent calls kornia.get_rotation_matrix2d / warp_affine, which newer kornia keeps in .geometry

    for name in ("get_rotation_matrix2d", "warp_affine"):
        if not hasattr(kornia, name):
            setattr(kornia, name, getattr(kornia.geometry.transform, name))
    layer = args.layers[0]
    count = model.layers()[model.layer_names().index(layer)].channels
    channels = np.linspace(0, count - 1, args.lucent_units + 2).round().astype(int).tolist()[1:-1]
    size = model.preprocessing.input_size[0]
    ratios: dict[str, list[float]] = {"modern": [], "maco": []}
    for n, channel in enumerate(channels):
        unit = f"{layer}:{channel}"
        order = ["lucent", "modern", "maco"] if n % 2 == 0 else ["modern", "maco", "lucent"]
        lucent_seconds, target, times = None, None, {}
        # deepvis first: it needs Lucent's value, so a first Lucent run on this unit gives it (timed alike)
        if order[0] != "lucent":
            began = time.perf_counter()
            target = channel_means(model, layer, [channel], [lucent_one(model, layer, channel, size, args.steps)])[0]
            first_seconds = time.perf_counter() - began
        for side in order:
            if side == "lucent":
                began = time.perf_counter()
                theirs = lucent_one(model, layer, channel, size, args.steps)
                lucent_seconds = time.perf_counter() - began
                if target is None:
                    target = channel_means(model, layer, [channel], [theirs])[0]
                else:  # Lucent ran twice, before and after deepvis: its mean time
                    lucent_seconds = (lucent_seconds + first_seconds) / 2
            else:
                times[side] = time_to_reach(model, unit, side, target, args.steps,
                                            cap=lucent_seconds or first_seconds)
        line = [f"{unit} Lucent {target:.2f} after {args.steps} steps in {lucent_seconds:.1f} s"]
        for side, (seconds, ran) in times.items():
            if seconds is None:
                line.append(f"{side} did not reach it ({ran} steps)")
                ratios[side].append(float("inf"))
            else:
                line.append(f"{side} reached it in {seconds:.1f} s, {ran} steps ({seconds / lucent_seconds:.2f}x)")
                ratios[side].append(seconds / lucent_seconds)
        print("; ".join(line), flush=True)
    print("time to reach Lucent's final activation / Lucent's time, median: "
          + ", ".join(f"{side} {statistics.median(r):.2f}x" for side, r in ratios.items()), flush=True)


if __name__ == "__main__":
    main()
