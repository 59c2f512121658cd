"""deepvis optimize vs Lucent's render_vis, side by side in one run: same model (the bundled EfficientNet-Lite0),
same image size, same number of steps, same objective (a channel's mean, Lucent's ``"layer:n"``).

    pip install decorator ipython tqdm                      # what Lucent's modules import (with their own deps)
    pip install --no-deps torch-lucent==0.1.8 kornia==0.4.1   # --no-deps: Lucent pins torchvision, old torch
    python benchmarks/bench_optimize_lucent.py [--units 16] [--steps 64] [--layer blocks.8] [--rounds 1]

Lucent 0.1.8's ``optvis`` imports numpy, PIL, tqdm, ``decorator`` (objectives), ``IPython.display`` (its
``misc.io.showing``, imported by ``render``), kornia (``transform``: ``kornia.get_rotation_matrix2d`` and
``kornia.warp_affine``, gone from kornia's top level in later versions -- with kornia 0.9 ``random_rotate``
fails, so 0.4.1 it is; it runs on torch 2.13) and ``torchvision.transforms.Normalize``: the real torchvision does
not import beside this torch, so a stand-in offering that class is used. scikit-learn is imported only by
``lucent.misc.channel_reducer``, which this benchmark does not use. kornia 0.4.1 can live in its own folder
(``pip install --no-deps --target DIR kornia==0.4.1`` and ``PYTHONPATH=DIR``) so the environment's kornia stays.

The work each side does (the script checks it with hooks and prints what it saw):

- deepvis (``optimize(..., "modern", objective="channel")``): all units in one batch; each step one forward
  pass *stopped at the unit's layer* (the layers above it never run) on 224x224 images (the model's input size;
  jitter, scale and rotation are resampled at the same size with reflected borders, each image its own draw);
- Lucent, one call per unit (``render_vis`` per unit, as its API is usually used) and batched (one ``render_vis``
  of ``param.image(224, batch=N)`` with ``Objective.sum`` of ``channel(layer, n, batch=i)``: image i maximizes
  unit i, the same units deepvis batches): each step runs the *whole network* (its hooks record the layer but do
  not stop the pass) on images padded by 12 pixels on each side (``pad(12)``: 248x248), jittered, then randomly
  scaled by 0.9-1.1 (a scale above 1 is not cropped back: up to 273x273), rotated and jittered again; one random
  draw per step for the whole batch.

Otherwise Lucent runs with its defaults (Fourier + decorrelated ``param.image``, standard transforms, Adam 0.05)
except that its images are normalized for this model (mean 0.5, std 0.5) instead of ImageNet's; its forward hooks
are removed after each call (it leaks them otherwise, lucent issue #45). Prints units per minute of each side and its time over deepvis's,
the input sizes and last layer each side's forward passes reached, and per unit the channel activation of each
final image measured the same way (no transformations).
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
from deepvis.engine.featvis import optimize
from deepvis.engine.probe import Probe


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


def lucent_batch(model, layer: str, channels: list[int], size: int, steps: int) -> np.ndarray:
    """One ``render_vis`` of a batch of ``len(channels)`` images, image i maximizing channel i."""
    from lucent.optvis import objectives, param, render, transform

    def normalize(images):
        return model.preprocessing.normalize(images)

    name = layer.replace(".", "_")
    objective = objectives.Objective.sum([objectives.channel(name, c, batch=i) for i, c in enumerate(channels)])
    try:
        images = render.render_vis(model.net, objective, param_f=lambda: param.image(size, batch=len(channels)),
                                   transforms=transform.standard_transforms + [normalize], thresholds=(steps,),
                                   preprocess=False, progress=False, show_image=False)
    finally:
        for module in model.net.modules():
            module._forward_hooks.clear()
    return images[-1]


class Watch:
    """What a side's forward passes did: the input sizes the network saw and how often its last layer ran (forward
    pre-hooks: Lucent's clean-up clears forward hooks)."""

    def __init__(self, model):
        self.sizes: set[tuple[int, int]] = set()
        self.passes = self.reached_end = 0
        last = dict(model.net.named_modules())[model.layer_names()[-1]]
        self._handles = [model.net.register_forward_pre_hook(self._saw), last.register_forward_pre_hook(self._end)]
        self.last = model.layer_names()[-1]

    def _saw(self, _module, args):
        self.sizes.add(tuple(args[0].shape[-2:]))
        self.passes += 1

    def _end(self, _module, _args):
        self.reached_end += 1

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()

    def describe(self) -> str:
        sides = sorted({h for h, _ in self.sizes})
        size = f"{sides[0]}" if len(sides) == 1 else f"{sides[0]}-{sides[-1]}"
        return (f"{self.passes} forward passes on {size} px inputs, the last layer ({self.last}) ran in "
                f"{self.reached_end}")


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
    parser.add_argument("--rounds", type=int, default=1, help="rounds of the three sides, the order rotating")
    args = parser.parse_args()
    _stand_in_torchvision()
    try:
        from lucent.optvis import render  # noqa: F401
    except ImportError as exc:
        sys.exit(f"Lucent cannot be imported ({exc}): see this script's docstring for what it needs")
    model = deepvis.load_model()
    size = model.preprocessing.input_size[0]
    count = model.layers()[model.layer_names().index(args.layer)].channels
    channels = np.linspace(0, count - 1, args.units).round().astype(int).tolist()
    units = [f"{args.layer}:{c}" for c in channels]

    def ours():
        return [r.image for r in optimize(model, units, "modern", objective="channel", steps=args.steps)]

    def theirs():
        return [lucent_one(model, args.layer, c, size, args.steps) for c in channels]

    def theirs_batched():
        return list(lucent_batch(model, args.layer, channels, size, args.steps))

    sides = {"deepvis, one batch": ours, "Lucent, one call per unit": theirs, "Lucent, batch=N": theirs_batched}
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    watches: dict[str, Watch] = {}
    images: dict[str, list[np.ndarray]] = {}
    np.random.seed(0)
    torch.manual_seed(0)
    names = list(sides)
    for r in range(args.rounds):
        for name in names[r % 3:] + names[:r % 3]:
            watch = Watch(model)
            start = time.perf_counter()
            try:
                images[name] = sides[name]()
            finally:
                watch.close()
            seconds[name].append(time.perf_counter() - start)
            watches[name] = watch

    print(f"{args.units} units of {args.layer}, {size}x{size}, {args.steps} steps, {torch.get_num_threads()} "
          f"threads, {args.rounds} round(s)")
    ours_median = statistics.median(seconds[names[0]])
    print(f"{'':28} {'units/min':>10} {'time / deepvis':>15}")
    for name in names:
        median = statistics.median(seconds[name])
        print(f"{name:28} {60 * args.units / median:10.2f} {median / ours_median:14.2f}x")
    for name in names:
        print(f"  {name}: {watches[name].describe()}")
    acts = {name: channel_means(model, args.layer, channels, images[name]) for name in names}
    print("final channel activation per unit (deepvis / Lucent per unit / Lucent batched):")
    print("  " + ", ".join(f"{c}: {a:.2f}/{b:.2f}/{d:.2f}" for c, a, b, d in zip(channels, *acts.values())))
    for name in names[1:]:
        wins = sum(a >= b for a, b in zip(acts[names[0]], acts[name]))
        print(f"median: deepvis {statistics.median(acts[names[0]]):.3f}, {name} {statistics.median(acts[name]):.3f};"
              f" deepvis >= it on {wins}/{len(channels)} units")


if __name__ == "__main__":
    main()
