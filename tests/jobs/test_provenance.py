"""Results you can trust: a store's manifest is a complete, portable recipe of its model (reloaded and checked by
crops, optimize --out and serve --store; another model refused unless --force), and every derived file records
what it was made from, so a re-scan removes exactly what it changed and crops redoes it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from deepvis.apps import cli
from deepvis.models.caffe import write_caffemodel
from deepvis.models.model import weights_hash
from deepvis.jobs.provenance import model_from_manifest
from deepvis.store import Store

pytestmark = pytest.mark.usefixtures("single_thread_torch")
RNG = np.random.default_rng(7)

PROTOTXT = """input: "data"
input_dim: 1
input_dim: 3
input_dim: 16
input_dim: 16
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "fc" type: "InnerProduct" bottom: "pool1" top: "fc" inner_product_param { num_output: 5 } }
"""


def _blobs(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {"conv1": [rng.standard_normal((4, 3, 3, 3)).astype(np.float32), rng.standard_normal(4).astype(np.float32)],
            "fc": [rng.standard_normal((5, 256)).astype(np.float32) * 0.1, np.zeros(5, np.float32)]}


@pytest.fixture
def lenet(tmp_path):
    """A small Caffe model with its own weights, and photos, in tmp/model and tmp/photos."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "deploy.prototxt").write_text(PROTOTXT)
    write_caffemodel(folder / "x.caffemodel", _blobs(0))
    photos = tmp_path / "photos"
    photos.mkdir()
    for n in range(4):
        Image.fromarray(RNG.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(photos / f"{n}.png")
    return folder


def _main(capsys, *args) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


FLAGS = ("--model", "deploy.prototxt", "--weights", "x.caffemodel", "--scale", "0.00392157")


def _find_max(capsys, monkeypatch, lenet, *extra):
    monkeypatch.chdir(lenet)  # relative paths, as a user types them
    code, _, err = _main(capsys, "find-max", "../photos", "--out", "../store", "--k", "2", "--layers", "conv1",
                         "fc", "-q", *FLAGS, *extra)
    assert code == 0, err
    return Store(lenet.parent / "store")


def test_the_manifest_is_a_portable_recipe_crops_follow_it_from_another_folder(tmp_path, lenet, capsys, monkeypatch):
    store = _find_max(capsys, monkeypatch, lenet)
    manifest = store.read_manifest()
    recipe = manifest.recipe
    assert recipe["spec"] == str(lenet / "deploy.prototxt") and recipe["weights"] == str(lenet / "x.caffemodel")
    assert recipe["preprocessing"] == {"scale": 0.00392157}
    for role, name in (("spec", "deploy.prototxt"), ("weights", "x.caffemodel")):
        entry = recipe["files"][role]
        assert entry["path"] == str(lenet / name) and len(entry["sha256"]) == 64
    assert manifest.preprocessing["value_scale"] == pytest.approx(255 * 0.00392157)
    monkeypatch.chdir(tmp_path / "photos")  # anywhere else: the store names its files absolutely
    code, out, err = _main(capsys, "crops", store.root, "--units", "0-1")
    assert code == 0 and "warning" not in err, err  # no random weights, no default scale
    record = store.read_crops_record("conv1", 0)
    assert record["network"] == manifest.weights_sha256 and set(record["kinds"]) == {"image", "deconv"}
    assert store.unit_crop("conv1", 0, "image", 0) is not None
    model = model_from_manifest(store)
    assert weights_hash(model) == manifest.weights_sha256 and model.preprocessing.value_scale == pytest.approx(1.0)


def test_another_model_or_changed_weights_are_refused_unless_forced(tmp_path, lenet, capsys, monkeypatch):
    store = _find_max(capsys, monkeypatch, lenet)
    # the case: the prototxt alone has random weights and the default scale
    code, _, err = _main(capsys, "crops", store.root, "--model", "deploy.prototxt")
    lines = err.strip().splitlines()
    assert code == 1 and "random weights" in lines[-1] and "value_scale" in lines[-1] and "--force" in lines[-1], err
    assert not store.unit_file("conv1", 0, "image").exists()
    code, _, err = _main(capsys, "crops", store.root, "--scale", "1")  # the store's model, another setting
    assert code == 1 and "value_scale 255.0" in err, err
    write_caffemodel(lenet / "x.caffemodel", _blobs(1))  # the weights file changed since find-max
    code, _, err = _main(capsys, "crops", store.root)
    assert code == 1 and "weights file" in err and "changed" in err and "x.caffemodel" in err, err
    code, _, err = _main(capsys, "optimize", "--out", store.root, "--layers", "fc", "--max-iter", "2")
    assert code == 1 and "changed" in err, err
    code, _, err = _main(capsys, "crops", store.root, "--force", "--units", "0", "--layers", "conv1", "--kinds",
                         "image")
    assert code == 0 and "network hash" in err, err  # forced: used, with a warning naming the difference
    (lenet / "x.caffemodel").unlink()
    code, _, err = _main(capsys, "crops", store.root)
    assert code == 1 and "missing" in err and "x.caffemodel" in err, err


def test_the_weights_hash_sees_one_unit_knocked_out_behind_torchs_back():
    """Zeroing one unit through ``.data`` or numpy (torch's version counter does not move) changes the hash: a
    store must not credit the original network with the changed one's results."""
    from torch import nn

    from deepvis.models.model import Model, prepare

    net = prepare(nn.Sequential(nn.Conv2d(3, 64, 3), nn.BatchNorm2d(64), nn.Flatten(), nn.Linear(64 * 6 * 6, 5)))
    model = Model(net=net)
    seen = {weights_hash(model)}
    knock_outs = (lambda: net[0].weight.data[5].zero_(), lambda: net[0].bias.data.__setitem__(5, 0.0),
                  lambda: net[0].weight.numpy().__setitem__(7, 0.0),
                  lambda: net[1].running_var.numpy().__setitem__(9, 3.0))
    for knock_out in knock_outs:
        knock_out()
        now = weights_hash(model)
        assert now not in seen
        seen.add(now)


def test_crops_see_weights_changed_in_place_between_calls(tmp_path, lenet, capsys, monkeypatch):
    from deepvis.jobs.crops import make_crops
    from deepvis.core.errors import DeepvisError

    store = _find_max(capsys, monkeypatch, lenet)
    model = model_from_manifest(store)
    make_crops(model, store.root, layers=["conv1"], kinds=("image",), channels=range(0, 1), progress=False)
    with torch.no_grad():
        next(model.net.parameters()).mul_(2)  # the user's own change, in the same process
    with pytest.raises(DeepvisError, match="network hash"):
        make_crops(model, store.root, layers=["conv1"], kinds=("image",), channels=range(0, 1), progress=False)
    with pytest.warns(UserWarning, match="network hash"):
        make_crops(model, store.root, layers=["conv1"], kinds=("image",), channels=range(0, 1), force=True,
                   progress=False)
    assert store.read_crops_record("conv1", 0)["network"] == weights_hash(model) != store.read_manifest().weights_sha256


def test_optimize_out_and_serve_store_take_the_stores_model(tmp_path, lenet, capsys, monkeypatch):
    from deepvis.apps.server.session import Toolbox

    store = _find_max(capsys, monkeypatch, lenet)
    monkeypatch.chdir(tmp_path)
    code, _, err = _main(capsys, "optimize", "--out", store.root, "--layers", "fc", "--units", "0-1",
                         "--max-iter", "2", "-q")
    assert code == 0, err
    saved = store.read_optimized_record("fc", 1)
    assert saved["weights"] == store.read_manifest().weights_sha256
    model = model_from_manifest(store)
    toolbox = Toolbox(model, store=store.root, store_images=True)  # as serve --store builds it
    assert toolbox.image_root == tmp_path / "photos" and len(toolbox.image_files) == 4
    assert toolbox.info()["random_weights"] is False


def test_a_rescan_removes_exactly_what_it_changed_and_crops_redo_it(tmp_path, lenet, capsys, monkeypatch):
    store = _find_max(capsys, monkeypatch, lenet)
    code, _, err = _main(capsys, "crops", store.root, "--layers", "fc", "--kinds", "image", "-q")
    assert code == 0, err
    before = store.read_topk("fc")
    stamps = {c: store.unit_file("fc", c, "image").stat().st_mtime_ns for c in range(5)}
    # a photo that every fc unit's top 2 may now hold: the re-scan changes some units, not necessarily all
    for n in range(4, 10):
        Image.fromarray(RNG.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(tmp_path / "photos" / f"{n}.png")
    code, _, err = _main(capsys, "find-max", "../photos", "--out", "../store", "--k", "2", "--layers", "conv1", "fc",
                         "-q", "--force", *FLAGS)
    assert code == 0, err
    after = store.read_topk("fc")
    names_before, names_after = ["0.png", "1.png", "2.png", "3.png"], store.read_image_list()
    changed = [c for c in range(5) if [names_before[i] for i in before["images"][c]] !=
               [names_after[i] for i in after["images"][c]] or not np.array_equal(before["y"][c], after["y"][c])]
    assert changed and "removed" in err
    for c in range(5):
        if c in changed:  # stale: gone until crops redoes it, so nobody is shown the old top images
            assert not store.unit_file("fc", c, "image").exists() and store.read_crops_record("fc", c) is None
        else:
            assert store.unit_file("fc", c, "image").stat().st_mtime_ns == stamps[c]
    assert not store.sprite_path("fc", "image").exists()
    code, _, err = _main(capsys, "crops", store.root, "--layers", "fc", "--kinds", "image", "-q")
    assert code == 0, err
    hashes = store.topk_hashes("fc")
    for c in range(5):
        assert store.read_crops_record("fc", c)["topk"] == hashes[c]
        if c not in changed:
            assert store.unit_file("fc", c, "image").stat().st_mtime_ns == stamps[c]  # not redone
    sprites = json.loads(store.sprites_record_path("fc").read_text())
    assert store.sprite_path("fc", "image").is_file() and sprites["image"]["made_from"]


def test_smaller_k_leaves_no_stale_rank(tmp_path, lenet, capsys, monkeypatch):
    store = _find_max(capsys, monkeypatch, lenet, "--force")
    assert _main(capsys, "crops", store.root, "--layers", "fc", "--kinds", "image", "-q")[0] == 0
    assert store.unit_crop("fc", 0, "image", 1) is not None
    code, _, err = _main(capsys, "find-max", "../photos", "--out", "../store", "--k", "1", "--layers", "fc", "-q",
                         "--force", *FLAGS)
    assert code == 0, err
    assert _main(capsys, "crops", store.root, "--kinds", "image", "-q")[0] == 0
    assert store.unit_crop("fc", 0, "image", 0) is not None and store.unit_crop("fc", 0, "image", 1) is None
    assert not store.topk_path("conv1").exists()  # a layer the new scan left out: its top-k is gone too


def test_a_store_of_an_older_deepvis_still_reads_and_is_checked(tmp_path, lenet, capsys, monkeypatch):
    store = _find_max(capsys, monkeypatch, lenet)
    data = json.loads(store.manifest_path.read_text())
    del data["recipe"]  # what deepvis wrote before manifests held a recipe: format 1, the spec as typed
    assert data["format"] == 1 and data["model"] == "deploy.prototxt"
    store.manifest_path.write_text(json.dumps(data))
    assert store.read_manifest().recipe is None
    code, _, err = _main(capsys, "crops", store.root)  # from the folder find-max ran in: random weights, refused
    assert code == 1 and "random weights" in err, err
    monkeypatch.chdir(tmp_path)
    code, _, err = _main(capsys, "crops", store.root)
    assert code == 1 and "relative to the folder find-max ran in" in err, err
    code, _, err = _main(capsys, "crops", store.root, "--units", "0", "--kinds", "image", "-q",
                         "--model", lenet / "deploy.prototxt", "--weights", lenet / "x.caffemodel", "--scale",
                         "0.00392157")
    assert code == 0, err  # the same model, given again: accepted


def test_crops_units_past_the_last_channel_are_clamped_with_a_note(tmp_path, lenet, capsys, monkeypatch):
    store = _find_max(capsys, monkeypatch, lenet)
    code, _, err = _main(capsys, "crops", store.root, "--layers", "fc", "--units", "3-9", "--kinds", "image")
    assert code == 0 and "note" in err and "has 5 channels" in err and "3-4" in err, err
    assert store.unit_file("fc", 4, "image").exists()
    code, _, err = _main(capsys, "crops", store.root, "--layers", "fc", "--units", "7-9")
    assert code == 1 and "channel 7 out of range" in err, err
    code, _, err = _main(capsys, "optimize", "--out", store.root, "--layers", "fc", "--units", "4-9",
                         "--max-iter", "2", "-q")
    assert code == 0 and "doing 4 of 4-9" in err, err
    assert store.read_optimized_record("fc", 4) is not None


def test_a_forced_rescan_without_model_keeps_the_stores_model_and_layers(tmp_path, lenet, capsys, monkeypatch):
    store = _find_max(capsys, monkeypatch, lenet)
    before = store.read_manifest()
    # the step: `find-max --force` on the store, no model flags (the bundled model used to replace it)
    code, _, err = _main(capsys, "find-max", "../photos", "--out", "../store", "--k", "3", "--force")
    assert code == 0, err
    assert "re-scanning the store with its model and layers" in err and "deploy.prototxt" in err, err
    after = store.read_manifest()
    assert after.recipe["spec"] == before.recipe["spec"] and after.weights_sha256 == before.weights_sha256
    assert list(after.layers) == list(before.layers) == ["conv1", "fc"] and after.k == 3
    # --model still scans with another model (here: the prototxt's own random weights, forced)
    code, _, err = _main(capsys, "find-max", "../photos", "--out", "../store", "--k", "2", "--force", "--model",
                         "deploy.prototxt", "-q")
    assert code == 0 and Store(store.root).read_manifest().weights_sha256 != before.weights_sha256, err
