"""Do optimized images beat the best real images? For units of a middle layer and for logits of the default model,
the activation each method reaches vs the unit's best image from a find-max scan of scikit-image's photos.

    python benchmarks/bench_optimize_quality.py [--units 32] [--iters 200] [--layers blocks.8 classifier]

``--iters`` cuts the paper's 1000 iterations (paper3) and the modern recipe's 512 steps (the issue allows 200 on a
CPU; use the full counts on a GPU). The 'unit' objective is the centre position of a conv channel, find-max takes
each image's best position: the comparison favours the real images.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import deepvis
from deepvis.jobs.findmax import find_max
from deepvis.engine.featvis import make_params, optimize


#: The pictures scikit-image ships (no download needed).
PHOTOS = ("astronaut", "brick", "camera", "cell", "chelsea", "checkerboard", "clock", "coffee", "coins", "colorwheel",
          "grass", "gravel", "horse", "hubble_deep_field", "immunohistochemistry", "logo", "microaneurysms", "moon",
          "page", "retina", "rocket", "shepp_logan_phantom", "text")


def skimage_photos(folder: Path) -> int:
    """scikit-image's sample pictures (colour and grey) as PNG files."""
    import skimage.data

    for name in PHOTOS:
        array = np.asarray(getattr(skimage.data, name)())
        if array.dtype == bool:
            array = array.astype(np.uint8) * 255
        if array.dtype != np.uint8:
            array = (255 * (array - array.min()) / max(float(array.max() - array.min()), 1e-9)).astype(np.uint8)
        Image.fromarray(array).convert("RGB").save(folder / f"{name}.png")
    return len(PHOTOS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=32)
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--layers", nargs="+", default=["blocks.8", "classifier"])
    parser.add_argument("--methods", nargs="+", default=["paper", "modern"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    model = deepvis.load_model(device=args.device)
    with tempfile.TemporaryDirectory() as tmp:
        images = Path(tmp) / "images"
        images.mkdir()
        count = skimage_photos(images)
        store = find_max(model, images, Path(tmp) / "store", layers=args.layers, k=1, batch_size=8, progress=False)
        tops = {layer: store.read_topk(layer)["values"][:, 0] for layer in args.layers}
    print(f"find-max over {count} scikit-image photos; {args.units} units per layer; {args.iters} iterations; "
          f"device {args.device}")
    print(f"{'layer':<12} {'method':<8} {'beat':>6} {'median opt':>11} {'median best img':>16} {'s/unit':>7}")
    for layer in args.layers:
        channels = model.layers()[model.layer_names().index(layer)].channels
        picked = np.linspace(0, channels - 1, args.units).round().astype(int).tolist()
        units = [f"{layer}:{c}" for c in picked]
        for method in args.methods:
            setting = {"max_iter": args.iters} if method == "paper" else {"steps": args.iters}
            params = make_params(method, **setting)
            start = time.perf_counter()
            results = optimize(model, units, method, params)
            seconds = (time.perf_counter() - start) / len(units)
            reached = [r.best_obj for r in results]
            best_images = [float(tops[layer][c]) for c in picked]
            beat = sum(r > b for r, b in zip(reached, best_images))
            print(f"{layer:<12} {method:<8} {beat:>3}/{len(units):<2} {statistics.median(reached):>11.3f} "
                  f"{statistics.median(best_images):>16.3f} {seconds:>7.2f}", flush=True)
            losers = [(u, round(r, 3), round(b, 3)) for u, r, b in zip(units, reached, best_images) if r <= b]
            if losers:
                print(f"    not beaten (unit, optimized, best image): {losers}")


if __name__ == "__main__":
    main()
