"""Activation maximization: regularizers and learning rates against hand-computed values, the paper's loop against a
NumPy replay, batches against single runs, the modern recipe, the store (skip, --force, SIGKILL and rerun), the CLI."""

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import deepvis
from deepvis.core.errors import DeepvisError, UnitError
from deepvis.engine.featvis import (PRESETS, ModernParams, OptimizeWarning, PaperParams, make_params, make_target,
                                    optimize)
from deepvis.jobs.optimize_store import optimize_to_store
from deepvis.engine.featvis import regularizers as reg
from deepvis.engine.featvis.modern import FourierImage, random_transform
from deepvis.engine.featvis.paper import start_image
from deepvis.engine.featvis.pixels import pixel_space
from deepvis.store import Store

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}

ZOO = Path(__file__).parents[1] / "zoo.py"


@pytest.fixture(scope="module")
def tiny_spec():
    """The tiny CNN of tests/zoo.py as a model spec (the CLI's and subprocesses' --model)."""
    return f"{ZOO}:tiny_cnn"


@pytest.fixture(scope="module")
def tiny(tiny_spec):
    return deepvis.load_model(tiny_spec)


# ---------------------------------------------------------------- regularizers, by hand
def test_decay_and_small_values_by_hand():
    x = torch.tensor([-3.0, 1.0, 0.5, 2.0]).view(1, 1, 1, 4)
    assert reg.decay(x, 0.3).flatten().tolist() == pytest.approx([-2.1, 0.7, 0.35, 1.4])
    # |x| = 3, 1, .5, 2: the 50th percentile interpolates between 1 and 2 -> 1.5; below it: 1 and 0.5
    assert reg.zero_small_values(x, 50).flatten().tolist() == [-3.0, 0.0, 0.0, 2.0]
    # the 25th percentile of (.5, 1, 2, 3) is .5 + .75 * .5 = .875: only 0.5 goes
    assert reg.zero_small_values(x, 25).flatten().tolist() == [-3.0, 1.0, 0.0, 2.0]


def test_small_norm_zeroes_whole_pixels_by_hand():
    # two channels, four pixels; pixel norms 5, 1, sqrt(2), 10 -> the 50th percentile is (sqrt 2 + 5) / 2 = 3.21
    x = torch.tensor([[[[3.0, 1.0, 1.0, 6.0]], [[4.0, 0.0, -1.0, 8.0]]]])
    out = reg.zero_small_norms(x, 50)
    assert out[0, :, 0].T.tolist() == [[3.0, 4.0], [0.0, 0.0], [0.0, 0.0], [6.0, 8.0]]


def test_pixel_benefit_and_its_clippings_by_hand():
    x = torch.tensor([[[[1.0, -2.0, 3.0]], [[1.0, 1.0, -1.0]]]])
    grad = torch.tensor([[[[2.0, 1.0, -1.0]], [[-1.0, 3.0, 0.5]]]])
    # benefit = sum_c grad * -x: pixel 0: -2 + 1 = -1; pixel 1: 2 - 3 = -1... computed per channel below
    expected = [-(2 * 1 + -1 * 1), -(1 * -2 + 3 * 1), -(-1 * 3 + 0.5 * -1)]
    assert reg.pixel_benefit(x, grad).flatten().tolist() == pytest.approx(expected)  # [-1, -1, 3.5]
    # percentile 50 of (-1, -1, 3.5) is -1: nothing is strictly below it
    assert torch.equal(reg.zero_small_benefit(x, grad, 50), x)
    # percentile 80 of (-1, -1, 3.5) = -1 + .6 * 4.5 = 1.7: pixels 0 and 1 go
    assert reg.zero_small_benefit(x, grad, 80)[0, :, 0].T.tolist() == [[0, 0], [0, 0], [3.0, -1.0]]
    # |benefit| = 1, 1, 3.5: the 90th percentile is 1 + .8 * 2.5 = 3: pixels 0 and 1 go
    assert reg.zero_small_abs_benefit(x, grad, 90)[0, :, 0].T.tolist() == [[0, 0], [0, 0], [3.0, -1.0]]


def test_percentiles_are_per_image():
    x = torch.stack([torch.arange(1.0, 5.0), 10 * torch.arange(1.0, 5.0)]).view(2, 1, 1, 4)
    out = reg.zero_small_values(x, 50)
    assert out.flatten().tolist() == [0, 0, 3, 4, 0, 0, 30, 40]


