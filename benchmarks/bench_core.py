"""Core speed benchmark: probing overhead, backward passes per mode, and deepvis vs Captum, side by side.

    python benchmarks/bench_core.py [--repeats N] [--batch B] [--threads T] [--budget S] [--image NAME] [--no-captum]

Every measured variant runs once per round, round-robin, with the starting variant rotating from round to round,
so slow drifts of a noisy machine hit all variants alike. Reported: the median time of each variant and two
ratios against its baseline: the ratio of the medians and the median of the per-round (paired) ratios. Targets
are judged on the ratio of the medians. All variants run with the same ``torch.set_num_threads``.

Sections
  1. forward alone (``torch.no_grad()``, ``model.net(x)``) on the default model (EfficientNet-Lite0, 224x224);
  2. forward while a ``Probe`` records every default layer (target <= 1.10x of 1);
  3. ``backprop_batch(model, x, unit, mode)`` for each mode against a plain autograd baseline: forward with a
     requires-grad input, the unit's layer output taken by a forward hook, ``torch.autograd.grad`` with the same
     start signal (the unit's activation map). The baseline runs once over the full network ("plain") and once
     stopped at the unit's layer by raising from the hook ("plain-stop"), as deepvis does. Targets (deconv and
     guided <= 1.15x) are judged against "plain-stop", the same work; the ratio against "plain" is printed too,
     but what it gains is the early stop, not the backward mode;
  4. Captum ``GuidedBackprop`` / ``Deconvolution`` against the equivalent deepvis call, on a copy of
     EfficientNet-Lite0 whose ReLU6 modules are replaced by ``nn.ReLU`` modules (what Captum hooks) and whose
     softmax is dropped, so the output is the logits: Captum's ``target=c`` starts from a one-hot on logit c, which
     is deepvis unit ``classifier:c`` with ``signal='argmax'`` (on a layer without spatial dimensions the "map" of
     a channel is one value, so its argmax one-hot is the one-hot on that channel). The attributions are checked
     equal (allclose) before timing (target: deepvis no slower than Captum).
"""

from __future__ import annotations

import argparse
import copy
import gc
import os
import statistics
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from common import plain_backward

import deepvis
from deepvis import Probe, backprop_batch, default_layers

UNITS = ("blocks.10:5", "classifier:285")
MODES = ("gradient", "deconv", "guided")
CLASS = 285  # 'Egyptian cat': the class of the default image (chelsea.jpg)


@dataclass
class Variant:
    section: str
    name: str
    fn: Callable[[], object]
    baseline: str | None = None  # name of the variant it is compared with
    target: float | None = None  # ratio (of medians) it should stay at or below
    times: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.times)


def relu_copy(model: deepvis.Model) -> deepvis.Model:
    """EfficientNet-Lite0 with nn.ReLU modules instead of nn.ReLU6 and the softmax dropped (outputs logits)."""
    net = copy.deepcopy(model.net)
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.ReLU6):
                setattr(parent, name, nn.ReLU())
    net.prob = nn.Identity()
    return deepvis.load_model(deepvis.Model(net=net, preprocessing=model.preprocessing, labels=model.labels,
                                            spec="efficientnet-lite0 (ReLU modules, logits)", outputs="logits"))


def check(name: str, a: torch.Tensor, b: torch.Tensor, rtol=1e-4, atol=None) -> bool:
    scale = max(a.abs().max().item(), b.abs().max().item(), 1e-12)
    atol = atol if atol is not None else 1e-5 * scale
    diff = (a - b).abs().max().item()
    ok = torch.allclose(a, b, rtol=rtol, atol=atol)
    print(f"  check {name:<44} max|diff| {diff:.3e}  (max|value| {scale:.3e})  {'OK' if ok else 'MISMATCH'}")
    return ok


