"""Live toolbox (``deepvis serve``) benchmark: the server's work per webcam frame and per cursor move, against the
bare model doing the same forward / backward passes, side by side; and the server's memory over many frames.

    python benchmarks/bench_serve.py [--rounds N] [--frames N] [--unit LAYER:CHANNEL] [--mode MODE] [--threads T]
                                     [--no-http]

Timed variants of a section run once per round, round-robin, the starting variant alternating from round to round,
so slow drifts of a noisy machine hit both alike. Reported: the median of each variant, the ratio of the medians
(targets are judged on it) and the median of the per-round (paired) ratios. Default model, CPU, one process.

Sections
  a. a new webcam frame until every pane is updated: ``Toolbox.input_from_bytes`` of a fresh 224x224 JPEG (as the
     page sends them) for one tab, then ``Toolbox.view`` with the cursor in the unit grid and the backward pane on
     (grid, unit, values, predictions, backward image) -- against the bare model given the same JPEG bytes: decode,
     preprocess, a forward pass over the whole network with a requires-grad input, the unit's layer output taken by
     a forward hook, ``torch.autograd.grad`` from the unit's activation map (target <= 1.25x). With HTTP (default;
     ``--no-http`` skips it) the same as users run it: ``python -m deepvis serve`` in a process of its own, this
     process the client (POST the frame, POST the view, parse the JSON), in gradient and in guided mode, against
     the same bare baseline in this process (target <= 1.25x).
  b. a cursor move on a still image until the backward pane is updated: ``Toolbox.view`` with a new channel of the
     same layer, same input (the unit grid, which has no rings, comes from the toolbox's cache; the page draws the
     ring) -- against the least a viewer must do: one ``torch.autograd.grad`` from a forward graph kept for the
     image (target <= 1.2x).
  c. memory: ``--frames`` different frames (random crops, flips, brightness of the bundled samples) through one
     tab, each one followed by its view as in (a); the resident set size (VmRSS of /proc/self/status) after 100,
     500 and all frames (target: flat -- the RSS at the end at most 32 MiB above the RSS after 100 frames: frames
     replace each other in the cache, so nothing should grow with their number).
"""

from __future__ import annotations

import argparse
import gc
import io
import math
import os
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image, ImageEnhance

import deepvis
from deepvis.apps.server.session import Toolbox, ViewRequest
from deepvis.core.units import parse_unit
from common import plain_backward, rss_mib

SAMPLES = sorted((Path(deepvis.__file__).parent / "pixels" / "samples").glob("*.jpg"))
FLAT_SLACK_MIB = 32


@dataclass
class Variant:
    name: str
    fn: Callable[[int], object]  # called with the round number
    times: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.times)


@dataclass
class Row:
    section: str
    variant: Variant
    baseline: Variant | None = None
    target: float | None = None

    @property
    def ratio(self) -> float | None:
        return self.variant.median / self.baseline.median if self.baseline else None

    @property
    def paired(self) -> float | None:
        if not self.baseline:
            return None
        return statistics.median(a / b for a, b in zip(self.variant.times, self.baseline.times))

    @property
    def met(self) -> bool | None:
        return None if self.target is None else self.ratio <= self.target


def measure(variants: list[Variant], rounds: int, warmup: int) -> None:
    """Round-robin rounds; round r starts with variant r mod n. The first ``warmup`` rounds are not kept."""
    n = len(variants)
    for r in range(warmup + rounds):
        gc.collect()
        for k in range(n):
            variant = variants[(r + k) % n]
            start = time.perf_counter()
            variant.fn(r)
            elapsed = time.perf_counter() - start
            if r >= warmup:
                variant.times.append(elapsed)


class Frames:
    """Different 224x224 JPEG frames, as the page sends them (quality 0.85): random crops, flips and brightness of
    the bundled sample images, reproducibly."""

    def __init__(self, size: tuple[int, int], seed: int = 0):
        self.pictures = [Image.open(path).convert("RGB") for path in SAMPLES]
        self.rng = np.random.default_rng(seed)
        self.height, self.width = size

    def next(self) -> bytes:
        rng = self.rng
        picture = self.pictures[rng.integers(len(self.pictures))]
        w, h = picture.size
        scale = rng.uniform(0.5, 1.0)
        cw, ch = int(w * scale), int(h * scale)
        side = min(cw, ch)
        left, top = rng.integers(0, w - side + 1), rng.integers(0, h - side + 1)
        frame = picture.crop((left, top, left + side, top + side)).resize((self.width, self.height),
                                                                          Image.Resampling.BILINEAR)
        if rng.random() < 0.5:
            frame = frame.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        frame = ImageEnhance.Brightness(frame).enhance(rng.uniform(0.8, 1.2))
        buffer = io.BytesIO()
        frame.save(buffer, format="JPEG", quality=85)
        return buffer.getvalue()