def test_blur_of_a_point_by_hand():
    sigma = 0.5  # radius int(4 * 0.5 + 0.5) = 2
    k = np.exp(-0.5 * (np.arange(-2, 3) / sigma) ** 2)
    k /= k.sum()
    x = torch.zeros(1, 1, 7, 7)
    x[0, 0, 3, 3] = 1.0
    assert reg.gaussian_blur(x, sigma)[0, 0, 1:6, 1:6].numpy() == pytest.approx(np.outer(k, k), abs=1e-7)
    # at a corner, 'reflect' (d c b a | a b c d) folds the kernel back: each axis gets k0 + k1
    corner = torch.zeros(1, 1, 3, 3)
    corner[0, 0, 0, 0] = 1.0
    assert float(reg.gaussian_blur(corner, sigma)[0, 0, 0, 0]) == pytest.approx((k[2] + k[3]) ** 2, rel=1e-6)


@pytest.mark.parametrize("sigma", [0.3, 0.5, 1.0, 2.5, 6.0])
def test_blur_equals_scipy_gaussian_filter(sigma):
    ndimage = pytest.importorskip("scipy.ndimage")
    x = torch.randn(2, 3, 9, 13, generator=torch.Generator().manual_seed(1))
    ours = reg.gaussian_blur(x, sigma).numpy()
    for n in range(2):
        for c in range(3):
            theirs = ndimage.gaussian_filter(x[n, c].double().numpy(), sigma)
            assert ours[n, c] == pytest.approx(theirs, abs=1e-5)


def test_learning_rate_policies_by_hand():
    g2 = torch.tensor([4.0, 0.01, 0.5])
    obj = torch.tensor([0.2, 0.9, 0.99])
    assert reg.learning_rate("constant", {"lr": 100}, g2, obj).tolist() == [100, 100, 100]
    # progress: min(max_lr, desired / |g|^2) = min(100, 2/4, 2/.01, 2/.5)
    assert reg.learning_rate("progress", {"max_lr": 100, "desired_prog": 2}, g2, obj).tolist() == \
        pytest.approx([0.5, 100, 4])
    # progress01: desired = min(early, late_mult * (1 - obj)) = min(.5, 2 * (.8, .1, .01)) = (.5, .2, .02)
    lr = reg.learning_rate("progress01", {"max_lr": 10, "early_prog": 0.5, "late_prog_mult": 2}, g2, obj)
    assert lr.tolist() == pytest.approx([0.5 / 4, 10, 0.02 / 0.5])


def test_presets_hold_table_1():
    table = {  # decay, blur radius, blur every, small-norm pct, px-abs-benefit pct, max iter, lr policy, lr params
        "paper1": (0, 0.5, 4, 50, 0, 500, "progress", {"max_lr": 100, "desired_prog": 2}),
        "paper2": (0.3, 0, 0, 20, 0, 750, "constant", {"lr": 100}),
        "paper3": (0.0001, 1.0, 4, 0, 0, 1000, "constant", {"lr": 100}),
        "paper4": (0, 0.5, 4, 0, 90, 1000, "progress", {"max_lr": 1e8, "desired_prog": 2}),
    }
    for name, row in table.items():
        p = PRESETS[name]
        assert (p.decay, p.blur_radius, p.blur_every, p.small_norm_percentile, p.px_abs_benefit_percentile,
                p.max_iter, p.lr_policy, p.lr_params) == row
        assert p.small_val_percentile == p.px_benefit_percentile == 0 and p.start_at == "mean_plus_rand"
    assert make_params("paper") == PRESETS["paper3"]


def test_bad_settings_are_refused():
    with pytest.raises(DeepvisError, match="lr policy 'progress' needs"):
        PaperParams(lr_policy="progress", lr_params={"lr": 1})
    with pytest.raises(DeepvisError, match="unknown preset"):
        make_params("paper", preset_name="paper9")
    with pytest.raises(DeepvisError, match="unknown paper setting 'steps'"):
        make_params("paper", steps=3)
    with pytest.raises(DeepvisError, match="between 0 and 100"):
        PaperParams(small_norm_percentile=120)
    with pytest.raises(DeepvisError, match="unknown method"):
        make_params("dream")


# ---------------------------------------------------------------- the paper's loop
def _linear_model():
    """One 1x1 convolution: the unit's value is w . pixels + b, so its gradient is known in closed form."""
    conv = nn.Conv2d(3, 2, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[0.5, -1.0, 2.0], [1.0, 1.0, 1.0]]).view(2, 3, 1, 1))
        conv.bias.copy_(torch.tensor([0.1, 0.0]))
    pre = deepvis.Preprocessing(input_size=(5, 6), mean=(0.5, 0.4, 0.3), std=(0.5, 0.25, 0.2))
    return deepvis.load_model(deepvis.Model(net=nn.Sequential(conv), preprocessing=pre))


