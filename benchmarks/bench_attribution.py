"""Attribution speed: deepvis vs Captum per image, and the live frame with a Grad-CAM overlay vs without.

    python benchmarks/bench_attribution.py [--repeats N] [--threads T] [--budget S] [--steps 32] [--samples 32]

Variants run round-robin, the starting one rotating from round to round (as bench_core.py), so slow drifts of a
noisy machine hit all alike. Reported: each variant's median and the ratio of medians against its baseline, with the
median of per-round (paired) ratios.

Sections
  1. integrated gradients (``--steps`` Gauss-Legendre points, black baseline) of ``classifier:285`` on chelsea,
     deepvis (batched in chunks of ``--batch-size``) vs Captum's ``IntegratedGradients`` (same steps, method and
     ``internal_batch_size``), on EfficientNet-Lite0 with the softmax dropped (Captum's target is then the logit);
  2. SmoothGrad (``--samples`` noisy copies) vs Captum's ``NoiseTunnel(Saliency(abs=False))`` (same
     ``nt_samples_batch_size``); checked equal first with the same noise;
  3. the live frame: a webcam frame (JPEG bytes) through ``Toolbox.input_from_bytes`` + ``Toolbox.view`` with the
     selected unit ``classifier:285``, without an overlay and with the Grad-CAM overlay (target <= 1.10x).
"""

from __future__ import annotations

import argparse
import copy
import io
import os
import statistics
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from bench_core import Variant, check, measure  # noqa: E402

import deepvis  # noqa: E402
from deepvis.attribution import integrated_gradients, make_baseline, smoothgrad  # noqa: E402
from deepvis.server.panes import ViewRequest  # noqa: E402
from deepvis.server.session import Toolbox  # noqa: E402

CLASS = 285