class ServerProcess:
    """``python -m deepvis serve`` in a process of its own on a free loopback port, as users run it: its model work
    on its compute thread, the client (this process) apart."""

    def __init__(self, threads: int | None):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
        self.process = subprocess.Popen([sys.executable, "-m", "deepvis", "serve", "--port", str(self.port)],
                                        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def __enter__(self) -> str:
        import httpx

        base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"deepvis serve exited: {self.process.stderr.read().decode()[-500:]}")
            try:
                httpx.get(base + "/api/info", timeout=2).raise_for_status()
                return base
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("deepvis serve did not start in 300 s")

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        self.process.wait(30)


class KeptGraph:
    """A forward pass whose graph is kept (the unit's layer output by a forward hook): each new channel then costs
    one ``torch.autograd.grad`` from its activation map, nothing else."""

    def __init__(self, net: torch.nn.Module, module: torch.nn.Module, x: torch.Tensor):
        found = {}
        handle = module.register_forward_hook(lambda _m, _i, out: found.__setitem__("act", out))
        self.x = x.detach().clone().requires_grad_(True)
        try:
            with torch.enable_grad():
                net(self.x)
        finally:
            handle.remove()
        self.act = found["act"]

    def backward(self, channel: int) -> torch.Tensor:
        start = torch.zeros_like(self.act)
        start[:, channel] = self.act[:, channel].detach()
        (grad,) = torch.autograd.grad(self.act, self.x, start, retain_graph=True)
        return grad


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30, help="measured rounds of sections a and b (default 30)")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured rounds first (default 3)")
    parser.add_argument("--frames", type=int, default=1000, help="frames of the memory section c (default 1000; "
                        "0 skips it)")
    parser.add_argument("--unit", default="blocks.10.depthwise.act:5", help="the selected unit (default blocks.10.depthwise.act:5); section b "
                        "moves the cursor over the channels of its layer")
    parser.add_argument("--mode", default="gradient", choices=deepvis.MODES, help="backward mode (default gradient)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--no-http", action="store_true", help="skip the HTTP row of section a")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    model = deepvis.load_model()
    unit = parse_unit(args.unit)
    toolbox = Toolbox(model)
    module = dict(model.net.named_modules())[unit.layer]
    channels = toolbox.get_input(toolbox.input_from_file(0).id).activations[unit.layer].shape[0]
    frames = Frames(model.preprocessing.input_size)
    print(f"deepvis {deepvis.__version__}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"cpu count {os.cpu_count()}, python {sys.version.split()[0]}")
    print(f"model {model.spec}, input {model.preprocessing.input_size}, unit {unit}, mode {args.mode}, "
          f"{args.rounds} rounds (+{args.warmup} warm-up)")

    def request(input_id: str, channel: int) -> ViewRequest:
        return ViewRequest(input_id, unit.layer, channel, cursor="grid", back_enabled=True, back_mode=args.mode)

    rows: list[Row] = []

    # ---------------------------------------------------------------- a. a new webcam frame
    total = args.warmup + args.rounds
    frame_data = [frames.next() for _ in range(total + 1)]
    toolbox.view(request(toolbox.input_from_bytes(frame_data[-1], "frame", tab="bench").id, unit.channel))

    parts: dict[str, list[float]] = {"forward": [], "backward": [], "render": []}

    def server_frame(r: int):
        item = toolbox.input_from_bytes(frame_data[r], "frame", tab="bench")
        response = toolbox.view(request(item.id, unit.channel))
        assert response["back"] is not None
        parts["forward"].append(item.forward_ms)
        parts["backward"].append(response["timing"]["backward_ms"])
        parts["render"].append(response["timing"]["render_ms"])
        return response

    def bare_frame(r: int):  # the same JPEG bytes: decode, preprocess, forward, backward
        x = model.input(Image.open(io.BytesIO(frame_data[r])).convert("RGB"))
        return plain_backward(model.net, module, x, unit.channel, stop=False)

    server_a = Variant("Toolbox: frame -> all panes", server_frame)
    bare_a = Variant("bare model: forward + backward", bare_frame)
    variants = [server_a, bare_a]
    http_rows = []
    if not args.no_http:
        import httpx

        # one server process per mode: a page shows one backward mode, and new frames are traced in the mode of
        # the last view (two modes alternating on one server would trace every frame twice)
        servers, clients = [], []

        def http_frame(mode: str):
            servers.append(ServerProcess(args.threads))
            clients.append(httpx.Client(base_url=servers[-1].__enter__(), timeout=120))
            client = clients[-1]

            def run(r: int):  # as the page does it: POST the frame, POST the view, parse the JSON
                item = client.post("/api/inputs/frame", params={"tab": f"http-{mode}"}, content=frame_data[r],
                                   headers={"Content-Type": "application/octet-stream"})
                item.raise_for_status()
                answer = client.post("/api/view", json={"input": item.json()["input"], "layer": unit.layer,
                                                        "channel": unit.channel, "cursor": "grid",
                                                        "back_mode": mode})
                answer.raise_for_status()
                assert answer.json()["back"] is not None
            run(total)
            return run

        for mode in ("gradient", "guided"):
            http_rows.append(Variant(f"HTTP, server process: frame ({mode})", http_frame(mode)))
        variants += http_rows
    measure(variants, args.rounds, args.warmup)
    if http_rows:
        for client, server in zip(clients, servers):
            client.close()
            server.__exit__(None, None, None)
    rows += [Row("a", server_a, bare_a, 1.25)] + [Row("a", http, bare_a, 1.25) for http in http_rows]
    rows.append(Row("a", bare_a))
    print("(a) the Toolbox's own timings, medians: " + ", ".join(
        f"{name} {statistics.median(values[-args.rounds:]):.1f} ms" for name, values in parts.items()))

    # ---------------------------------------------------------------- b. a cursor move on a still image
    still = toolbox.input_from_file(SAMPLES.index(next(p for p in SAMPLES if p.name == "chelsea.jpg")))
    step = next(k for k in range(7, 7 + channels) if math.gcd(k, channels) == 1)
    order = [(unit.channel + 1 + k * step) % channels for k in range(total + 1)]  # distinct while total < channels
    repeats = total + 1 > channels
    toolbox.view(request(still.id, order[-1]))  # the image is on screen, the cursor on some unit

    def server_move(r: int):
        if repeats:  # more rounds than channels: forget the backward passes, so each move computes one
            toolbox._backward.clear()
        response = toolbox.view(request(still.id, order[r]))
        assert response["back"] is not None and response["channel"] == order[r]
        return response

    kept = KeptGraph(model.net, module, still.x)

    def one_backward(r: int):  # the least any viewer must do for a new unit: one backward from a kept graph
        return kept.backward(order[r])

    server_b = Variant("Toolbox: cursor move -> back pane", server_move)
    bare_b = Variant("bare: one backward from a kept graph", one_backward)
    measure([server_b, bare_b], args.rounds, args.warmup)
    rows += [Row("b", server_b, bare_b, 1.2), Row("b", bare_b)]

    # ---------------------------------------------------------------- c. memory over many frames
    memory: list[tuple[int, float]] = []
    if args.frames:
        marks = sorted({m for m in (100, 500, args.frames) if m <= args.frames})
        gc.collect()
        memory.append((0, rss_mib()))
        start = time.perf_counter()
        for n in range(1, args.frames + 1):
            item = toolbox.input_from_bytes(frames.next(), "frame", tab="memory")
            toolbox.view(request(item.id, (unit.channel + n) % channels))
            if n in marks:
                gc.collect()
                memory.append((n, rss_mib()))
        memory_seconds = time.perf_counter() - start

    # ---------------------------------------------------------------- report
    print()
    print(f"{'section':<8}{'variant':<40}{'median ms':>10}{'vs baseline':>13}{'paired':>9}{'target':>9}  met")
    for row in rows:
        ratio = f"{row.ratio:.3f}x" if row.ratio else ""
        paired = f"{row.paired:.3f}x" if row.paired else ""
        target = f"<={row.target:.2f}x" if row.target else ""
        met = "" if row.met is None else ("yes" if row.met else "NO")
        print(f"{row.section:<8}{row.variant.name:<40}{fmt_ms(row.variant.median):>10}{ratio:>13}{paired:>9}"
              f"{target:>9}  {met}")
    summary = [(f"(a) frame -> all panes <= 1.25x bare forward+backward", rows[0].met, f"{rows[0].ratio:.3f}x")]
    b_row = next(row for row in rows if row.section == "b" and row.target)
    summary += [(f"(a) {row.variant.name} <= 1.25x bare forward+backward", row.met, f"{row.ratio:.3f}x")
                for row in rows if row.section == "a" and row.target and row is not rows[0]]
    summary.append((f"(b) cursor move -> back pane <= 1.2x one backward from a kept graph", b_row.met,
                    f"{b_row.ratio:.3f}x"))
    if memory:
        print(f"\nc       RSS over {args.frames} frames through one tab ({memory_seconds:.0f} s, "
              f"{memory_seconds / args.frames * 1000:.1f} ms per frame + view):")
        for n, mib in memory:
            print(f"        after {n:>5} frames: {mib:8.1f} MiB" + ("  (after warm-up)" if n == 0 else ""))
        reference = next((mib for n, mib in memory if n == 100), memory[0][1])
        growth = memory[-1][1] - reference
        flat = growth <= FLAT_SLACK_MIB
        summary.append((f"(c) RSS flat over {args.frames} frames (growth after 100 frames <= {FLAT_SLACK_MIB} MiB)",
                        flat, f"{growth:+.1f} MiB"))
    print("\nsummary")
    for text, met, value in summary:
        print(f"  {'met   ' if met else 'MISSED'}  {text}: {value}")
    return 0 if all(met for _, met, _ in summary) else 1


if __name__ == "__main__":
    sys.exit(main())
