"""The one ascent loop every method runs through (``deepvis.engine.featvis.loop``), objectives shared by all of them, and
copies with diversity for the paper's method."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import deepvis
from deepvis.engine.featvis import PaperParams, make_params, make_target, optimize
from deepvis.jobs.optimize_store import optimize_to_store
from deepvis.engine.featvis import loop
from deepvis.engine.featvis.accentuate import accentuate
from deepvis.engine.featvis.diversity import diversity_penalty
from deepvis.engine.featvis.objectives import Combination, evaluate

ZOO = Path(__file__).parents[1] / "zoo.py"


@pytest.fixture(scope="module")
def tiny():
    return deepvis.load_model(f"{ZOO}:tiny_cnn")


@pytest.fixture
def ascents(monkeypatch):
    """Every :class:`loop.Ascent` that goes through :func:`loop.ascend`, in order (the real loop still runs)."""
    seen = []
    real = loop.ascend

    def spy(model, ascent, *args, **kwargs):
        seen.append(ascent)
        return real(model, ascent, *args, **kwargs)

    monkeypatch.setattr(loop, "ascend", spy)
    return seen


def _value(model, image: np.ndarray, unit: str, kind: str = "unit") -> float:
    """A single target's value on an (H, W, 3) [0, 1] image."""
    x = model.preprocessing.normalize(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None])
    return float(evaluate(model, x, [make_target(model, unit, kind)]).values[0])


UNITS = ["conv2:1 - conv2:2", "fc:1 * conv2:3", "conv2:0"]  # two combinations batched with a plain unit


@pytest.mark.filterwarnings("ignore:.*majority failure")
@pytest.mark.parametrize("method, settings", [("paper", {"preset": "paper3", "max_iter": 6}),
                                              ("modern", {"steps": 6}), ("maco", {"steps": 6, "crops": 2})])
def test_every_method_runs_through_the_one_loop_with_combined_objectives(tiny, ascents, method, settings):
    results = optimize(tiny, UNITS, method, progress=False, **settings)
    assert len(ascents) == 1  # one batch, one loop
    views = len(ascents[0].targets) // len(UNITS)  # MACO evaluates its crops
    assert [str(t) for t in ascents[0].targets[::views]] == [str(make_target(tiny, u)) for u in UNITS]
    assert isinstance(results[0].target, Combination) and results[0].target.op == "-"
    assert isinstance(results[1].target, Combination) and results[1].target.op == "*"
    # the value each method reports for a combination is the two parts combined, on the image it returns
    for result, unit in zip(results, UNITS):
        reported = result.record["best_obj"]
        image = result.input_image
        if result.target.kind == "combination":
            left, right = (_value(tiny, image, part) for part in unit.split(f" {result.target.op} "))
            expected = left - right if result.target.op == "-" else left * right
        else:
            expected = _value(tiny, image, unit)
        assert reported == pytest.approx(expected, rel=1e-3, abs=1e-4), (method, unit)


def test_accentuation_runs_through_the_loop_with_a_combined_objective(tiny, ascents):
    photo = deepvis.sample_images()[1]
    result = accentuate(tiny, photo, "conv2:1 * conv2:3", steps=8, lr=0.1)
    assert len(ascents) == 1 and isinstance(result.target, Combination)
    assert result.after > result.before and result.record["objective"] == "combination"
    # accentuate's parts are channel objectives (no @y,x given)
    left, right = (_value(tiny, result.image, u, "channel") for u in ("conv2:1", "conv2:3"))
    assert result.after == pytest.approx(left * right, rel=1e-4)


def _copies_similarity(model, ascent) -> float:
    """The Gram similarity of the copies of a one-target run, on the final images the network sees."""
    with torch.no_grad():
        evaluation = evaluate(model, ascent.image(), ascent.targets)
    return float(diversity_penalty(evaluation.by_layer, lambda row: row, len(ascent.targets)))


def test_paper_copies_with_diversity_are_less_alike(tiny, ascents):
    (plain,) = optimize(tiny, "conv2:1", preset="paper3", max_iter=30, copies=2, progress=False)
    (diverse,) = optimize(tiny, "conv2:1", preset="paper3", max_iter=30, copies=2, diversity=10.0, progress=False)
    alike, apart = _copies_similarity(tiny, ascents[0]), _copies_similarity(tiny, ascents[1])
    assert apart < alike  # measured 0.11 against 0.99
    for result in (plain, diverse):
        assert len(result.extra_images) == 1 and len(result.record["copy_best_obj"]) == 2
        assert np.abs(result.image - result.extra_images[0]).mean() > 0.01
        assert result.to_json()["params"]["copies"] == 2
    assert diverse.to_json()["params"]["diversity"] == 10.0


def test_paper_copy_zero_is_the_single_image_and_defaults_keep_records(tiny, tmp_path):
    (single,) = optimize(tiny, "conv2:1", preset="paper3", max_iter=10, progress=False)
    (first, _second) = optimize(tiny, ["conv2:1", "fc:2"], preset="paper3", max_iter=10, copies=2, progress=False)
    assert first.input_image == pytest.approx(single.input_image, abs=1e-4)
    assert first.record["obj"] == pytest.approx(single.record["obj"], rel=1e-4, abs=1e-4)
    assert single.extra_images == [] and "copy_best_obj" not in single.record
    # settings at their defaults are recorded as before copies existed: stores made then are still "done"
    params = make_params("paper", max_iter=3)
    assert "copies" not in params.to_json() and "diversity" not in params.to_json()
    store = optimize_to_store(tiny, tmp_path / "s", ["conv2"], params, channels=[0, 1], progress=False)
    records = sorted(store.root.rglob("optimized.json"))
    before = [p.stat().st_mtime_ns for p in records]
    optimize_to_store(tiny, store.root, ["conv2"], params.with_(copies=1, diversity=0.0), channels=[0, 1],
                      progress=False)
    assert [p.stat().st_mtime_ns for p in records] == before
    with pytest.raises(deepvis.DeepvisError, match="made differently"):
        optimize_to_store(tiny, store.root, ["conv2"], params.with_(copies=2), channels=[0, 1], progress=False)
    assert json.loads(records[0].read_text())["params"] == params.to_json()


def test_paper_copies_settings_are_checked_and_offered_as_flags():
    for settings, message in [({"diversity": 1.0}, "copies >= 2"), ({"copies": 0}, "copies must be"),
                              ({"copies": 2, "start_at": "mean"}, "one image")]:
        with pytest.raises(deepvis.DeepvisError, match=message):
            PaperParams(**settings)
    from deepvis.apps import cli
    from deepvis.engine.featvis.methods import flag_settings

    settings = {s.name: s for s in flag_settings()}
    assert settings["copies"].methods == settings["diversity"].methods == ("paper", "modern", "maco")
    help_text = cli.build_parser()._subparsers._group_actions[0].choices["optimize"].format_help()
    flat = " ".join(help_text.split())
    assert "--copies COPIES images per unit (paper and modern and maco methods; default 1)" in flat
    assert "--diversity DIVERSITY weight of the diversity term across copies (paper and modern and maco" in flat