def test_paper_loop_equals_a_numpy_replay_of_the_original():
    model = _linear_model()
    params = PaperParams(decay=0.1, small_val_percentile=30, small_norm_percentile=20, px_benefit_percentile=10,
                         px_abs_benefit_percentile=10, lr_policy="constant", lr_params={"lr": 500.0}, max_iter=6,
                         start_at="randu", seed=3)
    (result,) = optimize(model, "0:0@2,3", params=params)
    # The replay: x in 0-255 minus mean; input = (x + mean255) / 255 * 1 - mean) / std = x / (255 std)
    mean255 = np.array([0.5, 0.4, 0.3]).reshape(3, 1, 1) * 255
    scale = 1 / (255 * np.array([0.5, 0.25, 0.2])).reshape(3, 1, 1)
    w = np.array([0.5, -1.0, 2.0]).reshape(3, 1, 1)
    x = start_image(params, pixel_space(model)).double().numpy()  # U(0, 255) - mean, from the seed
    objs, iterates = [], []
    for ii in range(params.max_iter):
        x = np.minimum(255, np.maximum(0, x + mean255)) - mean255
        iterates.append(x.copy())
        x_in = x * scale
        objs.append((w[:, 0, 0] * x_in[:, 2, 3]).sum() + 0.1)
        grad = np.zeros_like(x)
        grad[:, 2, 3] = w[:, 0, 0] * scale[:, 0, 0]  # d objective / d pixel level (benefit percentiles use it)
        grad_input = np.zeros_like(x)
        grad_input[:, 2, 3] = w[:, 0, 0]  # d objective / d model input: what a constant lr multiplies
        if ii == params.max_iter - 1:
            break
        x = (x + 500.0 * grad_input) * 0.9
        x[np.abs(x) < np.percentile(np.abs(x), 30)] = 0
        norms = np.linalg.norm(x, axis=0)
        x[:, norms < np.percentile(norms, 20)] = 0
        benefit = (grad * -x).sum(0)
        x[:, benefit < np.percentile(benefit, 10)] = 0
        benefit = (grad * -x).sum(0)
        x[:, np.abs(benefit) < np.percentile(np.abs(benefit), 10)] = 0
    assert result.record["obj"] == pytest.approx(objs, rel=1e-4, abs=1e-4)
    assert result.record["ii"] == list(range(6))
    assert result.record["best_obj"] == pytest.approx(max(objs), rel=1e-4)
    best = iterates[int(np.argmax(objs))]
    expected_input = ((best + mean255) / 255).transpose(1, 2, 0)
    assert result.input_image == pytest.approx(expected_input, abs=1e-4)


def test_majority_and_grad_zero_failure(tiny):
    # force a dead unit: a conv1 channel with no weights and a huge negative bias is a constant below relu1, so
    # relu1:5's gradient is exactly 0 from the first step, even taken below the rectifier (as objectives take it)
    weight = tiny.net.conv1.weight[5].clone()
    with torch.no_grad():
        tiny.net.conv1.bias[5] = -1e4
        tiny.net.conv1.weight[5] = 0.0
    try:
        results = optimize(tiny, ["relu1:5", "fc:3", "fc:7"], max_iter=40)
    finally:
        with torch.no_grad():
            tiny.net.conv1.bias[5] = 0.0
            tiny.net.conv1.weight[5] = weight
    dead, alive, other = results
    assert dead.record["meta_result"] == "grad 0 failure" and dead.record["ii"] == [0]
    assert alive.record["ii"] == list(range(40)) and other.record["ii"] == list(range(40))
    assert alive.best_obj > alive.record["obj"][0]
    for result in (alive, other):
        ismax = result.record["ismax"]
        expected = "majority success" if any(ismax) else "majority failure"
        assert result.record["meta_result"] == expected
        if any(ismax):
            assert result.record["majority_ii"] == ismax.index(True)
        assert [tuple(i) == (result.target.channel,) for i in result.record["idxmax"]] == ismax


@pytest.mark.parametrize("preset", ["paper1", "paper2", "paper3", "paper4"])
def test_a_batch_of_16_equals_16_single_runs(tiny, preset):
    units = [f"conv2:{c}" for c in range(8)] + [f"fc:{c}" for c in range(8)]
    batched = optimize(tiny, units, preset=preset, max_iter=40)
    for unit, together in zip(units, batched):
        (alone,) = optimize(tiny, unit, preset=preset, max_iter=40)
        assert together.record["obj"] == pytest.approx(alone.record["obj"], rel=1e-4, abs=1e-4), unit
        assert together.record["best_ii"] == alone.record["best_ii"]
        assert together.input_image == pytest.approx(alone.input_image, abs=1e-4)


