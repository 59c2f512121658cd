"""Loading the bundled model until its layer catalog is built: layouts stated (one forward pass) against found by
detection (a second forward pass at twice the input size, what every load did before the bundled model stated them).

    python benchmarks/bench_load.py [--rounds N] [--threads T]

Each round loads ``efficientnet-lite0`` (weights from disk, the network built, its catalog) once as shipped and
once with no layouts stated; the two sides alternate which goes first. Reported: medians, their ratio and the
median of the per-round ratios; also the catalog alone, built again on the loaded model.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import deepvis
from deepvis.models import efficientnet_lite


def load(stated: bool) -> tuple[float, float]:
    """(seconds to load the model with its catalog, seconds of the catalog alone); ``stated=False`` loads it as
    before the bundled model stated its layouts (they are found by detection)."""
    shipped = efficientnet_lite.layouts
    if not stated:
        efficientnet_lite.layouts = lambda net: {}
    try:
        start = time.perf_counter()
        model = deepvis.load_model()
        layers = model.layers()  # built during loading, or here
        end = time.perf_counter()
    finally:
        efficientnet_lite.layouts = shipped
    assert len(layers) > 100 and bool(model.layouts) == stated
    model._catalog = None
    if not stated:
        model.layouts = {}
    again = time.perf_counter()
    model.layers()
    return end - start, time.perf_counter() - again


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    load(True), load(False)  # warm: imports, file caches
    times = {True: [], False: []}
    for r in range(args.rounds):
        for stated in ((True, False) if r % 2 == 0 else (False, True)):
            times[stated].append(load(stated))
    print(f"bundled model load + catalog, {torch.get_num_threads()} threads, {args.rounds} rounds")
    print(f"{'':28} {'stated ms':>10} {'detected ms':>12} {'ratio':>7} {'paired':>7}")
    for k, what in enumerate(("load + catalog", "catalog alone")):
        a = [t[k] for t in times[True]]
        b = [t[k] for t in times[False]]
        ratio = statistics.median(a) / statistics.median(b)
        paired = statistics.median(x / y for x, y in zip(a, b))
        print(f"{what:28} {statistics.median(a) * 1000:10.1f} {statistics.median(b) * 1000:12.1f} "
              f"{ratio:6.2f}x {paired:6.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
