"""find-max throughput, side by side in one run: deepvis's streaming top-k vs the bare forward pass over the same
batches, and vs a port of the original toolbox's per-channel update loop (MaxTracker.update).

    python benchmarks/bench_findmax.py [--images 64] [--batch-size 16] [--rounds 5]

Every variant sees the same preprocessed batches (decoded once, so image decoding is not measured); rounds are
interleaved and medians compared. Also prints the scan's memory (RSS) at several dataset sizes: it is bounded by
the batch size, not the number of images.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from PIL import Image, ImageOps

import deepvis
from deepvis.probe import Probe
from deepvis.topk import TopK
from common import rss_mib


class MaxTrackerPort:
    """The original's MaxTracker (max_tracker.py:51-85): per image, per channel, a sorted insert in numpy."""

    def __init__(self, channels: int, n_top: int, is_conv: bool):
        self.max_vals = np.full((channels, n_top), -1e99)
        self.max_locs = np.zeros((channels, n_top, 4 if is_conv else 2), dtype=int)
        self.is_conv = is_conv

    def update(self, data: np.ndarray, image_idx: int, image_class: int = 0) -> None:
        channels = data.shape[0]
        if self.is_conv:
            flat = data.reshape(channels, -1)
            maxes = flat.argmax(1)
            values = flat[np.arange(channels), maxes]
            ii, jj = np.unravel_index(maxes, data.shape[1:])
        else:
            values = data
        for c in range(channels):
            idx = np.searchsorted(self.max_vals[c], values[c])
            if idx == 0:
                continue
            self.max_vals[c, : idx - 1] = self.max_vals[c, 1:idx]
            self.max_vals[c, idx - 1] = values[c]
            self.max_locs[c, : idx - 1] = self.max_locs[c, 1:idx]
            self.max_locs[c, idx - 1] = (image_idx, image_class, ii[c], jj[c]) if self.is_conv else (image_idx,
                                                                                                       image_class)


