"""Attribution speed: deepvis vs Captum per image, and the live frame with a Grad-CAM overlay vs without.

    python benchmarks/bench_attribution.py [--repeats N] [--threads T] [--budget S] [--steps 32] [--samples 32]
                                           [--batch-size B] [--clock wall|cpu]

Variants run round-robin, the starting one rotating from round to round (as bench_core.py), so slow drifts of a
noisy machine hit all alike. Reported: each variant's median and the ratio of medians against its baseline, with the
median of per-round (paired) ratios. ``--clock cpu`` times with the process's CPU time (steadier on a shared
machine; use it with ``--threads 1``).

Sections (EfficientNet-Lite0 with the softmax dropped, so that Captum's target is the logit; unit
``classifier:285`` on chelsea; the model's input is channels-last, as ``Model.input`` makes it)
  1. integrated gradients (``--steps`` Gauss-Legendre points, black baseline): deepvis at its defaults (chunks of
     ``--batch-size``, default :data:`deepvis.attribution.BATCH_SIZE`, in the input's channels-last layout) against
     Captum's ``IntegratedGradients`` as called with the same steps and method (its default: every step in one
     pass; target <= 1.0x), and, for the same work, against Captum given the same rows per pass
     (``internal_batch_size``) and a channels-last baseline (so that its path is channels-last too);
  2. SmoothGrad (``--samples`` noisy copies): deepvis at its defaults against Captum's
     ``NoiseTunnel(Saliency(abs=False))`` as called (every sample in one pass; target <= 1.0x) and with
     ``nt_samples_batch_size`` = the same rows per pass (its noisy batch is NCHW: ``repeat_interleave``);
  3. the live frame: a webcam frame (JPEG bytes) through ``Toolbox.input_from_bytes`` + ``Toolbox.view`` with the
     selected unit ``classifier:285`` and the backward pane in ``--back-mode`` (shown, as by default, or ``off``),
     without an overlay and with the Grad-CAM overlay (target <= 1.10x).

Equality is checked before timing where it is well defined: the same rows per pass and the same memory layout
(float32 convolution kernels, and so the last bits of every gradient, depend on both; see docs/attribution.md).
"""

from __future__ import annotations

import argparse
import copy
import io
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from bench_core import Variant, check, measure  # noqa: E402

import deepvis  # noqa: E402
from deepvis.engine.attribution import BATCH_SIZE, integrated_gradients, make_baseline, smoothgrad  # noqa: E402
from deepvis.apps.server.panes import ViewRequest  # noqa: E402
from deepvis.apps.server.session import Toolbox  # noqa: E402

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


