"""find-max throughput, side by side in one run: deepvis's streaming top-k vs the bare forward pass over the same
batches, and vs a port of the original toolbox's per-channel update loop (MaxTracker.update).

    python benchmarks/bench_findmax.py [--images 64] [--batch-size 16] [--rounds 5]

Every variant sees the same preprocessed batches (decoded once, so image decoding is not measured); rounds are
interleaved and medians compared. Also prints the scan's memory (RSS) at several dataset sizes: it is bounded by
the batch size, not the number of images.

End to end (``--e2e-images N``, default 200; 0 skips it): N JPEG photos on disk; ``find_max()`` as users call it
(file listing, decoding in the DataLoader, probe + top-k, receptive fields, store writes) against a bare loop over
the same files and batches (PIL decode + preprocessing + forward), both in this warm process, interleaved
(target >= 0.9x the bare loop's throughput); then both as whole commands (``python -m deepvis find-max`` against
``python -c`` running the bare loop), startup and model loading included. ``--workers`` (default 0): the
DataLoader's decoding processes; on 2 cores they only compete with torch's own threads for the same cores.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from PIL import Image, ImageOps

import deepvis
from deepvis.engine.probe import Probe
from deepvis.engine.topk import TopK
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


BARE_LOOP = """
import sys, torch, deepvis
from deepvis.pixels.images import find_images, load_image
model = deepvis.load_model()
files = find_images(sys.argv[1])[1]
batch = int(sys.argv[2])
with torch.no_grad():
    for start in range(0, len(files), batch):
        x = torch.stack([model.preprocessing.to_tensor(load_image(f)) for f in files[start:start + batch]])
        model.net(x)
"""


def write_photos(folder, count: int) -> None:
    """``count`` JPEG photos (crops, flips and scales of scikit-image's samples), 200-400 px, quality 90."""
    from skimage import data

    bases = [Image.fromarray(getattr(data, n)()).convert("RGB") for n in ("chelsea", "coffee", "astronaut",
                                                                          "rocket", "camera", "coins", "horse")]
    rng = np.random.default_rng(0)
    for i in range(count):
        base = bases[i % len(bases)]
        w, h = base.size
        side = int(min(w, h) * rng.uniform(0.5, 1.0))
        left, top = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        photo = base.crop((left, top, left + side, top + side)).resize((int(rng.integers(200, 400)),) * 2)
        (ImageOps.mirror(photo) if i % 2 else photo).save(folder / f"photo_{i:04d}.jpg", quality=90)


def end_to_end(model, layers, args) -> None:
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    from deepvis.jobs.findmax import find_max
    from deepvis.pixels.images import find_images, load_image

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        folder.mkdir()
        write_photos(folder, args.e2e_images)
        files = find_images(folder)[1]

        def bare():
            with torch.no_grad():
                for start in range(0, len(files), args.batch_size):
                    x = torch.stack([model.preprocessing.to_tensor(load_image(f))
                                     for f in files[start:start + args.batch_size]])
                    model.net(x)

        def scan():
            find_max(model, folder, Path(tmp) / "store", layers=layers, k=args.k, batch_size=args.batch_size,
                     workers=args.workers, force=True, progress=False)

        scan()  # warm: the model's receptive fields are measured once per process, as in a session
        times = {"bare": [], "scan": []}
        for r in range(args.e2e_rounds):
            for name, fn in ((("bare", bare), ("scan", scan)) if r % 2 == 0 else (("scan", scan), ("bare", bare))):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
        bare_s, scan_s = statistics.median(times["bare"]), statistics.median(times["scan"])
        ratio = bare_s / scan_s
        print(f"\nend to end, warm process, {len(files)} JPEG photos, batches of {args.batch_size}, "
              f"{args.workers} workers: find_max() {len(files) / scan_s:.1f} images/s, bare decode + forward loop "
              f"{len(files) / bare_s:.1f} images/s -> {ratio:.3f}x  (target >= 0.9x)  "
              f"{'MET' if ratio >= 0.9 else 'MISSED'}")

        commands = {
            "deepvis find-max": [sys.executable, "-m", "deepvis", "find-max", str(folder), "--out",
                                 str(Path(tmp) / "cli"), "--force", "-q", "--batch-size", str(args.batch_size),
                                 "--k", str(args.k), "--workers", str(args.workers)],
            "python bare loop": [sys.executable, "-c", BARE_LOOP, str(folder), str(args.batch_size)],
        }
        whole = {name: [] for name in commands}
        for r in range(args.e2e_rounds):
            for name in (list(commands) if r % 2 == 0 else list(commands)[::-1]):
                start = time.perf_counter()
                subprocess.run(commands[name], check=True, capture_output=True)
                whole[name].append(time.perf_counter() - start)
        cli_s, loop_s = (statistics.median(whole[name]) for name in commands)
        print(f"whole commands: deepvis find-max {cli_s:.1f} s, bare loop script {loop_s:.1f} s -> "
              f"{loop_s / cli_s:.3f}x the bare script's throughput")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--k", type=int, default=9)
    parser.add_argument("--e2e-images", type=int, default=200, help="photos of the end-to-end section (0: skip)")
    parser.add_argument("--e2e-rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=0)
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

    if args.e2e_images:
        end_to_end(model, layers, args)

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