def test_conv_units_default_to_the_centre_and_minimize(tiny):
    target = make_target(tiny, "conv2:4")
    assert target.position == (6, 6)  # conv2 is 12x12
    up, = optimize(tiny, "conv2:4", max_iter=30)
    down, = optimize(tiny, "conv2:4", max_iter=30, push_dir=-1)
    assert up.best_obj > up.record["obj"][0] > down.best_obj
    with pytest.raises(UnitError, match="out of range"):
        optimize(tiny, "conv2:99")
    with pytest.raises(UnitError, match="position 40,1 out of range"):
        optimize(tiny, "conv2:1@40,1")


def test_saved_input_image_gives_the_recorded_activation(model):
    (result,) = optimize(model, "blocks.8:3", max_iter=12)
    x = model.input(deepvis.pixels.render.to_pil(result.input_image))  # through 8-bit pixels, as the PNG holds it
    with deepvis.Probe(model, ["blocks.8"]) as probe:
        probe.run(x)
    assert float(probe["blocks.8"][0, 3, 7, 7]) == pytest.approx(result.best_obj, rel=0.05)
    assert result.best_obj > 5 * abs(result.record["obj"][0])


# ---------------------------------------------------------------- the modern recipe
def test_fourier_image_and_transforms_keep_shapes_and_range():
    params = ModernParams()
    image = FourierImage(3, 20, 30, params, torch.Generator().manual_seed(0))().detach()
    assert image.shape == (3, 3, 20, 30) and 0 < image.min() and image.max() < 1
    moved = random_transform(image, params, torch.Generator().manual_seed(0))
    assert moved.shape == image.shape and not torch.equal(moved, image)
    still = random_transform(image, params.with_(jitter=0, rotate=0.0, scale=(1.0, 1.0)), torch.Generator())
    assert still == pytest.approx(image, abs=1e-5)


def test_modern_raises_its_objectives_and_copies_differ(tiny):
    results = optimize(tiny, ["conv2:1", "fc:2"], method="modern", steps=40, copies=2, diversity=0.5)
    for result in results:
        assert result.record["final_obj"][0] > result.record["obj"][0]
        assert len(result.extra_images) == 1
        assert np.abs(result.image - result.extra_images[0]).mean() > 0.01
    channel, = optimize(tiny, "conv2:1", method="modern", objective="channel", steps=20)
    assert channel.target.position is None and channel.record["final_obj"][0] > channel.record["obj"][0]


def test_direction_objective(tiny):
    vector = [1.0] * 16
    result, = optimize(tiny, "conv2", objective="direction", vector=vector, method="modern", steps=20)
    assert str(result.target) == "conv2:direction" and result.target.position is None  # averaged over positions
    assert result.record["final_obj"][0] > result.record["obj"][0]
    with pytest.raises(UnitError, match="vector of 16"):
        optimize(tiny, "conv2", objective="direction", vector=[1.0, 2.0])


# ---------------------------------------------------------------- the store
def test_store_files_skip_and_force(tmp_path, tiny):
    params = make_params("paper", max_iter=8)
    store = optimize_to_store(tiny, tmp_path / "s", ["conv2", "fc"], params, channels=range(0, 5), batch_size=3,
                              progress=False)
    for layer in ("conv2", "fc"):
        for c in range(5):
            folder = store.unit_dir(layer, c)
            data = json.loads((folder / "optimized.json").read_text())
            assert data["params"]["max_iter"] == 8 and len(data["record"]["obj"]) == 8
            assert data["target"]["target"] == (f"{layer}:{c}@6,6" if layer == "conv2" else f"{layer}:{c}")
            assert (folder / "optimized.png").is_file() and (folder / "optimized_input.png").is_file()
        assert (store.layer_dir(layer) / "sprite_optimized.jpg").is_file()
        assert store.sprite(layer).name == "sprite_optimized.jpg"
        assert store.unit_pictures(layer, 0)["optimized"].name == "optimized.png"
    before = {p: p.stat().st_mtime_ns for p in store.root.rglob("optimized.json")}
    optimize_to_store(tiny, store.root, ["conv2", "fc"], params, channels=range(0, 5), progress=False)
    assert {p: p.stat().st_mtime_ns for p in store.root.rglob("optimized.json")} == before
    optimize_to_store(tiny, store.root, ["fc"], params, channels=[1], force=True, progress=False)
    changed = [p for p in before if p.stat().st_mtime_ns != before[p]]
    assert changed == [store.unit_dir("fc", 1) / "optimized.json"]


def _cli(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "deepvis", *args], capture_output=True, text=True, env=ENV,
                          **kwargs)


