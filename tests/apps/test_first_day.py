"""The frictions of a first day (issue 13, section 4): single images and list files, a store without a usable image,
serve --store checks and hints, upload errors named by file, one pixel limit, configs usable from this repository,
random weights shown plainly."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from torch import nn

import deepvis
from deepvis.apps import cli
from deepvis.pixels.images import DEFAULT_MAX_PIXELS, find_images, max_pixels
from deepvis.jobs.provenance import model_from_manifest
from deepvis.models.caffe import write_caffemodel

pytestmark = pytest.mark.usefixtures("single_thread_torch")
ROOT = Path(__file__).resolve().parents[2]


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.conv(x).relu().mean((2, 3)))


def build():
    import torch

    torch.manual_seed(0)
    return deepvis.Model(net=Tiny(), preprocessing=deepvis.Preprocessing(input_size=(16, 16)))


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for n in range(3):
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(folder / f"{n}.jpg")
    return folder


@pytest.fixture
def spec(tmp_path):
    """This module as a file.py:factory model spec."""
    return f"{Path(__file__).resolve()}:build"


def _main(capsys, *args):
    code = cli.main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_single_image_is_an_image_and_a_list_is_known_by_extension_or_text(tmp_path, photos):
    one = photos / "0.jpg"
    assert find_images(one) == (photos.resolve(), [one.resolve()])
    notes = tmp_path / "notes.jpg"  # named as an image: an image, however it reads
    notes.write_text("0.jpg\n")
    assert find_images(notes)[1] == [notes.resolve()]
    for name in ("list.txt", "list.lst", "list"):
        listing = photos / name
        listing.write_text("0.jpg\n1.jpg cat\n")
        assert find_images(listing)[1] == [photos.resolve() / "0.jpg", photos.resolve() / "1.jpg"]
    binary = photos / "photo"  # a photo without an extension: not text
    shutil.copy(one, binary)
    assert find_images(binary)[1] == [binary.resolve()]


def test_find_max_of_one_image_and_of_no_usable_image(tmp_path, photos, spec, capsys):
    code, out, err = _main(capsys, "find-max", photos / "0.jpg", "--out", tmp_path / "s1", "--model", spec, "--k",
                           "1", "-q")
    assert code == 0 and "Traceback" not in err, err
    assert deepvis.store.Store(tmp_path / "s1").read_manifest().images == 1
    notes = tmp_path / "notes.jpg"
    notes.write_text("this is text, not a picture\n")
    code, out, err = _main(capsys, "find-max", notes, "--out", tmp_path / "s2", "--model", spec)
    assert code == 1 and "none of the 1 images" in err and "notes.jpg" in err and "internal" not in err, err
    assert not (tmp_path / "s2" / "manifest.json").exists()


def test_serve_store_must_exist_and_hold_something(tmp_path, spec, capsys):
    code, _, err = _main(capsys, "serve", "--store", tmp_path / "nonexistent", "--model", spec)
    assert code == 1 and "not found" in err and "nonexistent" in err, err
    (tmp_path / "empty").mkdir()
    code, _, err = _main(capsys, "serve", "--store", tmp_path / "empty", "--model", spec)
    assert code == 1 and "not a deepvis store" in err, err


def test_the_unit_hint_names_what_is_missing_and_serve_shows_the_stores_images(tmp_path, photos):
    from deepvis.jobs.findmax import find_max
    from deepvis.apps.server.session import Toolbox

    model = deepvis.load_model(build())
    store = find_max(model, photos, tmp_path / "store", layers=["conv"], k=1, progress=False)
    toolbox = Toolbox(model, store=store.root, store_images=True)
    hint = toolbox.unit_images("conv", 0)["hint"]
    assert "deepvis crops" in hint and "find-max" not in hint and "deepvis optimize" in hint
    assert "find-max" in toolbox.unit_images("fc", 0)["hint"]  # a layer the store has no top-k of
    assert [p.name for p in toolbox.image_files] == ["0.jpg", "1.jpg", "2.jpg"] and toolbox.image_root == photos
    assert toolbox.info()["random_weights"] is False
    with pytest.raises(deepvis.DeepvisError, match="cannot be loaded again.*--model"):  # made in Python
        model_from_manifest(store)


def test_upload_errors_name_the_file_and_one_pixel_limit(tmp_path, spec, capsys):
    from deepvis.apps.server.session import Toolbox

    toolbox = Toolbox(deepvis.load_model(build()))
    with pytest.raises(deepvis.ImageError, match="'notes.jpg'") as caught:
        toolbox.input_from_bytes(b"not an image at all", name="notes.jpg")
    assert "bytes>" not in str(caught.value)
    assert toolbox.max_pixels == max_pixels() == DEFAULT_MAX_PIXELS  # the CLI's limit, the server's limit
    big = tmp_path / "big.png"
    Image.new("RGB", (40, 30)).save(big)
    code, _, err = _main(capsys, "predict", big, "--model", spec, "--max-pixels", "1000")
    assert code == 1 and "over the limit of 1,000" in err, err
    assert max_pixels() == DEFAULT_MAX_PIXELS  # the flag lasts one command


def test_configs_are_checked_model_then_weights_then_mean(tmp_path):
    config = tmp_path / "net.toml"
    config.write_text('model = "net/deploy.prototxt"\nweights = "net/net.caffemodel"\n'
                      '[preprocessing]\nmean = "net/mean.npy"\n')
    with pytest.raises(deepvis.ModelError, match="model file not found"):
        deepvis.load_model(str(config))
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "deploy.prototxt").write_text(
        'input: "data"\ninput_dim: 1\ninput_dim: 3\ninput_dim: 8\ninput_dim: 8\n'
        'layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" '
        'convolution_param { num_output: 2 kernel_size: 3 } }\n')
    with pytest.raises(deepvis.ModelError, match="weights file not found.*fetch it"):
        deepvis.load_model(str(config))
    rng = np.random.default_rng(0)
    write_caffemodel(tmp_path / "net" / "net.caffemodel",
                     {"conv": [rng.standard_normal((2, 3, 3, 3)).astype(np.float32), np.zeros(2, np.float32)]})
    with pytest.raises(deepvis.ModelError, match="mean file not found"):
        deepvis.load_model(str(config))
    np.save(tmp_path / "net" / "mean.npy", np.zeros((3, 8, 8), np.float32))
    model = deepvis.load_model(str(config))
    assert model.recipe["files"]["mean"] == str(tmp_path / "net" / "mean.npy") and not model.random_weights


@pytest.mark.parametrize("name", ["caffenet-yos", "bvlc-googlenet", "squeezenet"])
def test_shipped_configs_find_their_prototxt_and_name_the_weights_to_fetch(name):
    with pytest.raises(deepvis.ModelError, match=f"weights file not found: '{ROOT / 'configs' / name}/.*fetch it"):
        deepvis.load_model(str(ROOT / "configs" / f"{name}.toml"))
    text = (ROOT / "configs" / f"{name}.toml").read_text()
    weights = next(line for line in text.splitlines() if line.startswith("weights")).split('"')[1]
    assert Path(weights).name in text.split("model =")[0]  # the comments list the file to fetch


def test_random_weights_are_shown_plainly(tmp_path):
    from deepvis.apps.server.session import Toolbox

    (tmp_path / "deploy.prototxt").write_text(
        'input: "data"\ninput_dim: 1\ninput_dim: 3\ninput_dim: 8\ninput_dim: 8\n'
        'layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" '
        'convolution_param { num_output: 2 kernel_size: 3 } }\n')
    with pytest.warns(UserWarning, match="random weights"):
        model = deepvis.load_model(str(tmp_path / "deploy.prototxt"))
    assert model.random_weights and Toolbox(model).info()["random_weights"] is True
    assert "random-weights" in (ROOT / "src/deepvis/apps/server/static/main.js").read_text()