def frames(image: Path, count: int) -> list[bytes]:
    """``count`` slightly different JPEG frames of an image (a camera never sends the same picture twice)."""
    base = np.asarray(Image.open(image).convert("RGB").resize((320, 240)), dtype=np.int16)
    out = []
    rng = np.random.default_rng(0)
    for _ in range(count):
        noisy = np.clip(base + rng.integers(-3, 4, base.shape), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(noisy).save(buffer, format="JPEG", quality=85)
        out.append(buffer.getvalue())
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=6, help="measured rounds (default 6)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--budget", type=float, default=240.0, help="stop measuring after this many seconds")
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32, help="rows per forward pass, both libraries (default 32)")
    args = parser.parse_args(argv)
    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    warnings.filterwarnings("ignore")
    from captum.attr import IntegratedGradients, NoiseTunnel, Saliency
    from captum.attr._core.noise_tunnel import NoiseTunnel as _NT

    model = deepvis.load_model()
    logits = copy.deepcopy(model.net)
    logits.prob = nn.Identity()
    logit_model = deepvis.load_model(deepvis.Model(net=logits, preprocessing=model.preprocessing,
                                                   spec="efficientnet-lite0 (logits)"))
    chelsea = next(p for p in deepvis.sample_images() if p.name == "chelsea.jpg")
    x = model.input(chelsea)
    unit = f"classifier:{CLASS}"
    print(f"deepvis {deepvis.__version__}, torch {torch.__version__}, threads {threads}, cpu count {os.cpu_count()}")
    print(f"EfficientNet-Lite0, chelsea, unit {unit}; IG {args.steps} steps, SmoothGrad {args.samples} samples, "
          f"batch {args.batch_size}; repeats {args.repeats}")

    base = make_baseline(model, x, "black")
    ig = IntegratedGradients(logits)
    ok = check("IG deepvis vs captum", integrated_gradients(logit_model, x, unit, args.steps, "black",
                                                            batch_size=args.batch_size),
               ig.attribute(x, baselines=base, target=CLASS, n_steps=args.steps, method="gausslegendre",
                            internal_batch_size=args.batch_size))
    stdev = 0.15 * float(x.max() - x.min())
    noise = torch.randn(args.samples, *x.shape[1:], generator=torch.Generator().manual_seed(0)) * stdev
    original = _NT.__dict__["_add_noise_to_input"]  # the staticmethod itself, to put back
    _NT._add_noise_to_input = staticmethod(lambda inp, std, n: inp.repeat_interleave(n, dim=0) + noise[:n])
    nt = NoiseTunnel(Saliency(logits))
    reference = nt.attribute(x, nt_type="smoothgrad", nt_samples=args.samples, stdevs=stdev, target=CLASS,
                             abs=False)
    # how far the same computation moves with the batch size alone (convolution kernels chosen per batch shape)
    check("SmoothGrad deepvis batch 32 vs 8 x 4 (float noise)", smoothgrad(logit_model, x, unit, noise=noise,
                                                                       batch_size=args.samples),
          smoothgrad(logit_model, x, unit, noise=noise, batch_size=max(1, args.samples // 4)))
    ok &= check("SmoothGrad deepvis vs captum", smoothgrad(logit_model, x, unit, noise=noise,
                                                           batch_size=args.samples), reference, rtol=1e-3)
    _NT._add_noise_to_input = original

    # one toolbox per variant: each keeps its own way of running the next frame's forward pass (traced for a
    # Grad-CAM overlay, plain without one), as a tab showing only that view would
    toolboxes = {None: Toolbox(model), "gradcam": Toolbox(model)}
    jpegs = frames(chelsea, 64)
    counter = {"n": 0}

    def frame(overlay):
        counter["n"] += 1
        toolbox = toolboxes[overlay]
        item = toolbox.input_from_bytes(jpegs[counter["n"] % len(jpegs)], "frame", tab="bench")
        return toolbox.view(ViewRequest.from_json({"input": item.id, "layer": "classifier", "channel": CLASS,
                                                   "cursor": "grid", "overlay": overlay}))

    assert frame("gradcam")["overlay"]["png"] and frame(None)["overlay"] is None
    variants = [
        Variant("1 integrated gradients", "captum IntegratedGradients",
                lambda: ig.attribute(x, baselines=base, target=CLASS, n_steps=args.steps, method="gausslegendre",
                                     internal_batch_size=args.batch_size)),
        Variant("1 integrated gradients", "deepvis integrated-gradients",
                lambda: integrated_gradients(logit_model, x, unit, args.steps, "black", batch_size=args.batch_size),
                baseline="captum IntegratedGradients", target=1.0),
        Variant("2 smoothgrad", "captum NoiseTunnel(Saliency)",
                lambda: nt.attribute(x, nt_type="smoothgrad", nt_samples=args.samples, stdevs=stdev, target=CLASS,
                                     abs=False, nt_samples_batch_size=args.batch_size)),
        Variant("2 smoothgrad", "deepvis smoothgrad",
                lambda: smoothgrad(logit_model, x, unit, samples=args.samples, sigma=0.15,
                                   batch_size=args.batch_size),
                baseline="captum NoiseTunnel(Saliency)", target=1.0),
        Variant("3 live frame", "frame + view, no overlay", lambda: frame(None)),
        Variant("3 live frame", "frame + view + Grad-CAM overlay", lambda: frame("gradcam"),
                baseline="frame + view, no overlay", target=1.10),
    ]
    rounds = measure(variants, args.repeats, args.warmup, args.budget)
    by_name = {v.name: v for v in variants}
    print(f"\n{rounds} rounds")
    print(f"{'variant':<34}{'median ms':>11}  {'baseline':<30}{'ratio':>7}{'paired':>9}{'target':>8}")
    for v in variants:
        line = f"{v.name:<34}{v.median * 1e3:>11.1f}"
        if v.baseline:
            b = by_name[v.baseline]
            ratio = v.median / b.median
            paired = statistics.median(t / s for t, s in zip(v.times, b.times))
            line += f"  {v.baseline:<30}{ratio:>6.3f}x{paired:>8.3f}x{'<=' + format(v.target, '.2f'):>8}"
            line += "  met" if ratio <= v.target else "  NOT met"
        print(line)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
