"""MACO, feature accentuation and the quality metrics of `deepvis evaluate`: small and fast (a tiny network, few
steps), asserting the direction of the effects; the full measurements are in benchmarks/bench_featvis.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import deepvis
from deepvis.jobs.findmax import find_max
from deepvis.engine.featvis import make_params, optimize
from deepvis.jobs.optimize_store import optimize_to_store
from deepvis.engine.featvis.accentuate import accentuate
from deepvis.engine.featvis.quality import penultimate_layer, spectral_slope
from deepvis.jobs.evaluate import evaluate_layer, evaluate_store, optimized_images
from deepvis.engine.featvis.maco import MacoParams, PhaseImage, natural_spectrum, random_crops, sample_spectrum
from deepvis.store import Store

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}

ZOO = Path(__file__).parents[1] / "zoo.py"


@pytest.fixture(scope="module")
def tiny_spec():
    """The tiny CNN of tests/zoo.py as a model spec (the CLI's and subprocesses' --model)."""
    return f"{ZOO}:tiny_cnn_32"


@pytest.fixture(scope="module")
def tiny(tiny_spec, single_thread_torch):
    return deepvis.load_model(tiny_spec)


@pytest.fixture(scope="module")
def scanned(tiny, tmp_path_factory):
    """A find-max store of the tiny net over the bundled photos (k = 3)."""
    folder = tmp_path_factory.mktemp("photos")
    for path in deepvis.sample_images():
        shutil.copy(path, folder / path.name)
    return find_max(tiny, folder, tmp_path_factory.mktemp("scan") / "store", layers=["conv2", "fc"], k=3,
                    batch_size=4, progress=False)


# ---------------------------------------------------------------- MACO
def test_maco_magnitude_stays_fixed_and_only_the_phase_learns():
    magnitude = torch.from_numpy(sample_spectrum((24, 24)))
    generator = torch.Generator().manual_seed(0)
    image = PhaseImage(2, magnitude, 24, 24, generator)
    assert [name for name, _ in image.named_parameters()] == ["phase"]
    optimizer = torch.optim.NAdam(image.parameters(), lr=0.5)
    phase0 = image.phase.detach().clone()
    for _ in range(3):
        optimizer.zero_grad()
        image()[:, 0].mean().backward()
        optimizer.step()
    assert torch.equal(image.magnitude, magnitude) and not torch.equal(image.phase, phase0)
    # the image before standardization has exactly the fixed magnitude (interior columns: no Hermitian folding)
    spectrum = torch.polar(image.magnitude.expand_as(image.phase), image.phase.detach())
    again = torch.fft.rfft2(torch.fft.irfft2(spectrum, s=(24, 24))).abs()
    assert torch.allclose(again[..., 1:-1], magnitude.expand_as(again)[..., 1:-1], rtol=1e-3, atol=1e-4)
    pixels = image()
    pixels = pixels.detach()
    assert pixels.shape == (2, 3, 24, 24) and 0 <= float(pixels.min()) and float(pixels.max()) <= 1


def test_natural_spectrum_falls_like_a_power_law():
    magnitude = natural_spectrum(deepvis.sample_images()[:2], (64, 64))
    assert magnitude.shape == (3, 64, 33)
    assert magnitude[:, 1, 1].mean() > 5 * magnitude[:, 16, 16].mean()  # low frequencies carry more


def test_maco_raises_its_objective_and_writes_spectrum_and_attribution(tmp_path, tiny, scanned):
    params = make_params("maco", steps=24, crops=2)
    results = optimize(tiny, ["conv2:1", "fc:2"], "maco", params)
    for result in results:
        assert result.method == "maco" and result.image.shape == (32, 32, 3)
        assert result.record["obj"][-1] > result.record["obj"][0] or result.best_obj > result.record["obj"][0]
        assert result.alpha.shape == (32, 32) and 0 <= result.alpha.min() and result.alpha.max() <= 1
    # into a find-max store: the spectrum comes from the store's images, saved there; the map beside the image
    store = optimize_to_store(tiny, scanned.root, ["conv2"], make_params("maco", steps=4, crops=2),
                              channels=[0, 1], progress=False)
    spectrum = store.read_spectrum()
    assert spectrum["made_from"]["images"] == 4 and spectrum["magnitude"].shape == (3, 48, 25)
    assert store.optimized_file("conv2", 0, "alpha").is_file()
    pictures = store.unit_pictures("conv2", 0)
    assert pictures["attribution"].name == "optimized_alpha.png" and pictures["optimized"].name == "optimized.png"
    assert json.loads(store.optimized_file("conv2", 0, "record").read_text())["method"] == "maco"


def test_maco_spread_bounds_where_the_crops_are_centred():
    """A white dot at the canvas centre: with spread 0 it is at the centre of every crop; with the default (0.5)
    crops lie anywhere on the canvas, so the dot wanders or leaves; 0.1 keeps it within 0.1 of the canvas side."""
    canvas = torch.zeros(1, 3, 101, 101)
    canvas[:, :, 50, 50] = 1.0
    out = (61, 61)

    def dot_offsets(spread: float) -> list[float]:
        crops = random_crops(canvas, 64, (0.5, 0.8), out, torch.Generator().manual_seed(0), spread)
        offsets = []
        for crop in crops:
            flat = int(crop.sum(0).argmax())
            y, x = divmod(flat, out[1])
            offsets.append(max(abs(y - 30), abs(x - 30)) / out[0])  # a fraction of the crop side
        return offsets

    assert max(dot_offsets(0.0)) <= 1 / 61
    assert max(dot_offsets(0.1)) <= 0.1 / 0.5 + 2 / 61  # 0.1 of the canvas side, in a crop at least half of it
    assert max(dot_offsets(0.5)) > 0.25
    assert "spread" not in MacoParams().to_json() and MacoParams(spread=0.0).to_json()["spread"] == 0.0
    with pytest.raises(deepvis.DeepvisError, match="spread"):
        MacoParams(spread=0.7)


def test_maco_spread_end_narrows_the_crops_step_by_step(tiny, monkeypatch):
    """``spread_end``: the crops' spread goes linearly from ``spread`` at the first step to ``spread_end`` at the
    last (by default from anywhere to centred); None, or the same value, keeps one spread and records it as before
    the setting existed."""
    from deepvis.engine.featvis import maco
    from deepvis.engine.featvis.objectives import Target

    seen = []
    real = maco.random_crops

    def recording(canvas, count, size, out, generator, spread=0.5):
        seen.append(spread)
        return real(canvas, count, size, out, generator, spread)

    monkeypatch.setattr(maco, "random_crops", recording)
    target = Target("conv2", 0)
    for settings, expected in (({}, [0.5, 0.375, 0.25, 0.125, 0.0]),
                               ({"spread": 0.4, "spread_end": 0.2}, [0.4, 0.35, 0.3, 0.25, 0.2]),
                               ({"spread": 0.2, "spread_end": None}, [0.2] * 5),
                               ({"spread": 0.2, "spread_end": 0.2}, [0.2] * 5)):
        seen.clear()
        params = MacoParams(steps=5, crops=1, **settings)
        maco.optimize_maco(tiny, [target], params)
        assert seen == pytest.approx(expected)
        assert ("spread_end" in params.to_json()) == (expected[0] != expected[-1])
    assert MacoParams(spread=0.3, spread_end=0.3).to_json() == MacoParams(spread=0.3, spread_end=None).to_json()
    with pytest.raises(deepvis.DeepvisError, match="spread_end"):
        MacoParams(spread_end=0.6)


def test_bad_maco_settings():
    with pytest.raises(deepvis.DeepvisError, match="crop_size"):
        MacoParams(crop_size=(0.5, 1.5))
    with pytest.raises(deepvis.DeepvisError, match="canvas"):
        MacoParams(canvas=0.5)
    with pytest.raises(deepvis.DeepvisError, match="contrast"):
        MacoParams(contrast=0)


# ---------------------------------------------------------------- evaluate
def test_spectral_slope_of_noise_and_photos():
    rng = np.random.default_rng(0)
    assert abs(spectral_slope(rng.random((64, 64)))) < 0.5  # white noise: flat
    photo = np.asarray(deepvis.load_image(deepvis.sample_images()[0]).resize((128, 128)), np.float32) / 255
    assert -3.5 < spectral_slope(photo) < -1.5  # natural images: about 1/f^2


def test_evaluate_scores_methods_deterministically(tmp_path, tiny, scanned):
    assert penultimate_layer(tiny) in ("pool2", "flat")  # the default layer before the logits
    other = optimize_to_store(tiny, tmp_path / "modern", ["conv2"], make_params("modern", steps=8),
                              channels=[0, 1], progress=False)
    if not scanned.optimized_file("conv2", 0).is_file():
        optimize_to_store(tiny, scanned.root, ["conv2"], make_params("maco", steps=4, crops=2), channels=[0, 1],
                          progress=False)
    first = evaluate_store(tiny, scanned.root, ["conv2"], others=[other.root], seed=3)["conv2"]
    again = evaluate_store(tiny, scanned.root, ["conv2"], others=[other.root], seed=3, write=False)["conv2"]
    assert first["units"] == again["units"]
    assert set(first["units"]["0"]) == {"maco", "modern", "dataset", "random_crops"}
    for method in ("maco", "modern", "dataset"):
        scores = first["median"][method]
        assert set(scores) == {"activation", "plausibility", "plausibility_raw", "path", "slope", "slope_gap"}
        assert all(np.isfinite(v) for v in scores.values())
    assert first["median"]["dataset"]["activation"] <= 1.0
    assert set(first["median"]["random_crops"]) == {"plausibility", "plausibility_raw"}
    # centred on a separate set of natural crops, unrelated random crops score about 0
    assert abs(first["median"]["random_crops"]["plausibility"]) < 0.5
    assert Store(scanned.root).read_evaluation("conv2")["seed"] == 3
    assert first["share"] is not None and first["forwards"] > 0


def test_evaluate_averages_a_units_copies(tmp_path, tiny, scanned):
    """A unit optimized with --copies 3: evaluate scores each of its images and reports their mean (one image's
    plausibility is a noisy sample of the method's), with how many images and their spread."""
    copies = optimize_to_store(tiny, tmp_path / "copies", ["conv2"], make_params("modern", steps=4, copies=3),
                               channels=[0, 1], progress=False)
    method, found, _seconds = optimized_images(copies, "conv2")
    assert method == "modern" and [len(found[c]) for c in (0, 1)] == [3, 3]
    together = evaluate_layer(tiny, scanned, "conv2", {"modern": found}, seed=1)["units"]
    one_by_one = [evaluate_layer(tiny, scanned, "conv2", {"modern": {c: found[c][n] for c in found}}, seed=1)["units"]
                  for n in range(3)]
    for channel in ("0", "1"):
        scores = together[channel]["modern"]
        singles = [run[channel]["modern"] for run in one_by_one]
        assert scores["images"] == 3
        for metric in ("plausibility", "activation", "path", "slope"):
            assert scores[metric] == pytest.approx(np.mean([single[metric] for single in singles]), abs=1e-5)
        assert scores["plausibility_sd"] == pytest.approx(np.std([s["plausibility"] for s in singles]), abs=1e-5)
        assert "images" not in singles[0]


# ---------------------------------------------------------------- accentuation
def test_accentuation_raises_units_and_stays_close(tiny):
    photo = deepvis.sample_images()[1]
    for unit in ("conv2:0", "conv2:3", "fc:1", "fc:4"):
        result = accentuate(tiny, photo, unit, steps=12, lr=0.1)
        assert result.after > result.before, unit
        assert result.distance < 0.1 and result.path_similarity > 0.5
        assert result.image.shape == result.original.shape == (32, 32, 3)


@pytest.mark.slow
def test_cli_maco_accentuate_evaluate(tmp_path, tiny_spec, scanned):
    model = tiny_spec
    env = {**ENV, "PYTHONPATH": os.pathsep.join([str(p) for p in sys.path if p])}
    run = subprocess.run([sys.executable, "-m", "deepvis", "optimize", "--model", model, "--method", "maco",
                          "--unit", "fc:1", "--steps", "3", "--crops", "2", "-o", str(tmp_path / "m.png")],
                         capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "m.png").is_file() and (tmp_path / "m_alpha.png").is_file()
    run = subprocess.run([sys.executable, "-m", "deepvis", "accentuate", str(deepvis.sample_images()[0]), "--model",
                          model, "--unit", "fc:1", "--steps", "4", "--json", "-o", str(tmp_path / "a.png")],
                         capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    assert data["after"] > data["before"] and (tmp_path / "a.png").is_file()
    run = subprocess.run([sys.executable, "-m", "deepvis", "evaluate", str(scanned.root), "--model", model,
                          "--layers", "fc", "--json"], capture_output=True, text=True, env=env)
    assert run.returncode == 1 and "no optimized images" in run.stderr  # fc has none yet: a one-line error
    run = subprocess.run([sys.executable, "-m", "deepvis", "optimize", "--model", model, "--method", "maco",
                          "--out", str(scanned.root), "--layers", "fc", "--units", "0-1", "--steps", "3", "--crops",
                          "2", "-q"], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    run = subprocess.run([sys.executable, "-m", "deepvis", "evaluate", str(scanned.root), "--model", model,
                          "--layers", "fc"], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    assert "| fc | maco |" in run.stdout and "of the optimize time" in run.stdout


# ---------------------------------------------------------------- one set of objectives for every method
def test_combined_objectives_in_every_method(tiny):
    from deepvis.engine.featvis.objectives import Combination, evaluate, make_target

    difference = make_target(tiny, "conv2:1 - conv2:2")
    product = make_target(tiny, "fc:1 * conv2:3", kind="channel")
    assert isinstance(difference, Combination) and str(difference) == "conv2:1@8,8 - conv2:2@8,8"
    x = torch.randn(2, 3, 32, 32)
    one = evaluate(tiny, x, [make_target(tiny, "conv2:1")] * 2).values
    two = evaluate(tiny, x, [make_target(tiny, "conv2:2")] * 2).values
    both = evaluate(tiny, x, [difference, make_target(tiny, "conv2:1")]).values
    assert torch.allclose(both, torch.stack([one[0] - two[0], one[1]]))
    left = evaluate(tiny, x[:1], [make_target(tiny, "fc:1", "channel")]).values[0]
    right = evaluate(tiny, x[:1], [make_target(tiny, "conv2:3", "channel")]).values[0]
    assert torch.allclose(evaluate(tiny, x[:1], [product]).values[0], left * right)
    for method, settings in (("paper", {"max_iter": 6}), ("modern", {"steps": 6}), ("maco", {"steps": 6, "crops": 2})):
        results = optimize(tiny, ["conv2:1 - conv2:2", "fc:1"], method, **settings)
        assert results[0].to_json()["target"]["op"] == "-" and np.isfinite(results[0].best_obj), method


def test_maco_copies_with_diversity_differ(tiny):
    result, = optimize(tiny, "conv2:1", "maco", steps=6, crops=2, copies=2, diversity=1.0)
    assert len(result.extra_images) == 1 and len(result.record["final_obj"]) == 2
    assert np.abs(result.image - result.extra_images[0]).mean() > 0.01
    with pytest.raises(deepvis.DeepvisError, match="copies >= 2"):
        MacoParams(diversity=1.0)


@pytest.mark.slow
def test_on_the_bundled_model_maco_keeps_natural_slope_and_accentuation_raises(model, single_thread_torch):
    """The direction of the measured effects, on 2 units of EfficientNet-Lite0 and few steps."""
    photos = [np.asarray(deepvis.load_image(p).resize((224, 224)), np.float32) / 255 for p in deepvis.sample_images()]
    natural = float(np.median([spectral_slope(p) for p in photos]))
    units = ["blocks.8:0", "blocks.8:40"]
    maco = optimize(model, units, "maco", steps=12, crops=2)
    modern = optimize(model, units, "modern", steps=12)
    for a, b in zip(maco, modern):
        assert abs(spectral_slope(a.image) - natural) < abs(spectral_slope(b.image) - natural)
        assert abs(spectral_slope(a.image) - natural) < 0.5
    for unit in units:
        result = accentuate(model, deepvis.sample_images()[1], unit, steps=8)
        assert result.after > result.before and result.distance < 0.01
