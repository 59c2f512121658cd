"""Model specs beyond the built-in: mean images, preprocessing flags, model config files (.toml), the shipped
configs of the original models, torchvision:/timm: (with fake packages), --weights, and the Caffe wiring."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import deepvis
from deepvis import ModelError, Preprocessing, load_model
from deepvis.apps import cli
from deepvis.models.config import read_config
from deepvis.apps.server.session import Toolbox

ROOT = Path(__file__).resolve().parents[2]
ORIGINAL = ROOT.parent / "shared" / "data" / "original-models"


def tiny(channels: int = 3, classes: int = 4) -> nn.Module:
    return nn.Sequential(nn.Conv2d(channels, 3, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(3, classes), nn.Softmax(dim=1))


# ------------------------------------------------------------------------------------------- preprocessing
def test_mean_image_is_centre_cropped_or_resized():
    mean = np.arange(3 * 10 * 12, dtype=np.float32).reshape(3, 10, 12)
    pre = Preprocessing(input_size=(6, 8), mean=mean, std=(1.0,), channel_order="bgr", value_scale=255.0)
    x = pre.normalize(torch.zeros(2, 3, 6, 8))
    assert torch.equal(x[0], -torch.from_numpy(mean[:, 2:8, 2:10]))  # centre crop, batch broadcast
    rgb = torch.rand(3, 6, 8)
    assert torch.allclose(pre.denormalize(pre.normalize(rgb)), rgb, atol=1e-5)
    bigger = pre.with_(input_size=(20, 24)).normalize(torch.zeros(3, 20, 24))
    assert bigger.shape == (3, 20, 24) and -bigger.mean() == pytest.approx(mean.mean(), rel=0.05)
    assert pre.to_json()["mean"]["image_shape"] == [3, 10, 12] and pre == pre.with_() and pre != Preprocessing()
    with pytest.raises(ValueError, match="mean has 2 channels"):
        Preprocessing(mean=np.zeros((2, 4, 4)))


def test_mean_file_scale_and_labels_keywords(tmp_path):
    np.save(tmp_path / "mean.npy", np.full((3, 40, 40), 100.0, np.float32))
    (tmp_path / "labels.txt").write_text("zero\n\none\n two \nthree\n")
    model = load_model(tiny(), input_size=(16, 20), mean=str(tmp_path / "mean.npy"), scale=1.0, std=(1.0,),
                       channel_order="bgr", labels=tmp_path / "labels.txt")
    pre = model.preprocessing
    assert pre.value_scale == 255.0 and pre.mean.shape == (3, 40, 40) and model.labels == ["zero", "one", "two",
                                                                                           "three"]
    white = model.input(Image.new("RGB", (20, 16), (255, 255, 255)))
    assert torch.allclose(white, torch.full((1, 3, 16, 20), 155.0))
    assert load_model(tiny(), mean="104,117,123", input_size=(8, 8)).preprocessing.mean == (104.0, 117.0, 123.0)
    with pytest.raises(ModelError, match="mean file not found"):
        load_model(tiny(), mean="nope.npy")
    with pytest.raises(ModelError, match="scale must be a positive number"):
        load_model(tiny(), scale=0)
    with pytest.raises(ModelError, match="labels file not found"):
        load_model(tiny(), labels=tmp_path / "missing.txt")


def test_weights_state_dict_for_any_model(tmp_path):
    source = tiny()
    torch.save(source.state_dict(), tmp_path / "w.pth")
    model = load_model(tiny(), weights=tmp_path / "w.pth", input_size=(8, 8))
    assert torch.equal(model.net[0].weight, source[0].weight)
    with pytest.raises(ModelError, match="do not fit"):
        load_model(tiny(classes=5), weights=tmp_path / "w.pth")
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(ModelError, match="cannot read weights"):
        load_model(tiny(), weights=tmp_path / "junk.pth")


# ------------------------------------------------------------------------------------------- config files
FACTORY = """
import torch
from torch import nn

def build():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, 3), nn.Softmax(dim=1))
"""


@pytest.fixture
def config_dir(tmp_path):
    (tmp_path / "net.py").write_text(FACTORY)
    (tmp_path / "labels.txt").write_text("cat\ndog\nbird\n")
    np.save(tmp_path / "mean.npy", np.full((3, 32, 32), 0.25, np.float32))
    (tmp_path / "store").mkdir()
    return tmp_path


def write_config(folder: Path, body: str) -> Path:
    path = folder / "model.toml"
    path.write_text('model = "net.py:build"\nlabels = "labels.txt"\n' + body)
    return path


def test_config_file_sets_everything_relative_to_its_folder(config_dir, monkeypatch):
    path = write_config(config_dir, """