def spread(name: str, a: torch.Tensor, b: torch.Tensor) -> None:
    """Print how far two float32 runs of the same computation with different kernels are apart (not a check)."""
    diff, scale = (a - b).abs().max().item(), b.abs().max().item()
    print(f"  spread {name:<45} max|diff| {diff:.3e}  (max|value| {scale:.3e}; {diff / scale:.1e} of it)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=6, help="measured rounds (default 6)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--budget", type=float, default=240.0, help="stop measuring after this many seconds")
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE,
                        help=f"deepvis's rows per forward pass (default {BATCH_SIZE}, the library's default)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    parser.add_argument("--sections", default="123", help="which sections to run (default 123; e.g. 3: the frame)")
    parser.add_argument("--back-mode", choices=("gradient", "deconv", "guided", "off"), default="gradient",
                        help="the live frame's backward pane mode, or off (default gradient)")
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
          f"deepvis batch {args.batch_size}; backward pane {args.back_mode}; repeats {args.repeats}, "
          f"clock {args.clock}")

    ok = True
    if set(args.sections) & {"1", "2"}:  # the equality checks; the variants below are defined either way
        base = make_baseline(model, x, "black")
        base_cl = base.contiguous(memory_format=torch.channels_last)
        bs, cl = args.batch_size, torch.channels_last
        ig = IntegratedGradients(logits)
        ig_args = dict(target=CLASS, n_steps=args.steps, method="gausslegendre")
        ours_ig = integrated_gradients(logit_model, x, unit, args.steps, "black", batch_size=bs)
        ok = check("IG deepvis vs captum, same rows and layout", ours_ig,
                   ig.attribute(x, baselines=base_cl, internal_batch_size=bs, **ig_args), rtol=1e-5)
        spread("IG deepvis vs captum as called (one pass, NCHW)", ours_ig, ig.attribute(x, baselines=base, **ig_args))
        stdev = 0.15 * float(x.max() - x.min())
        noise = torch.randn(args.samples, *x.shape[1:], generator=torch.Generator().manual_seed(0)) * stdev
        original = _NT.__dict__["_add_noise_to_input"]  # the staticmethod itself, to put back
        layout = {"format": cl, "at": 0}

        def same_noise(inp, std, n):  # the noise tensor, chunk by chunk, in the layout asked for
            rows = inp.repeat_interleave(n, dim=0) + noise[layout["at"]:layout["at"] + n]
            layout["at"] += n
            return rows.contiguous(memory_format=layout["format"])

        _NT._add_noise_to_input = staticmethod(same_noise)
        nt = NoiseTunnel(Saliency(logits))
        sg_args = dict(nt_type="smoothgrad", nt_samples=args.samples, stdevs=stdev, target=CLASS, abs=False)
        ours_sg = smoothgrad(logit_model, x, unit, noise=noise, batch_size=bs)
        ok &= check("SmoothGrad deepvis vs captum, same noise, rows, layout", ours_sg,
                    nt.attribute(x, nt_samples_batch_size=bs, **sg_args), rtol=1e-5)
        # how far float32 kernels alone move the same computation: rows per pass, memory layout
        layout.update(format=torch.contiguous_format, at=0)
        spread("SmoothGrad deepvis vs captum as called (one pass, NCHW)", ours_sg, nt.attribute(x, **sg_args))
        spread(f"SmoothGrad deepvis batch {bs} vs {args.samples}", ours_sg,
              smoothgrad(logit_model, x, unit, noise=noise, batch_size=args.samples))
        _NT._add_noise_to_input = original

    # one toolbox per variant: each keeps its own way of running the next frame's forward pass (traced for a
    # Grad-CAM overlay, plain without one), as a tab showing only that view would
    toolboxes = {None: Toolbox(model), "gradcam": Toolbox(model)}
    jpegs = frames(chelsea, 64)
    counter = {"n": 0}

    back_mode = args.back_mode if args.back_mode != "off" else "gradient"

    def frame(overlay):
        counter["n"] += 1
        toolbox = toolboxes[overlay]
        item = toolbox.input_from_bytes(jpegs[counter["n"] % len(jpegs)], "frame", tab="bench")
        return toolbox.view(ViewRequest.from_json({"input": item.id, "layer": "classifier", "channel": CLASS,
                                                   "cursor": "grid", "overlay": overlay,
                                                   "back_mode": back_mode, "back_enabled": args.back_mode != "off"}))

    assert frame("gradcam")["overlay"]["png"] and frame(None)["overlay"] is None
    variants = [
        Variant("1 integrated gradients", "captum IG as called",
                lambda: ig.attribute(x, baselines=base, **ig_args)),
        Variant("1 integrated gradients", "captum IG same rows+layout",
                lambda: ig.attribute(x, baselines=base_cl, internal_batch_size=bs, **ig_args)),
        Variant("1 integrated gradients", "deepvis integrated-gradients",
                lambda: integrated_gradients(logit_model, x, unit, args.steps, "black", batch_size=bs),
                baseline="captum IG as called", target=1.0),
        Variant("2 smoothgrad", "captum NoiseTunnel as called",
                lambda: nt.attribute(x, **sg_args)),
        Variant("2 smoothgrad", "captum NoiseTunnel same rows",
                lambda: nt.attribute(x, nt_samples_batch_size=bs, **sg_args)),
        Variant("2 smoothgrad", "deepvis smoothgrad",
                lambda: smoothgrad(logit_model, x, unit, samples=args.samples, sigma=0.15, batch_size=bs),
                baseline="captum NoiseTunnel as called", target=1.0),
        Variant("3 live frame", "frame + view, no overlay", lambda: frame(None)),
        Variant("3 live frame", "frame + view + Grad-CAM overlay", lambda: frame("gradcam"),
                baseline="frame + view, no overlay", target=1.10),
    ]
    variants = [v for v in variants if v.section[0] in args.sections]
    rounds = measure(variants, args.repeats, args.warmup, args.budget,
                     time.process_time if args.clock == "cpu" else time.perf_counter)
    by_name = {v.name: v for v in variants}
    print(f"\n{rounds} rounds")
    print(f"{'variant':<34}{'median ms':>11}  {'baseline':<30}{'ratio':>7}{'paired':>9}{'target':>8}")
    same_work = {"deepvis integrated-gradients": ("captum IG same rows+layout", "same work"),
                 "deepvis smoothgrad": ("captum NoiseTunnel same rows", "same rows; Captum's batch NCHW")}
    for v in variants:
        line = f"{v.name:<34}{v.median * 1e3:>11.1f}"
        if v.baseline:
            b = by_name[v.baseline]
            ratio = v.median / b.median
            paired = statistics.median(t / s for t, s in zip(v.times, b.times))
            line += f"  {v.baseline:<30}{ratio:>6.3f}x{paired:>8.3f}x{'<=' + format(v.target, '.2f'):>8}"
            line += "  met" if ratio <= v.target else "  NOT met"
        print(line)
        if v.name in same_work:
            name, note = same_work[v.name]
            b = by_name[name]
            paired = statistics.median(t / s for t, s in zip(v.times, b.times))
            print(f"{'':<45}{b.name:<30}{v.median / b.median:>6.3f}x{paired:>8.3f}x  ({note}, for reference)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