def test_sigkill_then_rerun_finishes_without_redoing(tmp_path, tiny_spec):
    out = tmp_path / "store"
    command = [sys.executable, "-m", "deepvis", "optimize", "--model", tiny_spec, "--out", str(out),
               "--layers", "conv2", "--max-iter", "150", "--batch-size", "2", "-q"]
    process = subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.rglob("optimized.json"))) < 2:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    done_before = {p: p.stat().st_mtime_ns for p in out.rglob("optimized.json")}
    assert 2 <= len(done_before) < 16
    assert not list(out.rglob("*.tmp")), "a killed run left a half-written file"
    result = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    done = {p: p.stat().st_mtime_ns for p in out.rglob("optimized.json")}
    assert len(done) == 16
    assert all(done[p] == t for p, t in done_before.items()), "a finished unit was computed again"
    # the rerun's units equal a run that was never interrupted
    fresh = optimize(deepvis.load_model(tiny_spec), ["conv2:0", "conv2:15"], max_iter=150)
    for result, channel in zip(fresh, (0, 15)):
        saved = json.loads((out / "conv2" / f"{channel:04d}" / "optimized.json").read_text())
        assert saved["record"]["obj"] == pytest.approx(result.record["obj"], rel=1e-4, abs=1e-4)


def test_cli_single_units_and_usage_errors(tmp_path, tiny_spec):
    spec = tiny_spec
    ok = _cli("optimize", "--model", spec, "--unit", "fc:1", "conv2:2@3,3", "-o", str(tmp_path / "u.png"),
              "--max-iter", "5", "--blur-radius", "0.7")
    assert ok.returncode == 0, ok.stderr
    saved = json.loads((tmp_path / "u_01.json").read_text())
    assert saved["target"]["target"] == "conv2:2@3,3" and saved["params"]["blur_radius"] == 0.7
    assert (tmp_path / "u_00.png").is_file()
    for args, message in [
        (["--unit", "fc:1"], "--unit needs -o"),
        (["--layers", "fc"], "give --out STORE"),
        (["--out", str(tmp_path / "s")], "--out needs --layers"),
        (["--out", str(tmp_path / "s"), "--layers", "fc", "--steps", "3"], "setting of the other method"),
        (["--out", str(tmp_path / "s"), "--layers", "fc", "--method", "modern", "--preset", "paper1"], "--preset"),
        (["--out", str(tmp_path / "s"), "--layers", "fc", "--lr-params", "[1]"], "JSON object"),
        (["--out", str(tmp_path / "s"), "--layers", "fc", "--units", "5-2"], "FIRST-LAST"),
    ]:
        result = _cli("optimize", "--model", spec, *args)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
    bad = _cli("optimize", "--model", spec, "--out", str(tmp_path / "s"), "--layers", "fc", "--units", "10-12")
    assert bad.returncode == 1 and "channel 10 out of range for layer 'fc'" in bad.stderr
    # a range past the last channel is clamped, with a note (issue 13)
    clamped = _cli("optimize", "--model", spec, "--out", str(tmp_path / "s"), "--layers", "fc", "--units", "8-12",
                   "--max-iter", "2", "-q")
    assert clamped.returncode == 0 and "doing 8-9 of 8-12" in clamped.stderr, clamped.stderr
    bad = _cli("optimize", "--model", spec, "--out", str(tmp_path / "s"), "--layers", "fc",
               "--lr-policy", "progress")
    assert bad.returncode == 1 and "needs lr_params" in bad.stderr


def test_toolbox_shows_what_optimize_wrote(tmp_path, tiny):
    from deepvis.apps.server.session import Toolbox

    optimize_to_store(tiny, tmp_path / "s", ["conv2"], make_params("modern", steps=3), channels=[0, 1],
                      progress=False)
    toolbox = Toolbox(tiny, store=tmp_path / "s")
    shown = toolbox.unit_images("conv2", 1)
    assert shown["images"]["optimized"].endswith("conv2/0001/optimized.png")
    assert shown["sprite"].endswith("conv2/sprite_optimized.jpg")


@pytest.mark.slow
def test_a_batch_of_16_equals_single_runs_on_the_default_model():
    # In float32 EfficientNet's input gradient differs by ~4e-7 between batch sizes (its kernels round differently),
    # and ReLU6 kinks crossed by lr-100 steps amplify that within a few iterations; in float64 a batch is exact.
    model = deepvis.load_model()
    model.net.double()
    units = [f"blocks.8:{c}" for c in range(0, 80, 10)] + [f"classifier:{c}" for c in range(0, 1000, 125)]
    batched = optimize(model, units, max_iter=6)
    for unit, together in zip(units, batched):
        (alone,) = optimize(model, unit, max_iter=6)
        assert together.record["obj"] == pytest.approx(alone.record["obj"], rel=1e-9, abs=1e-9), unit
        assert together.input_image == pytest.approx(alone.input_image, abs=1e-6)