def measure(variants: list[Variant], repeats: int, warmup: int, budget: float, clock=time.perf_counter) -> int:
    """Round-robin over the variants; stops early (after >= 5 measured rounds) once ``budget`` seconds are spent.
    ``clock``: what each call is timed with (``time.process_time``: the CPU time of this process, steadier than
    wall time on a machine shared with other jobs when torch runs one thread).

    Returns the number of measured rounds.
    """
    n = len(variants)
    deadline = time.perf_counter() + budget if budget else float("inf")
    done = 0
    for r in range(warmup + repeats):
        if done >= min(5, repeats) and time.perf_counter() > deadline:
            break
        gc.collect()
        gc.disable()  # no collector pauses inside a timed call (the variants make no reference cycles)
        try:
            for k in range(n):
                v = variants[(r + k) % n]
                t0 = clock()
                v.fn()
                elapsed = clock() - t0
                if r >= warmup:
                    v.times.append(elapsed)
        finally:
            gc.enable()
        done += r >= warmup
    return done


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=40, help="measured rounds (default 40)")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured rounds first (default 3)")
    parser.add_argument("--batch", type=int, default=1, help="images per call (default 1)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for every variant "
                        "(default: torch's current setting)")
    parser.add_argument("--image", default="chelsea.jpg", help="bundled sample image (default chelsea.jpg)")
    parser.add_argument("--budget", type=float, default=0.0, help="stop measuring after this many seconds "
                        "(at least 5 rounds are measured; default 0: every round asked for is measured, so a loaded "
                        "machine gives the same number of rounds, only slower)")
    parser.add_argument("--no-captum", action="store_true", help="skip section 4")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.batch < 1:
        parser.error("--repeats and --batch must be >= 1")

    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    warnings.filterwarnings("ignore")
    start_time = time.perf_counter()

    model = deepvis.load_model()
    net = model.net
    images = {p.name: p for p in deepvis.sample_images()}
    x = model.input(images[args.image]).repeat(args.batch, 1, 1, 1).contiguous()
    names = default_layers(model)
    modules = dict(net.named_modules())
    print(f"deepvis {deepvis.__version__}, torch {torch.__version__}, threads {threads}, cpu count {os.cpu_count()}, "
          f"python {sys.version.split()[0]}")
    print(f"model {model.spec} (EfficientNet-Lite0), input {tuple(x.shape)} from {args.image}, "
          f"{len(names)} default layers; repeats {args.repeats} (+{args.warmup} warmup), batch {args.batch}")
    with torch.no_grad():
        top = net(x)[0].argmax().item()
    print(f"top class: {top} {model.label(top)}")

    variants: list[Variant] = []
    ok = True

    # 1-2. forward alone vs forward while probing every default layer.
    def forward():
        with torch.no_grad():
            return net(x)

    def forward_probe():
        with torch.no_grad(), Probe(model, names) as probe:
            net(x)
        return probe.activations

    recorded = forward_probe()
    assert len(recorded) == len(names), "probe missed layers"
    variants += [Variant("1-2 forward", "forward (no_grad)", forward),
                 Variant("1-2 forward", f"forward + Probe({len(names)} layers)", forward_probe,
                         baseline="forward (no_grad)", target=1.10)]

    # 3. backward from a unit, each mode vs plain autograd.
    print("\nsection 3 checks (deepvis 'gradient' == plain autograd):")
    for unit_name in UNITS:
        unit = deepvis.parse_unit(unit_name)
        module = modules[unit.layer]
        section = f"3 backward {unit_name}"
        plain = f"plain [{unit_name}]"
        plain_stop = f"plain-stop [{unit_name}]"
        g_ref = plain_backward(net, module, x, unit.channel, stop=False)
        g_ref_stop = plain_backward(net, module, x, unit.channel, stop=True)
        g_dv = backprop_batch(model, x, unit_name, "gradient").input_grad
        ok &= check(f"{unit_name} plain-stop vs plain", g_ref_stop, g_ref)
        ok &= check(f"{unit_name} deepvis gradient vs plain", g_dv, g_ref)
        variants += [
            Variant(section, plain, lambda m=module, c=unit.channel: plain_backward(net, m, x, c, False)),
            Variant(section, plain_stop, lambda m=module, c=unit.channel: plain_backward(net, m, x, c, True),
                    baseline=plain),
        ]
        for mode in MODES:
            fn = lambda u=unit_name, md=mode: backprop_batch(model, x, u, md)
            # Judged against the baseline doing the same work (stopped at the unit's layer, as deepvis is); the
            # ratio against the full-network baseline is shown too, but it credits the early stop, not the mode.
            target = 1.15 if mode in ("deconv", "guided") else None
            variants += [Variant(section, f"deepvis {mode} [{unit_name}] vs stop", fn, baseline=plain_stop,
                                 target=target),
                         Variant(section, f"deepvis {mode} [{unit_name}]", fn, baseline=plain)]

    # 4. Captum on a ReLU-module copy.
    captum_ok = not args.no_captum
    if captum_ok:
        try:
            from captum.attr import Deconvolution, GuidedBackprop
        except Exception as exc:  # captum 0.9 imports matplotlib at import time
            print(f"\nsection 4 skipped: cannot import captum.attr ({type(exc).__name__}: {exc})")
            captum_ok = False
    if captum_ok:
        relu_model = relu_copy(model)
        rnet = relu_model.net
        with torch.no_grad():
            rtop = rnet(x)[0].argmax().item()
        print(f"\nsection 4: ReLU copy of EfficientNet-Lite0 (ReLU6 -> nn.ReLU modules, softmax dropped); "
              f"its top class {rtop} {model.label(rtop)}; target class {CLASS}")
        print("section 4 checks (deepvis 'classifier:%d' signal='argmax' == Captum target=%d):" % (CLASS, CLASS))
        x_captum = x.detach().clone()
        captum_classes = {"guided": GuidedBackprop, "deconv": Deconvolution}
        for mode, cls in captum_classes.items():
            attributor = cls(rnet)
            a_captum = attributor.attribute(x_captum, target=CLASS)
            result = backprop_batch(relu_model, x, f"classifier:{CLASS}", mode, signal="argmax")
            a_dv, _, _, modified = result.input_grad, result.activation, result.layer_grads, result.rectifiers_modified
            ok &= check(f"{mode}: deepvis vs captum ({modified} rectifiers)", a_dv, a_captum)
            section = "4 vs Captum"
            cname = f"captum {cls.__name__}"
            variants += [
                Variant(section, cname, lambda a=attributor: a.attribute(x_captum, target=CLASS)),
                Variant(section, f"deepvis {mode} [classifier:{CLASS}, argmax]",
                        lambda md=mode: backprop_batch(relu_model, x, f"classifier:{CLASS}", md, signal="argmax"),
                        baseline=cname, target=1.0),
            ]

    # Timed variants, deduplicated (the "vs stop" rows reuse the deepvis timings).
    timed: dict[str, Variant] = {}
    for v in variants:
        key = v.name.removesuffix(" vs stop")
        if key not in timed:
            timed[key] = Variant(v.section, key, v.fn)
    setup = time.perf_counter() - start_time
    t0 = time.perf_counter()
    rounds = measure(list(timed.values()), args.repeats, args.warmup, args.budget)
    measured = time.perf_counter() - t0
    for v in variants:
        v.times = timed[v.name.removesuffix(" vs stop")].times
    by_name = {v.name: v for v in variants}

    # Table.
    width = max(len(v.name) for v in variants) + 2
    bwidth = max(len(v.baseline or "") for v in variants) + 2
    header = (f"{'variant':<{width}}{'median ms':>10}{'min ms':>9}  {'baseline':<{bwidth}}{'ratio':>7}{'paired':>9}"
              f"{'target':>8}  met")
    print()
    print(header)
    print("-" * len(header))
    summary = []
    section = None
    for v in variants:
        if v.section != section:
            section = v.section
            print(f"[{section}]")
        line = f"{v.name:<{width}}{v.median * 1e3:>10.2f}{min(v.times) * 1e3:>9.2f}"
        if v.baseline:
            b = by_name[v.baseline]
            ratio = v.median / b.median
            paired = statistics.median(t / s for t, s in zip(v.times, b.times))
            line += f"  {v.baseline:<{bwidth}}{ratio:>6.3f}x{paired:>8.3f}x"
            if v.target is not None:
                met = ratio <= v.target
                line += f"{'<=' + format(v.target, '.2f'):>8}  {'yes' if met else 'NO'}"
                summary.append((v.name, v.baseline, ratio, paired, v.target, met))
        print(line)

    print(f"\nsummary (ratio of medians; paired = median of per-round ratios), {rounds} rounds"
          f"{f' (time budget hit, {args.repeats} asked)' if rounds < args.repeats else ''}, batch {args.batch}, "
          f"threads {threads}:")
    for name, base, ratio, paired, target, met in summary:
        print(f"  {'MET   ' if met else 'MISSED'} {name} / {base}: {ratio:.3f}x (paired {paired:.3f}x), "
              f"target <= {target:.2f}x")
    print(f"numerical checks: {'all OK' if ok else 'SOME MISMATCHED'}")
    print(f"time: setup {setup:.1f} s, measuring {measured:.1f} s, total {time.perf_counter() - start_time:.1f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