store = "store"
prob_layer = "6"
label_layers = ["4", "6"]
hidden_layers = ["1"]
pretty_replace = [["3", "relu2"]]
[pretty_names]
"6" = "prob"
[preprocessing]
input_size = [20, 24]
mean = "mean.npy"
std = 0.5
channel_order = "bgr"
""")
    monkeypatch.chdir(config_dir.parent)  # paths are read from the config's folder, not the working directory
    model = load_model(str(path))
    assert model.spec == str(path) and model.labels == ["cat", "dog", "bird"]
    assert model.preprocessing.input_size == (20, 24) and model.preprocessing.channel_order == "bgr"
    assert model.preprocessing.mean.shape == (3, 32, 32) and model.preprocessing.std == (0.5,)
    assert model.prob_layer == "6" and model.store == str(config_dir / "store")
    assert "1" not in deepvis.default_layers(model) and "3" in deepvis.default_layers(model)
    assert model.pretty_names["3"] == "relu2" and model.pretty_names["6"] == "prob"
    assert deepvis.predict(model, deepvis.sample_images()[0], top=1)[0].label in ("cat", "dog", "bird")
    toolbox = Toolbox(model)
    info = toolbox.info()
    assert info["store"] == str(config_dir / "store") and "1" not in [layer["name"] for layer in info["layers"]]
    assert {layer["name"]: layer["label_layer"] for layer in info["layers"]}["4"] is True
    assert toolbox.input_from_file(0).predictions[0].label in ("cat", "dog", "bird")
    flags = load_model(str(path), input_size=(16, 16), channel_order="rgb", mean="0.5,0.5,0.5", labels=None)
    assert flags.preprocessing.input_size == (16, 16) and flags.preprocessing.mean == (0.5, 0.5, 0.5)


@pytest.mark.parametrize("body, message", [
    ("colour = 1\n", "unknown key 'colour'"),
    ("[preprocessing]\nmaen = [1, 2, 3]\n", "unknown key 'preprocessing.maen'; did you mean 'mean'"),
    ("prob_layer = \"nope\"\n", "prob_layer: unknown layer 'nope'"),
    ("label_layers = \"4\"\n", "'label_layers' must be a list"),
    ("pretty_replace = [[\"a\"]]\n", "pretty_replace"),
    ("[preprocessing]\nmean = \"missing.npy\"\n", "mean file not found"),
    ("[preprocessing]\nscale = -1\n", "scale must be a positive number"),
    ("model = \n", "cannot read model config"),
])
def test_config_errors_name_the_key(config_dir, body, message):
    path = write_config(config_dir, body)
    with pytest.raises(ModelError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load_model(str(path))


@pytest.mark.parametrize("name", ["caffenet-yos", "bvlc-googlenet", "squeezenet"])
def test_shipped_configs_of_the_original_models(name, monkeypatch, tmp_path):
    folder = ROOT / "configs" / name  # the configs' files live beside them (issue 13), the prototxt shipped
    config = read_config(ROOT / "configs" / f"{name}.toml")
    assert config.model.startswith(str(folder)) and config.weights.startswith(str(folder))
    assert config.labels == "imagenet" and config.settings["prob_layer"] == "prob"
    from deepvis.models import imagenet_labels

    if ORIGINAL.is_dir():  # the bundled labels are the original's ilsvrc_2012_labels.txt
        assert imagenet_labels() == (ORIGINAL / "ilsvrc_2012_labels.txt").read_text().split("\n")[:1000]


# --------------------------------------------------------------------------------- torchvision / timm
class _Weights:
    url = "https://download.example/models/tinynet-abc123.pth"
    meta = {"categories": ["a", "b", "c", "d"]}

    @staticmethod
    def transforms():
        return types.SimpleNamespace(crop_size=[40], resize_size=[48], mean=[0.4, 0.5, 0.6], std=[0.2, 0.3, 0.4])


def fake_torchvision() -> types.ModuleType:
    def get_model_builder(name):
        if name != "tinynet":
            raise ValueError(f"Unknown model {name}")
        return lambda weights=None: tiny()

    module = types.ModuleType("torchvision")
    module.models = types.SimpleNamespace(
        get_model_builder=get_model_builder,
        get_model_weights=lambda name: types.SimpleNamespace(DEFAULT=_Weights()))
    return module


def fake_timm() -> types.ModuleType:
    def create_model(name, pretrained=False):
        assert not pretrained  # nothing is ever downloaded
        net = tiny(channels=1, classes=1000)
        net.pretrained_cfg, net.num_classes = {"hf_hub_id": "timm/graynet.test"}, 1000
        return net

    module = types.ModuleType("timm")
    module.is_model = lambda name: name == "graynet"
    module.create_model = create_model
    module.data = types.SimpleNamespace(resolve_data_config=lambda args, model: {
        "input_size": (1, 30, 20), "mean": (0.5,), "std": (0.25,)})
    return module


def test_torchvision_weights_from_the_cache_or_a_file(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torchvision", fake_torchvision())
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(ModelError, match="no weights for 'torchvision:tinynet'.*tinynet-abc123.pth.*--weights"):
        load_model("torchvision:tinynet")
    with pytest.raises(ModelError, match="torchvision has no model 'nonet'"):
        load_model("torchvision:nonet")
    reference = tiny()
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(reference.state_dict(), tmp_path / "hub" / "checkpoints" / "tinynet-abc123.pth")
    model = load_model("torchvision:tinynet")
    assert model.preprocessing.input_size == (40, 40) and model.preprocessing.mean == (0.4, 0.5, 0.6)
    assert model.labels == ["a", "b", "c", "d"] and torch.equal(model.net[0].weight, reference[0].weight)
    torch.save(tiny().state_dict(), tmp_path / "mine.pth")
    mine = load_model("torchvision:tinynet", weights=tmp_path / "mine.pth")
    assert not torch.equal(mine.net[0].weight, reference[0].weight)


def test_timm_weights_from_the_huggingface_cache(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "timm", fake_timm())
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(ModelError, match="no weights for 'timm:graynet'"):
        load_model("timm:graynet")
    with pytest.raises(ModelError, match="timm has no model 'nonet'"):
        load_model("timm:nonet")
    snapshot = tmp_path / "hf" / "models--timm--graynet.test" / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    torch.save(tiny(channels=1, classes=1000).state_dict(), snapshot / "pytorch_model.bin")
    model = load_model("timm:graynet")
    assert model.preprocessing.channel_order == "gray" and model.preprocessing.input_size == (30, 20)
    assert model.labels[285] == "Egyptian cat"


def test_missing_hub_packages_say_so(monkeypatch):
    for package in ("torchvision", "timm"):
        monkeypatch.setitem(sys.modules, package, None)  # as if not installed
        with pytest.raises(ModelError, match=f"needs the {package} package.*pip install {package}"):
            load_model(f"{package}:resnet18")


# ------------------------------------------------------------------------------------------- command line
def test_cli_preprocessing_flags(config_dir, capsys, monkeypatch):
    monkeypatch.chdir(config_dir)
    args = ["predict", "--model", "net.py:build", "--input-size", "20,28", "--channel-order", "bgr", "--scale", "1",
            "--mean", "mean.npy", "--std", "58,57,57", "--labels", "labels.txt", "--json", "--samples", "--top", "1"]
    assert cli.main(args) == 0
    assert '"label": "' in capsys.readouterr().out
    assert cli.main(["layers", "--model", str(write_config(config_dir, "")), "--json"]) == 0


@pytest.mark.parametrize("args, code, named", [
    (["--std", "1,x"], 2, "1,x"),
    (["--scale", "-2"], 2, "-2"),
    (["--channel-order", "rgba"], 2, "rgba"),
    (["--mean", "missing.npy"], 1, "missing.npy"),
    (["--mean", "1,2"], 1, "mean has 2 values"),
    (["--labels", "missing.txt"], 1, "missing.txt"),
    (["--weights", "missing.pth"], 1, "missing.pth"),
    (["--model", "x.toml"], 1, "x.toml"),
    (["--model", "torchvision:resnet18"], 1, "pip install torchvision"),
])
def test_cli_flag_errors_are_one_line(args, code, named, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "torchvision", None)
    spec = [] if "--model" in args else ["--model", "tests_tiny:build"]
    (tmp_path / "tests_tiny.py").write_text(FACTORY)
    with pytest.raises(SystemExit) if code == 2 else _no_exit():
        assert cli.main(["layers", *spec, *args]) == code
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and named in err and "Traceback" not in err


class _no_exit:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# ------------------------------------------------------------------------------------------- Caffe wiring
def test_caffe_prototxt_goes_to_the_caffe_importer(tmp_path):
    pytest.importorskip("deepvis.models.caffe")
    if not ORIGINAL.is_dir():
        pytest.skip("the original prototxts (../shared/data/original-models) are not here")
    with pytest.warns(UserWarning, match="random weights"):  # no --weights: say so, the predictions mean nothing
        model = load_model(str(ORIGINAL / "squeezenet" / "deploy.prototxt"), mean="104,117,123")
    assert model.preprocessing.channel_order == "bgr" and model.preprocessing.value_scale == 255.0
    assert "fire2/squeeze1x1" in model.layer_names()


def test_shipped_configs_name_real_caffe_layers(monkeypatch, tmp_path):
    pytest.importorskip("deepvis.models.caffe")
    if not ORIGINAL.is_dir():
        pytest.skip("the original prototxts (../shared/data/original-models) are not here")
    for name in ("bvlc-googlenet", "squeezenet"):
        folder = tmp_path / name  # the config's folder for its files, as in configs/ (issue 13)
        folder.mkdir(parents=True)
        prototxt = next((ORIGINAL / name).glob("*.prototxt"))
        (folder / prototxt.name).symlink_to(prototxt)
        text = (ROOT / "configs" / f"{name}.toml").read_text()
        config = tmp_path / f"{name}.toml"
        config.write_text("\n".join(line for line in text.splitlines() if not line.startswith("weights")))
        model = load_model(str(config))  # checks every layer the config names
        assert model.prob_layer == "prob" and model.labels[0] == "tench"


def test_caffe_importer_missing_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "deepvis.models.caffe", None)  # as if the importer did not import
    (tmp_path / "deploy.prototxt").write_text('name: "x"\n')
    with pytest.raises(ModelError, match="Caffe importer .deepvis.models.caffe. does not import"):
        load_model(str(tmp_path / "deploy.prototxt"), weights=tmp_path / "x.caffemodel")
    with pytest.raises(ModelError, match="model file not found"):
        load_model(str(tmp_path / "missing.prototxt"))