# ---------------------------------------------------------------- edge cases (from review)
CAFFE_NET = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 20 dim: 20 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 8 kernel_size: 5 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "fc" type: "InnerProduct" bottom: "conv1" top: "fc" inner_product_param { num_output: 4 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""


def test_rectified_units_start_below_their_rectifier(model):
    """The bundled model's default layers are rectified (ReLU6 modules): a unit that is 0 at the start image still
    climbs, its gradient taken below its own rectifier (before: 15 of 16 blocks.6.depthwise.act units ended in
    "grad 0 failure" at the first step)."""
    results = optimize(model, [f"blocks.6.depthwise.act:{c}" for c in range(8)], max_iter=15)
    starting_at_zero = [r for r in results if r.record["obj"][0] == 0.0]
    assert len(starting_at_zero) >= 3, "expected units that start inactive (after their ReLU6)"
    for result in starting_at_zero:
        assert result.record["ii"][:2] == [0, 1], "stopped at the first step: no gradient below the rectifier"
        assert result.best_obj > 0.0
        assert min(result.record["obj"]) >= 0.0  # the value read is the rectified one


def test_caffe_in_place_relu_units_start_below_the_relu(tmp_path):
    (tmp_path / "deploy.prototxt").write_text(CAFFE_NET)
    model = deepvis.load_model(str(tmp_path / "deploy.prototxt"), mean=(104.0, 117.0, 123.0))
    results = optimize(model, [f"conv1:{c}" for c in range(8)], max_iter=15)
    starts = [r.record["obj"][0] for r in results]
    assert min(starts) == 0.0, "expected some unit to start inactive (after its in-place ReLU)"
    for result in results:
        assert result.record["meta_result"] != "grad 0 failure"
        assert min(result.record["obj"]) >= 0.0  # the value read is the blob after relu1, as in Caffe
        assert result.best_obj > 0.0


def test_store_refuses_units_made_differently_and_force_replaces_them(tmp_path, tiny):
    out = tmp_path / "s"
    optimize_to_store(tiny, out, ["fc"], make_params("paper", max_iter=3), channels=[0, 1], progress=False)
    with pytest.raises(DeepvisError, match="already holds units made differently"):
        optimize_to_store(tiny, out, ["fc"], make_params("modern", steps=2), channels=[1, 2], progress=False)
    gray = deepvis.load_model(deepvis.Model(net=tiny.net, preprocessing=tiny.preprocessing.with_(
        channel_order="bgr")))
    with pytest.raises(DeepvisError, match="already holds units made differently"):
        optimize_to_store(gray, out, ["fc"], make_params("paper", max_iter=4), channels=[0], progress=False)
    folder = store_folder = Store(out).unit_dir("fc", 1)
    assert (folder / "optimized_input.png").is_file()
    optimize_to_store(tiny, out, ["fc"], make_params("modern", steps=2, copies=2), channels=[1], force=True,
                      progress=False)
    assert sorted(p.name for p in store_folder.iterdir()) == ["optimized.json", "optimized.png", "optimized_01.png"]
    optimize_to_store(tiny, out, ["fc"], make_params("modern", steps=2), channels=[1], force=True, progress=False)
    assert sorted(p.name for p in store_folder.iterdir()) == ["optimized.json", "optimized.png"]
    assert json.loads((folder / "optimized.json").read_text())["method"] == "modern"


def test_minimizing_wins_at_the_layer_minimum_and_other_objectives_just_finish(tiny):
    # (this small net's pixel-space gradients are tiny: a larger step than paper3's, and no blur)
    downs = optimize(tiny, [f"fc:{c}" for c in range(10)], max_iter=20, push_dir=-1, lr_params={"lr": 1e4},
                     blur_every=0)
    start = start_image(make_params("paper"), pixel_space(tiny))
    with torch.no_grad():
        lowest = int(tiny.net(pixel_space(tiny).to_input(pixel_space(tiny).clip(start))[None]).argmin())
    assert all(d.record["idxmax"][0] == [lowest] for d in downs)  # the minimum is the winner when minimizing
    assert downs[lowest].record["majority_ii"] == 0 and downs[lowest].record["meta_result"] == "majority success"
    assert all(d.best_obj < d.record["obj"][0] for d in downs)  # the best is the lowest
    channel, = optimize(tiny, "conv2:2", objective="channel", max_iter=5)
    assert channel.record["meta_result"] == "done"
    with pytest.raises(UnitError, match="drop '@1,1'"):
        optimize(tiny, "conv2:2@1,1", objective="channel")


@pytest.mark.parametrize("settings, message", [
    ({"lr_params": {"lr": "abc"}}, "must be a positive number"),
    ({"blur_radius": float("nan")}, "finite"),
    ({"lr_params": {"lr": -3}}, "must be a positive number"),
])
def test_bad_paper_numbers(settings, message):
    with pytest.raises(DeepvisError, match=message):
        make_params("paper", **settings)


def test_bad_modern_settings_and_presets_stay_put():
    with pytest.raises(DeepvisError, match="copies >= 2"):
        make_params("modern", diversity=0.5)
    with pytest.raises(DeepvisError, match="finite"):
        make_params("modern", lr=float("nan"))
    with pytest.raises(DeepvisError, match="presets belong to the paper"):
        make_params("modern", preset_name="paper1")
    params = make_params("paper")
    params.lr_params["lr"] = 5
    assert PRESETS["paper3"].lr_params["lr"] == 100 and make_params("paper").lr_params["lr"] == 100


def test_cli_copies_and_misplaced_flags(tmp_path, tiny_spec):
    spec = tiny_spec
    ok = _cli("optimize", "--model", spec, "--unit", "fc:1", "-o", str(tmp_path / "c.png"), "--method", "modern",
              "--steps", "2", "--copies", "3")
    assert ok.returncode == 0, ok.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.json", "c.png", "c_copy1.png", "c_copy2.png"]
    for args, message in [(["--unit", "fc:1", "-o", str(tmp_path / "x.png"), "--units", "0-3"], "--units does not"),
                          (["--unit", "fc:1", "-o", str(tmp_path / "x.png"), "--force"], "--force does not"),
                          (["--out", str(tmp_path / "s"), "--layers", "fc", "-o", str(tmp_path / "x.png")], "-o does"),
                          (["--out", str(tmp_path / "s"), "--layers", "fc", "--units", "5-"], "FIRST-LAST")]:
        result = _cli("optimize", "--model", spec, *args)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)


