"""Vision transformer benchmark: the live toolbox's frame and the cost of recording attention, side by side.

    python benchmarks/bench_vit.py [--rounds N] [--warmup N] [--threads T] [--unit LAYER:CHANNEL] [--mode MODE]

The model is the test suite's ViT-Ti/16 stand-in (``tests/zoo.py:vit_tiny_shape``: DeiT-Tiny's shape, 224x224
input, 16-pixel patches, 192 features, 12 blocks, CLS token; random weights, timm's module names; ``--model
vit_base_shape`` for the 2-block test model). Variants of a section run once per round,
round-robin, the starting variant alternating, so drifts of a noisy machine hit both alike. Reported: medians, the
ratio of the medians (targets are judged on it) and the median of the per-round ratios.

Sections
  a. a new webcam frame until every pane is updated: ``Toolbox.input_from_bytes`` of a fresh 224x224 JPEG, then
     ``Toolbox.view`` with the cursor in the unit grid and the backward pane on -- against the bare model given the
     same JPEG bytes: decode, preprocess, forward with a requires-grad input, the unit's layer (raw tokens) taken by
     a forward hook, ``torch.autograd.grad`` from the unit's activation map on the patch grid (target <= 1.25x);
  b. a forward pass recording every attention call (``deepvis.record_attention``; lazy: references to Q, K and the
     mask, nothing computed) against the plain forward pass (target <= 1.10x), without and with gradients (with
     them autograd keeps Q and K anyway; without, keeping them costs memory traffic);
  c. the same forward pass and then every layer's probabilities read (``maps[layer]`` for all 12 layers: what a
     rollout or a full dump pays), and the same computed during the pass (``record_attention(eager=True)``),
     against the plain forward pass (no target: the price of materializing all maps);
  d. the toolbox's attention view on new frames: ``Toolbox.input_from_bytes`` of a fresh JPEG, then ``Toolbox.view``
     as in a with the input pane's overlay on -- ``attention`` of the token under the cursor at the selected
     block, one head (only that row is computed), or ``rollout`` (every layer's map) -- against the bare frame
     of a, and against the toolbox's frame without an overlay measured beside them (d': what the overlay adds;
     no target; section a's target is the frame without an overlay).
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import zoo  # noqa: E402
from bench_serve import Frames, Row, Variant, measure  # noqa: E402

import deepvis  # noqa: E402
from deepvis.apps.server.session import Toolbox, ViewRequest  # noqa: E402
from deepvis.core.units import parse_unit  # noqa: E402


def bare_frame(model: deepvis.Model, jpeg: bytes, unit) -> torch.Tensor:
    """Decode, preprocess, forward, backward from the unit's map: what any ViT viewer must do for one frame."""
    image = Image.open(io.BytesIO(jpeg)).convert("RGB")
    x = model.preprocessing.to_tensor(image).unsqueeze(0).requires_grad_(True)
    info = deepvis.layer_info(model, unit.layer)
    found = {}
    module = dict(model.net.named_modules())[unit.layer]
    handle = module.register_forward_hook(lambda _m, _i, out: found.__setitem__("out", out))
    try:
        with torch.enable_grad():
            model.net(x)
            tokens = found["out"][:, info.extra_tokens:, unit.channel]  # the channel on the patch grid
            (grad,) = torch.autograd.grad(tokens, x, grad_outputs=tokens.detach())
    finally:
        handle.remove()
    return grad


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--unit", default="blocks.6.mlp.fc1:5")
    parser.add_argument("--model", default="vit_tiny_shape", help="a ViT factory of tests/zoo.py")
    parser.add_argument("--mode", default="gradient", choices=deepvis.MODES)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    factory = getattr(zoo, args.model)
    model = deepvis.load_model(factory())
    unit = parse_unit(args.unit)
    toolbox = Toolbox(model)
    frames = Frames(model.preprocessing.input_size)
    jpegs = [frames.next() for _ in range(args.rounds + args.warmup)]

    def live(r: int):
        item = toolbox.input_from_bytes(jpegs[r], "frame", tab="bench")
        return toolbox.view(ViewRequest(item.id, unit.layer, unit.channel, cursor="grid", back_mode=args.mode))

    served = Variant("toolbox: frame -> every pane", live)
    bare = Variant("bare: decode + forward + backward", lambda r: bare_frame(model, jpegs[r], unit))
    measure([served, bare], args.rounds, args.warmup)

    x = model.input(Image.open(io.BytesIO(jpegs[0])))

    def plain(_r: int):
        with torch.no_grad():
            return model.net(x)

    def recording(_r: int):
        with torch.no_grad(), deepvis.record_attention(model) as recorder:
            model.net(x)
        return recorder.maps

    def materialized(_r: int):
        maps = recording(_r)
        return [maps[layer] for layer in maps]

    def eager(_r: int):
        with torch.no_grad(), deepvis.record_attention(model, eager=True) as recorder:
            model.net(x)
        return recorder.maps

    assert torch.equal(plain(0), model.net(x).detach()) and len(recording(0)) == len(model.net.blocks)
    def recording_grad(_r: int):  # a traced frame (the toolbox's backward pane): autograd keeps Q and K anyway
        with deepvis.record_attention(model) as recorder:
            model.net(x.requires_grad_(True))
        return recorder.maps

    def plain_grad(_r: int):
        return model.net(x.requires_grad_(True))

    record = Variant("forward recording attention", recording)
    forward = Variant("plain forward", plain)
    record_grad = Variant("forward recording, grad on", recording_grad)
    forward_grad = Variant("plain forward, grad on", plain_grad)
    measure([record, forward, record_grad, forward_grad], args.rounds * 3, args.warmup)
    every = Variant("forward + read all maps", materialized)
    during = Variant("forward recording eagerly", eager)
    forward_c = Variant("plain forward", plain)
    measure([every, during, forward_c], args.rounds * 2, args.warmup)

    # d: a toolbox per overlay (each keeps its own caches and recording state), frames of their own
    gh = model.preprocessing.input_size[0] // 16
    views = {}
    for overlay in ("attention", "rollout", None):
        box, pictures = Toolbox(model), Frames(model.preprocessing.input_size, seed=1 + len(views))
        clips = [pictures.next() for _ in range(args.rounds + args.warmup)]

        def view(r: int, box=box, clips=clips, overlay=overlay):
            item = box.input_from_bytes(clips[r], "frame", tab="bench")
            shown = box.view(ViewRequest(item.id, unit.layer, unit.channel, cursor="grid", back_mode=args.mode,
                                         overlay=overlay, overlay_head=1, overlay_token=[gh // 2, gh // 2]))
            assert overlay is None or "png" in shown["overlay"], shown["overlay"]
            return shown

        views[overlay] = Variant(f"toolbox: frame + {overlay} overlay" if overlay else "toolbox: frame, no overlay", view)
    bare_d = Variant("bare: decode + forward + backward", lambda r: bare_frame(model, jpegs[r], unit))
    measure([views["attention"], views["rollout"], views[None], bare_d], args.rounds, args.warmup)

    rows = [Row("a", served, bare, 1.25), Row("b", record, forward, 1.10), Row("b", record_grad, forward_grad),
            Row("c", every, forward_c),
            Row("c", during, forward_c), Row("d", views["attention"], bare_d), Row("d", views["rollout"], bare_d),
            Row("d", views[None], bare_d), Row("d'", views["attention"], views[None]),
            Row("d'", views["rollout"], views[None])]
    print(f"ViT stand-in {args.model} ({factory.__doc__.split(':')[0]}); unit {unit}, mode {args.mode}, "
          f"{torch.get_num_threads()} threads, {args.rounds} rounds")
    print(f"{'':2} {'variant':36} {'median ms':>10} {'baseline ms':>12} {'ratio':>7} {'paired':>7} {'target':>7}")
    for row in rows:
        met = "" if row.met is None else (" ok" if row.met else " MISSED")
        target = "" if row.target is None else f"{row.target:6.2f}x"
        print(f"{row.section:2} {row.variant.name:36} {row.variant.median * 1000:10.1f} "
              f"{row.baseline.median * 1000:12.1f} {row.ratio:6.2f}x {row.paired:6.2f}x {target:>7}{met}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
