"""The store: one owner of every file name (a layer named with '~' end to end, from find-max to the browser's
URLs), the typed manifest and its format check, and crops' default kinds by max pooling."""

from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import deepvis
from deepvis.crops import default_kinds, has_max_pooling, make_crops
from deepvis.errors import DeepvisError
from deepvis.findmax import find_max
from deepvis.store import FORMAT_VERSION, Manifest, Store

pytestmark = pytest.mark.usefixtures("single_thread_torch")
JPEG_MAGIC = b"\xff\xd8\xff"


class TildeNet(nn.Module):
    """A small net with max pooling whose first layer's name holds a '~' (Python's quote and JavaScript's
    encodeURIComponent disagree about it)."""

    def __init__(self):
        super().__init__()
        self.add_module("conv~1", nn.Conv2d(3, 4, 3, padding=1))
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(4 * 16 * 16, 5)

    def forward(self, x):
        x = self.pool(self.relu(getattr(self, "conv~1")(x)))
        return self.fc(x.flatten(1))


class NoPoolNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2)
        self.fc = nn.Linear(4, 5)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for n in range(4):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(folder / f"{n}.png")
    return folder


def _tiny(net: nn.Module):
    torch.manual_seed(0)
    return deepvis.load_model(net, input_size=(32, 32))


@contextlib.contextmanager
def _served(app, serving):
    """The app behind a real uvicorn server and an httpx client for it (Starlette's TestClient decodes a path
    twice, so it cannot fetch a file whose name holds a percent sign)."""
    import httpx

    with serving(app) as (host, port), httpx.Client(base_url=f"http://{host}:{port}", timeout=30) as client:
        yield client


def test_a_layer_named_with_a_tilde_is_served_by_the_urls_the_server_gives(tmp_path, images, serving):
    from deepvis.server.app import create_app
    from deepvis.server.session import Toolbox

    model = _tiny(TildeNet())
    out = tmp_path / "store"
    find_max(model, images, out, layers=["conv~1"], k=2, progress=False)
    make_crops(model, out, channels=range(0, 2), progress=False)
    store = Store(out)
    assert store.unit_file("conv~1", 0, "deconv", 0).is_file()  # with max pooling: deconv by default
    assert store.unit_file("conv~1", 0, "image").parent.parent.name == "conv%7E1"
    with _served(create_app(Toolbox(model, store=out)), serving) as client:
        unit = client.get("/api/unit", params={"layer": "conv~1", "channel": "0"}).json()
        assert set(unit["images"]) == {"images", "deconv"} and unit["hint"] is None
        assert set(unit["sprites"]) == {"image", "deconv"} and unit["sprite"] == unit["sprites"]["image"]
        layer = client.get("/api/layer", params={"layer": "conv~1"}).json()
        assert layer["sprite"] == unit["sprite"] and layer["sprites"] == unit["sprites"]
        for url in [*unit["images"].values(), *unit["sprites"].values()]:
            response = client.get(url)
            assert response.status_code == 200, url
            assert response.headers["content-type"] == "image/jpeg" and response.content.startswith(JPEG_MAGIC)
        assert client.get("/api/layer", params={"layer": "no.such"}).status_code == 400


def test_crops_default_kinds_follow_max_pooling(tmp_path, images):
    pooled = _tiny(TildeNet())
    assert has_max_pooling(pooled) and default_kinds(pooled) == ("image", "deconv")
    plain = _tiny(NoPoolNet())
    assert not has_max_pooling(plain) and default_kinds(plain) == ("image", "guided")
    find_max(plain, images, tmp_path / "s", layers=["conv"], k=2, progress=False)
    store = make_crops(plain, tmp_path / "s", channels=range(0, 1), progress=False)
    assert store.unit_file("conv", 0, "guided", 0).is_file() and not store.unit_file("conv", 0, "deconv").exists()
    make_crops(plain, tmp_path / "s", kinds=("deconv",), channels=range(0, 1), progress=False)  # still on demand
    assert store.unit_file("conv", 0, "deconv").is_file() and store.sprite_path("conv", "deconv").is_file()


class FunctionalPool(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return nn.functional.max_pool2d(self.conv(x), 2)


def test_max_pooling_seen_in_a_forward_pass():
    assert has_max_pooling(_tiny(FunctionalPool()))


def test_default_model_crops_guided_not_deconv():
    model = deepvis.load_model()
    assert not has_max_pooling(model) and default_kinds(model) == ("image", "guided")


@pytest.mark.parametrize("pool", ["MAX", "AVE"])
def test_caffe_pooling_is_seen_by_its_method(tmp_path, pool):
    proto = tmp_path / "net.prototxt"
    proto.write_text('input: "data"\ninput_shape { dim: 1 dim: 3 dim: 16 dim: 16 }\n'
                     'layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" '
                     'convolution_param { num_output: 4 kernel_size: 3 } }\n'
                     'layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" '
                     f'pooling_param {{ pool: {pool} kernel_size: 2 stride: 2 }} }}\n')
    with pytest.warns(UserWarning, match="random weights"):
        model = deepvis.load_model(proto)
    assert has_max_pooling(model) == (pool == "MAX")


# ------------------------------------------------------------------------------------------------ manifest
def _manifest() -> Manifest:
    from deepvis.store import LayerRecord, SkippedImage

    return Manifest(model="m.py:build", weights_sha256="abc", preprocessing={"input_size": [32, 32]},
                    image_root="/images", images=3, k=2,
                    layers={"conv~1": LayerRecord(4, [4, 32, 32], {"size": [3, 3]}), "fc": LayerRecord(5, [5])},
                    skipped=[SkippedImage(2, "bad.jpg", "not an image")], config={"k": 2}, provenance={"seed": 0})


def test_manifest_round_trips_with_the_version_1_keys(tmp_path):
    store = Store(tmp_path)
    store.write_manifest(_manifest())
    data = json.loads(store.manifest_path.read_text())
    assert list(data) == ["format", "model", "weights_sha256", "preprocessing", "image_root", "images", "k",
                          "layers", "skipped", "config", "provenance"]
    assert data["format"] == FORMAT_VERSION == 1
    assert data["layers"]["fc"] == {"channels": 5, "shape": [5], "receptive_field": None}
    assert data["skipped"] == [{"index": 2, "path": "bad.jpg", "reason": "not an image"}]
    assert store.read_manifest() == _manifest()
    assert store.read_manifest().input_size == (32, 32)


def test_a_newer_or_damaged_manifest_is_a_clear_error(tmp_path):
    store = Store(tmp_path)
    data = _manifest().to_json()
    store.manifest_path.write_text(json.dumps({**data, "format": FORMAT_VERSION + 1}))
    with pytest.raises(DeepvisError, match="newer deepvis"):
        store.read_manifest()
    store.manifest_path.write_text(json.dumps({k: v for k, v in data.items() if k != "layers"}))
    with pytest.raises(DeepvisError, match="damaged"):
        store.read_manifest()


def test_url_is_quoted_once_and_names_every_file(tmp_path):
    store = Store(tmp_path)
    assert store.url(store.unit_file("a~b/c d", 3, "guided", 1)) == "a%257Eb%252Fc%2520d/0003/guided_01.jpg"
    assert store.url(store.optimized_file("fc", 7, 2)) == "fc/0007/optimized_02.png"
    assert store.checkpoint(1, 4).name == ".find-max-checkpoint-1-of-4.pt"
    with pytest.raises(DeepvisError):
        store.unit_file("fc", 0, "optimized")