def test_methods_table_and_flags_come_from_the_settings():
    from deepvis.engine.featvis import METHODS, method_of
    from deepvis.engine.featvis.methods import flag_settings

    paper, modern = make_params("paper", max_iter=7), make_params("modern", steps=3)
    assert method_of(paper) is METHODS["paper"] and method_of(modern) is METHODS["modern"]
    assert METHODS["paper"].steps(paper) == paper.steps == 7 and METHODS["modern"].steps(modern) == 3
    assert "steps" not in paper.to_json() and paper.to_json()["max_iter"] == 7  # stores keep their keys
    settings = {s.name: s for s in flag_settings()}
    assert settings["seed"].methods == ("paper", "modern", "maco") and settings["max_iter"].default == "paper3: 1000"
    assert settings["steps"].default == "default 512" and "push_dir" not in settings
    from deepvis.apps import cli

    help_text = cli.build_parser()._subparsers._group_actions[0].choices["optimize"].format_help()
    for flag in ("--max-iter", "--steps", "--no-fourier", "--lr-params", "--px-abs-benefit-percentile"):
        assert flag in help_text


# ------------------------------------------------------------------------------- a model other than the default
class _LeNet(nn.Module):
    """Caffe's LeNet: inputs in [0, 1] (``--scale 0.00392157``), 28 x 28 gray."""

    def __init__(self):
        super().__init__()
        self.conv1, self.pool1 = nn.Conv2d(1, 20, 5), nn.MaxPool2d(2)
        self.conv2, self.pool2 = nn.Conv2d(20, 50, 5), nn.MaxPool2d(2)
        self.flatten, self.ip1, self.relu1, self.ip2 = nn.Flatten(1), nn.Linear(800, 500), nn.ReLU(), nn.Linear(500, 10)

    def forward(self, x):
        return self.ip2(self.relu1(self.ip1(self.flatten(self.pool2(self.conv2(self.pool1(self.conv1(x))))))))


@pytest.fixture(scope="module")
def lenet():
    """LeNet trained briefly on scikit-learn's 8 x 8 digits, upscaled to 20 x 20 and padded to 28 x 28."""
    datasets = pytest.importorskip("sklearn.datasets")
    import torch.nn.functional as F

    digits = datasets.load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
    x = F.pad(F.interpolate(x, size=(20, 20), mode="bilinear", align_corners=False), (4, 4, 4, 4))
    y = torch.tensor(digits.target)
    torch.manual_seed(0)
    net = _LeNet()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    generator = torch.Generator().manual_seed(0)
    for _ in range(150):
        rows = torch.randint(0, len(x), (64,), generator=generator)
        loss = F.cross_entropy(net(x[rows]), y[rows])
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert (net(x).argmax(1) == y).float().mean() > 0.9
    model = deepvis.load_model(net, input_size=(28, 28), mean=(0.0,), std=(1.0,), channel_order="gray")
    with torch.no_grad():
        real = model.net.pool1(model.net.conv1(x[:500]))
        real = model.net.conv2(real)[:, :, 4, 4].max(0).values  # each conv2 unit's best real image, at the centre
    return model, real


