"""MACO settings against the modern recipe, scored by ``deepvis evaluate``, with the noise of the comparison itself:
each method is run with several seeds, so the share of units where one seed of a method beats another seed of the
*same* method says how much a per-unit "MACO >= modern" share can move by chance.

    python benchmarks/bench_maco_variants.py [--layer blocks.8] [--units 16] [--steps 64] [--seeds 0 1 2]
        [--variants '{"default": {}, "spread 0": {"spread": 0}}'] [--keep DIR]

The find-max scan is bench_featvis.py's (scikit-image's photos and the bundled ones, k = 4); with ``--keep`` the
scan and every optimized unit are kept and reused (a rerun with more seeds or variants only does what is new).
Prints, per variant: median plausibility, activation (x the best dataset example) and slope gap; the share of units
where it is >= modern (each seed against the same seed of modern, and the per-unit means over seeds); and, per
method, the seed-against-seed shares and the per-unit standard deviation over seeds.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import deepvis
from deepvis.jobs.findmax import find_max
from deepvis.engine.featvis import make_params
from deepvis.jobs.optimize_store import optimize_to_store
from deepvis.jobs.evaluate import evaluate_layer, optimized_images
from deepvis.store import Store

sys.path.insert(0, str(Path(__file__).parent))
from bench_featvis import featvis_photos


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layer", default="blocks.8")
    parser.add_argument("--units", type=int, default=16)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", default='{"default": {}, "spread 0.05": {"spread": 0.05}, "spread 0": '
                                              '{"spread": 0}}', help="JSON: name -> MACO settings")
    parser.add_argument("--keep", metavar="DIR", help="keep (and reuse) the scan and the optimized units here")
    args = parser.parse_args()
    variants = {"modern": ("modern", {})}
    variants.update({name: ("maco", settings) for name, settings in json.loads(args.variants).items()})
    model = deepvis.load_model()
    root = Path(args.keep or tempfile.mkdtemp())
    if (root / "store" / "manifest.json").is_file():
        store = Store(root / "store")
    else:
        featvis_photos(root / "images")
        store = find_max(model, root / "images", root / "store", layers=[args.layer], k=4, batch_size=8,
                         progress=False)
    if args.layer not in store.read_manifest().layers:
        raise SystemExit(f"the kept store has no layer {args.layer}: use another --keep folder")
    count = model.layers()[model.layer_names().index(args.layer)].channels
    channels = np.linspace(0, count - 1, args.units).round().astype(int).tolist()
    images = {}
    for name, (method, settings) in variants.items():
        for seed in args.seeds:
            slug = "".join(c if c.isalnum() else "_" for c in name)
            out = root / f"{args.layer}_{args.steps}_{slug}_seed{seed}"
            began = time.perf_counter()
            optimize_to_store(model, out, [args.layer], make_params(method, steps=args.steps, seed=seed, **settings),
                              channels=channels, batch_size=args.units, progress=False)
            images[(name, seed)] = optimized_images(Store(out), args.layer)[1]
            print(f"{name} seed {seed}: {time.perf_counter() - began:.0f} s (0 if kept)", flush=True)
    evaluation = evaluate_layer(model, store, args.layer,
                                {f"{name}#{seed}": found for (name, seed), found in images.items()})
    units = list(evaluation["units"].values())
    n = len(units)

    def metric(name: str, seed: int, what: str) -> np.ndarray:
        return np.array([u[f"{name}#{seed}"][what] for u in units])

    print(f"\n{args.layer}, {n} units, {args.steps} steps, seeds {args.seeds}; dataset plausibility median "
          f"{evaluation['median']['dataset']['plausibility']:.3f}, random crops "
          f"{evaluation['median']['random_crops']['plausibility']:.3f}")
    means = {name: np.mean([metric(name, s, "plausibility") for s in args.seeds], axis=0) for name in variants}
    for name in variants:
        per_seed = [metric(name, s, "plausibility") for s in args.seeds]
        line = (f"{name:14s} plausibility {np.median(per_seed):.3f}  activation "
                f"{np.median([metric(name, s, 'activation') for s in args.seeds]):.2f}x  slope gap "
                f"{np.median([metric(name, s, 'slope_gap') for s in args.seeds]):.2f} (within 0.2: "
                f"{sum(int((metric(name, s, 'slope_gap') <= 0.2).sum()) for s in args.seeds)}/{n * len(args.seeds)})")
        random = np.array([u.get("random_crops", {}).get("plausibility", np.nan) for u in units])
        line += f"  above random crops (means): {int((means[name] > random).sum())}/{n}"
        if name != "modern":
            same_seed = [int((metric(name, s, "plausibility") >= metric("modern", s, "plausibility")).sum())
                         for s in args.seeds]
            line += (f"  >= modern: per seed {same_seed}/{n}, per-unit means over seeds "
                     f"{int((means[name] >= means['modern']).sum())}/{n}")
        if len(args.seeds) > 1:
            pairs = [int((a >= b).sum()) for a, b in itertools.permutations(per_seed, 2)]
            line += (f"  | seed >= other seed of itself: {min(pairs)}-{max(pairs)}/{n}, per-unit sd over seeds "
                     f"{np.median(np.std(per_seed, axis=0)):.3f}")
        print(line)


if __name__ == "__main__":
    main()
