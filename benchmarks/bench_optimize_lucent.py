"""deepvis optimize vs Lucent's render_vis, side by side in one run: same model (the bundled EfficientNet-Lite0),
same image size, same number of steps, same objective (a channel's mean, Lucent's ``"layer:n"``).

    pip install --no-deps torch-lucent==0.1.8 kornia==0.4.1
    python benchmarks/bench_optimize_lucent.py [--units 16] [--steps 64] [--layer blocks.8]

Prints units per minute (deepvis: all units in one batch; Lucent: one ``render_vis`` call per unit, as its API
works) and, per unit, the channel activation of each final image measured the same way (no transformations).
Lucent runs with its defaults (Fourier + decorrelated 'param.image', standard transforms, Adam 0.05) except that
its images are made at the model's input size and normalized for this model (mean 0.5, std 0.5) instead of
ImageNet's; its forward hooks are removed after each call (it leaks them otherwise, lucent issue #45).
The real torchvision does not import beside this torch, so a stand-in offering ``transforms.Normalize`` is used.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import types

import numpy as np
import torch

import deepvis
from deepvis.optimize import optimize
from deepvis.probe import Probe


def _stand_in_torchvision() -> None:
    """Just what Lucent imports from torchvision: ``transforms.Normalize`` on a (C, H, W) tensor."""
    try:
        import torchvision  # noqa: F401
        return
    except Exception:
        pass

    class Normalize:
        def __init__(self, mean, std):
            self.mean, self.std = torch.tensor(mean).view(-1, 1, 1), torch.tensor(std).view(-1, 1, 1)

        def __call__(self, tensor):
            return (tensor - self.mean.to(tensor)) / self.std.to(tensor)

    torchvision = types.ModuleType("torchvision")
    torchvision.transforms = types.ModuleType("torchvision.transforms")
    torchvision.transforms.Normalize = Normalize
    sys.modules["torchvision"] = torchvision
    sys.modules["torchvision.transforms"] = torchvision.transforms


def lucent_one(model, layer: str, channel: int, size: int, steps: int) -> np.ndarray:
    from lucent.optvis import param, render, transform

    def normalize(images):  # this model's preprocessing instead of Lucent's ImageNet default
        return model.preprocessing.normalize(images)

    try:
        images = render.render_vis(model.net, f"{layer.replace('.', '_')}:{channel}",
                                   param_f=lambda: param.image(size), transforms=transform.standard_transforms
                                   + [normalize], thresholds=(steps,), preprocess=False, progress=False,
                                   show_image=False)
    finally:
        for module in model.net.modules():
            module._forward_hooks.clear()
    return images[-1][0]


def channel_means(model, layer: str, channels: list[int], images: list[np.ndarray]) -> list[float]:
    x = model.preprocessing.normalize(torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float())
    with torch.no_grad(), Probe(model, [layer], stop_early=True) as probe:
        probe.run(x)
    acts = probe[layer]
    return [float(acts[n, c].mean()) for n, c in enumerate(channels)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=16)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--layer", default="blocks.8")
    args = parser.parse_args()
    _stand_in_torchvision()
    try:
        import lucent  # noqa: F401
    except ImportError:
        sys.exit("Lucent is not installed: pip install --no-deps torch-lucent==0.1.8 kornia==0.4.1")
    model = deepvis.load_model()
    size = model.preprocessing.input_size[0]
    count = model.layers()[model.layer_names().index(args.layer)].channels
    channels = np.linspace(0, count - 1, args.units).round().astype(int).tolist()
    units = [f"{args.layer}:{c}" for c in channels]

    start = time.perf_counter()
    ours = optimize(model, units, "modern", objective="channel", steps=args.steps)
    ours_seconds = time.perf_counter() - start
    np.random.seed(0)
    torch.manual_seed(0)
    start = time.perf_counter()
    theirs = [lucent_one(model, args.layer, c, size, args.steps) for c in channels]
    theirs_seconds = time.perf_counter() - start

    ours_acts = channel_means(model, args.layer, channels, [r.image for r in ours])
    theirs_acts = channel_means(model, args.layer, channels, theirs)
    print(f"{args.units} units of {args.layer}, {size}x{size}, {args.steps} steps, "
          f"{torch.get_num_threads()} threads")
    print(f"units per minute: deepvis (one batch) {60 * args.units / ours_seconds:.2f}, Lucent (one call per unit) "
          f"{60 * args.units / theirs_seconds:.2f} -> {theirs_seconds / ours_seconds:.2f}x")
    print("final channel activation per unit (deepvis / Lucent):")
    print("  " + ", ".join(f"{c}: {a:.2f}/{b:.2f}" for c, a, b in zip(channels, ours_acts, theirs_acts)))
    wins = sum(a >= b for a, b in zip(ours_acts, theirs_acts))
    print(f"median: deepvis {statistics.median(ours_acts):.3f}, Lucent {statistics.median(theirs_acts):.3f}; "
          f"deepvis >= Lucent on {wins}/{len(channels)} units")


if __name__ == "__main__":
    main()