@pytest.mark.slow
def test_paper3_works_on_a_0_1_lenet(lenet):
    """The default preset on a [0, 1] LeNet: its steps are as long as on a 0-255 Caffe model (before: 48 of 50
    conv2 units ended far below any real image, median 0.08 against 4.2), its blur is scaled to the 28-px input, and
    a conv unit wins when it is the strongest channel at its position (before: 12 of 50 conv2 units in majority
    success, with a 1-px blur and the whole layer's arg-max; the best real image of 8 of 50 wins at its position)."""
    model, real = lenet
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OptimizeWarning)
        conv2 = optimize(model, [f"conv2:{c}" for c in range(50)], progress=False)
        ip2 = optimize(model, [f"ip2:{c}" for c in range(10)], progress=False)
    best = torch.tensor([r.record["best_obj"] for r in conv2])
    assert best.median() > real.median()  # beyond the best real image
    assert (best > real).float().mean() > 0.8
    assert sum(r.record["meta_result"] == "majority success" for r in conv2) >= 30
    assert all(r.record["idxmax"][-1][1:] == [4, 4] for r in conv2)  # compared at the unit's own position
    assert sum(r.record["meta_result"] == "majority success" for r in ip2) >= 9


def test_a_conv_unit_wins_as_the_strongest_channel_at_its_position():
    from deepvis.engine.featvis.objectives import Target, is_target_max, target_argmax

    acts = torch.zeros(2, 3, 5, 5)
    acts[:, 1, 2, 2] = 4.0  # the unit conv:1 at the centre
    acts[0, 0, 0, 0] = 9.0  # another channel is higher elsewhere: the unit still wins at its place
    acts[1, 2, 2, 2] = 5.0  # another channel is higher at the centre: it loses
    unit = Target("conv", 1, (2, 2))
    found = target_argmax(acts, [unit, unit])
    assert found == [(1, 2, 2), (2, 2, 2)]
    assert [is_target_max(unit, f) for f in found] == [True, False]
    channel = Target("conv", 0, None, kind="channel")  # other objectives: the whole layer's arg-max, no verdict
    assert target_argmax(acts[:1], [channel]) == [(0, 0, 0)] and is_target_max(channel, (0, 0, 0)) is None


def test_paper_blur_is_scaled_to_the_input():
    from deepvis.engine.featvis.paper import blur_sigma

    params = PRESETS["paper3"]
    assert blur_sigma(params, 224, 224) == params.blur_radius  # the bundled model: as the preset says
    assert blur_sigma(params, 28, 28) == pytest.approx(params.blur_radius / 8)
    assert blur_sigma(params, 227, 300) == pytest.approx(params.blur_radius * 227 / 224)


@pytest.mark.slow
def test_modern_jitter_scales_with_the_input_and_works_on_28_pixels(lenet):
    from deepvis.engine.featvis.modern import jitter_pixels

    model, _real = lenet
    assert jitter_pixels(ModernParams(), 28, 28) == 1.0 and jitter_pixels(ModernParams(), 224, 224) == 8.0
    results = optimize(model, [f"ip2:{c}" for c in range(10)], method="modern", steps=128, progress=False)
    assert all(r.record["final_obj"][0] > 0 for r in results)


def test_majority_failure_is_reported_with_the_fix(tiny, tmp_path, capsys):
    with pytest.warns(OptimizeWarning, match=r"ended in 'majority failure'.*--lr-params"):
        optimize(tiny, [f"fc:{c}" for c in range(10)], max_iter=2, lr_params={"lr": 1e-9}, progress=False)
    with pytest.warns(OptimizeWarning, match=r"ended in 'majority failure'.*--lr-params"):  # as optimize() does
        optimize_to_store(tiny, tmp_path / "s", ["fc"], make_params("paper", max_iter=2, lr_params={"lr": 1e-9}),
                          progress=False)


def test_python_optimize_shows_progress_like_the_command_line(tiny, capsys):
    """``deepvis.optimize`` reports its progress by default, as the CLI does (plain lines when stderr is no terminal)."""
    optimize(tiny, ["fc:1", "fc:2"], max_iter=3)
    assert "optimize: 6/6 unit-steps" in capsys.readouterr().err
    optimize(tiny, ["fc:1"], max_iter=3, progress=False)
    assert "optimize:" not in capsys.readouterr().err
