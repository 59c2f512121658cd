"""Feature visualization at today's state of the art, measured: paper3, the modern recipe and MACO on units of two
layers of the bundled EfficientNet-Lite0, scored by ``deepvis evaluate`` against a find-max scan of scikit-image's
photos and the bundled samples; feature accentuation on the same units; optionally the speed against Lucent.

    python benchmarks/bench_featvis.py [--units 32] [--steps 512] [--layers blocks.8 blocks.12] [--lucent]

Prints, per layer, the medians of each metric per method (the table in docs/optimize.md), and the acceptance
numbers: MACO's spectral slope within 0.2 of the natural images' (units), plausibility of MACO >= modern (units),
both against the random-crop baseline, accentuation raising the unit (units) and its L2 (RMS) change, the share of
the optimize time that evaluate took. ``--lucent`` (needs ``pip install --no-deps torch-lucent==0.1.8 kornia
kornia_rs``, which leaves torch alone):
the time deepvis takes to reach Lucent's final activation after ``--steps`` steps, for modern and MACO (from the
per-step objective of the transformed views, which the runs record).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import deepvis
from deepvis.findmax import find_max
from deepvis.optimize import make_params, optimize_to_store
from deepvis.optimize.accentuate import accentuate
from deepvis.optimize.evaluate import evaluate_store, format_table

sys.path.insert(0, str(Path(__file__).parent))
from bench_optimize_quality import skimage_photos


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=32)
    parser.add_argument("--steps", type=int, default=512, help="modern and MACO steps (paper3: 2x, capped at 1000)")
    parser.add_argument("--crops", type=int, default=4, help="MACO crops per step")
    parser.add_argument("--layers", nargs="+", default=["blocks.8", "blocks.12"])
    parser.add_argument("--accentuate-steps", type=int, default=32)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--lucent", action="store_true")
    parser.add_argument("--keep", metavar="DIR", help="keep the stores here")
    args = parser.parse_args()
    model = deepvis.load_model()
    tmp = Path(args.keep or tempfile.mkdtemp())
    images = tmp / "images"
    images.mkdir(parents=True, exist_ok=True)
    count = skimage_photos(images)
    for path in deepvis.sample_images():
        shutil.copy(path, images / path.name)
    count += len(deepvis.sample_images())
    started = time.perf_counter()
    store = find_max(model, images, tmp / "store", layers=args.layers, k=args.k, batch_size=8, progress=False,
                     force=True)
    print(f"find-max: {count} photos, k={args.k}, {time.perf_counter() - started:.1f} s")
    picks = {}
    for layer in args.layers:
        channels = model.layers()[model.layer_names().index(layer)].channels
        picks[layer] = np.linspace(0, channels - 1, args.units).round().astype(int).tolist()
    settings = {"maco": make_params("maco", steps=args.steps, crops=args.crops),
                "modern": make_params("modern", steps=args.steps),
                "paper": make_params("paper", max_iter=min(1000, 2 * args.steps))}
    stores = {"maco": store.root, "modern": tmp / "modern", "paper": tmp / "paper"}
    seconds = {}
    for method, params in settings.items():
        began = time.perf_counter()
        for layer in args.layers:
            optimize_to_store(model, stores[method], [layer], params, channels=picks[layer], batch_size=args.units,
                              progress=False, force=True)
        seconds[method] = time.perf_counter() - began
        print(f"optimize {method}: {seconds[method]:.1f} s for {args.units * len(args.layers)} units "
              f"({params.steps} steps)", flush=True)
    began = time.perf_counter()
    evaluations = evaluate_store(model, store.root, args.layers, others=[stores["modern"], stores["paper"]])
    evaluate_seconds = time.perf_counter() - began
    print(f"\n{args.units} units per layer, {args.steps} steps (paper3 {settings['paper'].steps}), "
          f"{torch.get_num_threads()} threads\n")
    print(format_table(evaluations))
    total = sum(seconds.values())
    print(f"\nevaluate: {evaluate_seconds:.1f} s = {100 * evaluate_seconds / total:.1f}% of the optimize time "
          f"({total:.1f} s)")
    for layer, evaluation in evaluations.items():
        units = evaluation["units"].values()
        natural = evaluation["natural_slope"]
        near = sum(u["maco"]["slope_gap"] <= 0.2 for u in units)
        near_modern = sum(u["modern"]["slope_gap"] <= 0.2 for u in units)
        better = sum(u["maco"]["plausibility"] >= u["modern"]["plausibility"] for u in units)
        above = {m: sum(u[m]["plausibility"] > u["random_crops"]["plausibility"] for u in units)
                 for m in ("maco", "modern", "paper")}
        n = len(evaluation["units"])
        print(f"{layer}: natural slope {natural:.2f}; MACO slope within 0.2 on {near}/{n} units (modern "
              f"{near_modern}/{n}); MACO plausibility >= modern on {better}/{n}; above random crops: "
              + ", ".join(f"{m} {c}/{n}" for m, c in above.items())
              + f"; random crops median {evaluation['median']['random_crops']['plausibility']:.3f}")

    # accentuation: each unit's own best dataset image is too easy (already its maximum): use a fixed photo
    photo = deepvis.sample_images()[1]
    raised, distances, paths = 0, [], []
    began = time.perf_counter()
    total_units = 0
    for layer in args.layers:
        for channel in picks[layer]:
            result = accentuate(model, photo, f"{layer}:{channel}", steps=args.accentuate_steps)
            raised += result.after > result.before
            distances.append(result.distance)
            paths.append(result.path_similarity)
            total_units += 1
    print(f"accentuation ({args.accentuate_steps} steps, photo {photo.name}): raised {raised}/{total_units} units; "
          f"RMS change median {statistics.median(distances):.4f}, max {max(distances):.4f} (0-1 pixels); path "
          f"similarity median {statistics.median(paths):.3f}; {time.perf_counter() - began:.1f} s")
    if args.lucent:
        lucent_speed(model, args)


def lucent_speed(model, args) -> None:
    """Time for deepvis (modern, MACO) to reach the channel activation Lucent ends at after ``--steps`` steps."""
    from bench_optimize_lucent import _stand_in_torchvision, channel_means, lucent_one

    from deepvis.optimize import optimize

    _stand_in_torchvision()
    import kornia  # Lucent calls kornia.get_rotation_matrix2d / warp_affine, which newer kornia keeps in .geometry

    for name in ("get_rotation_matrix2d", "warp_affine"):
        if not hasattr(kornia, name):
            setattr(kornia, name, getattr(kornia.geometry.transform, name))
    layer = args.layers[0]
    channels = np.linspace(0, model.layers()[model.layer_names().index(layer)].channels - 1,
                           min(args.units, 4)).round().astype(int).tolist()
    size = model.preprocessing.input_size[0]
    for channel in channels:
        began = time.perf_counter()
        theirs = lucent_one(model, layer, channel, size, args.steps)
        lucent_seconds = time.perf_counter() - began
        target = channel_means(model, layer, [channel], [theirs])[0]
        line = [f"{layer}:{channel} Lucent {target:.2f} in {lucent_seconds:.1f} s"]
        for method in ("modern", "maco"):
            stamps = []
            began = time.perf_counter()
            result, = optimize(model, f"{layer}:{channel}", method, objective="channel", steps=args.steps,
                               on_step=lambda _i, stamps=stamps, began=began: stamps.append(
                                   time.perf_counter() - began))
            reached = next((stamps[i] for i, v in enumerate(result.record["obj"]) if v >= target), None)
            line.append(f"{method} " + (f"reached it in {reached:.1f} s ({reached / lucent_seconds:.2f}x)"
                                        if reached is not None else f"did not reach it ({result.best_obj:.2f})"))
        print("; ".join(line), flush=True)


if __name__ == "__main__":
    main()