def dataset(model, count: int) -> torch.Tensor:
    from skimage import data

    bases = [Image.fromarray(getattr(data, n)()).convert("RGB") for n in ("chelsea", "coffee", "astronaut",
                                                                          "rocket", "camera", "coins")]
    images = []
    for i in range(count):
        base = bases[i % len(bases)]
        w, h = base.size
        s = 0.5 + 0.5 * ((i * 37) % 11) / 10
        crop = base.crop((int((1 - s) * w * ((i * 13) % 7) / 7), 0, int((1 - s) * w * ((i * 13) % 7) / 7 + s * w), h))
        images.append(model.preprocessing.to_tensor(ImageOps.mirror(crop) if i % 2 else crop))
    return torch.stack(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--k", type=int, default=9)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = deepvis.load_model()
    layers = deepvis.default_layers(model)
    x = dataset(model, args.images)
    batches = [(x[s:s + args.batch_size], torch.arange(s, min(s + args.batch_size, len(x))))
               for s in range(0, len(x), args.batch_size)]
    infos = {name: deepvis.layer_info(model, name) for name in layers}
    print(f"deepvis {deepvis.__version__}, torch {torch.__version__}, threads {torch.get_num_threads()}; "
          f"{model.spec}, {len(layers)} default layers, {args.images} images in batches of {args.batch_size}, "
          f"k={args.k}, {args.rounds} rounds")

    def bare():
        with torch.no_grad():
            for xb, _ in batches:
                model.net(xb)

    def streaming():
        tops = {n: TopK.empty(infos[n].channels, args.k) for n in layers}
        with torch.no_grad():
            for xb, idx in batches:
                with Probe(model, layers) as probe:
                    model.net(xb)
                for n in layers:
                    tops[n] = tops[n].update(probe[n], idx)
        return tops

    def original():
        trackers = {n: MaxTrackerPort(infos[n].channels, args.k, len(infos[n].shape) == 3) for n in layers}
        with torch.no_grad():
            for xb, idx in batches:
                with Probe(model, layers) as probe:
                    model.net(xb)
                for n in layers:
                    acts = probe[n].numpy()
                    for j, image in enumerate(idx.tolist()):
                        trackers[n].update(acts[j], image)
        return trackers

    # the two trackers agree (values, best first)
    tops, trackers = streaming(), original()
    worst = max(float(np.abs(tops[n].values.numpy() - trackers[n].max_vals[:, ::-1]).max()) for n in layers)
    print(f"check: deepvis top-k values vs the original's MaxTracker: max |diff| {worst:.2e}")

    variants = {"bare forward": bare, "deepvis find-max (probe + top-k)": streaming,
                "original MaxTracker port (probe + loop)": original}
    times = {name: [] for name in variants}
    for r in range(args.rounds):
        for name in list(variants)[r % 3:] + list(variants)[: r % 3]:
            start = time.perf_counter()
            variants[name]()
            times[name].append(time.perf_counter() - start)
    med = {name: statistics.median(t) for name, t in times.items()}
    print(f"\n{'variant':<42} {'median s':>9} {'images/s':>9}")
    for name, value in med.items():
        print(f"{name:<42} {value:9.3f} {args.images / value:9.1f}")
    vs_bare = med["bare forward"] / med["deepvis find-max (probe + top-k)"]
    vs_original = med["original MaxTracker port (probe + loop)"] / med["deepvis find-max (probe + top-k)"]
    print(f"\nthroughput deepvis / bare forward:      {vs_bare:.3f}x  (target >= 0.9x)  "
          f"{'MET' if vs_bare >= 0.9 else 'MISSED'}")
    print(f"whole scan deepvis / original scan:     {vs_original:.1f}x   (the forward pass dominates both)")

    # the tracking step alone, on the same activations: streaming top-k vs the original's update loop
    with torch.no_grad():
        recorded = []
        for xb, idx in batches:
            with Probe(model, layers) as probe:
                model.net(xb)
            recorded.append(({n: probe[n] for n in layers}, idx))

    def track_streaming():
        tops = {n: TopK.empty(infos[n].channels, args.k) for n in layers}
        for acts, idx in recorded:
            for n in layers:
                tops[n] = tops[n].update(acts[n], idx)

    def track_original():
        trackers = {n: MaxTrackerPort(infos[n].channels, args.k, len(infos[n].shape) == 3) for n in layers}
        for acts, idx in recorded:
            for n in layers:
                a = acts[n].numpy()
                for j, image in enumerate(idx.tolist()):
                    trackers[n].update(a[j], image)

    track = {"streaming top-k update": [], "MaxTracker.update loop": []}
    for r in range(args.rounds):
        for name, fn in ((("streaming top-k update", track_streaming), ("MaxTracker.update loop", track_original))
                         if r % 2 == 0 else (("MaxTracker.update loop", track_original),
                                             ("streaming top-k update", track_streaming))):
            start = time.perf_counter()
            fn()
            track[name].append(time.perf_counter() - start)
    fast, slow = (statistics.median(track[k]) for k in ("streaming top-k update", "MaxTracker.update loop"))
    print(f"tracking step alone ({args.images} images, {len(layers)} layers): streaming {fast * 1000:.1f} ms, "
          f"original loop {slow * 1000:.1f} ms -> {slow / fast:.1f}x faster  (target >= 10x)  "
          f"{'MET' if slow / fast >= 10 else 'MISSED'}")

    # memory: the top-k state does not grow with the dataset
    state = sum(t.values.numel() * 8 * 4 for t in tops.values()) / 1e6
    print(f"\ntop-k state: {state:.2f} MB for any dataset size")
    tops = {n: TopK.empty(infos[n].channels, args.k) for n in layers}
    seen = 0
    readings = []
    for repeat in range(1, 9):
        with torch.no_grad():
            for xb, idx in batches:
                with Probe(model, layers) as probe:
                    model.net(xb)
                for n in layers:
                    tops[n] = tops[n].update(probe[n], idx + seen)
        seen += len(x)
        if repeat in (1, 2, 4, 8):
            readings.append((seen, rss_mib()))
    print("RSS while scanning: " + ", ".join(f"{n} images {mb:.0f} MB" for n, mb in readings))


if __name__ == "__main__":
    main()
