"""The store: one owner of every file name (a layer named with '~' end to end, from find-max to the browser's
URLs), the typed manifest and its format check, and crops' default kinds by max pooling."""

from __future__ import annotations

import contextlib
import io
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import deepvis
from deepvis.jobs.crops import default_kinds, has_max_pooling, make_crops
from deepvis.core.errors import DeepvisError
from deepvis.jobs.findmax import find_max
from deepvis.store import FORMAT_VERSION, Manifest, Store

import zoo

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


@pytest.fixture
def images(noise_pngs):
    return noise_pngs


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
    from deepvis.apps.server.app import create_app
    from deepvis.apps.server.session import Toolbox

    model = _tiny(TildeNet())
    out = tmp_path / "store"
    find_max(model, images, out, layers=["conv~1"], k=2, progress=False)
    make_crops(model, out, channels=range(0, 2), progress=False)
    store = Store(out)
    assert store.unit_crop("conv~1", 0, "deconv", 0) is not None  # with max pooling: deconv by default
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
    plain = _tiny(zoo.ConvMeanFC())
    assert not has_max_pooling(plain) and default_kinds(plain) == ("image", "guided")
    find_max(plain, images, tmp_path / "s", layers=["conv"], k=2, progress=False)
    store = make_crops(plain, tmp_path / "s", channels=range(0, 1), progress=False).store
    assert store.unit_crop("conv", 0, "guided", 0) is not None and not store.unit_file("conv", 0, "deconv").exists()
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
    assert store.url(store.unit_file("a~b/c d", 3, "guided")) == "a%257Eb%252Fc%2520d/0003/guided.jpg"
    assert store.url(store.optimized_file("fc", 7, 2)) == "fc/0007/optimized_02.png"
    assert store.checkpoint(1, 4).name == ".find-max-checkpoint-1-of-4.pt"
    with pytest.raises(DeepvisError):
        store.unit_file("fc", 0, "optimized")


def _crops_store(tmp_path, images, kinds=("image", "guided")):
    model = _tiny(zoo.ConvMeanFC())
    find_max(model, images, tmp_path / "s", layers=["conv"], k=3, progress=False)
    return model, make_crops(model, tmp_path / "s", kinds=kinds, channels=range(0, 2), progress=False).store


def test_one_picture_file_per_unit_and_kind_each_rank_cut_from_it(tmp_path, images, monkeypatch):
    from deepvis.jobs.crops import writer as crops
    from deepvis.pixels import render

    rendered = {}
    write_unit = crops._write_unit

    def spy(store, layer, channel, pictures, ranks, *rest, **options):  # the pictures as rendered, before any JPEG
        rendered[channel] = (pictures, ranks)
        return write_unit(store, layer, channel, pictures, ranks, *rest, **options)

    monkeypatch.setattr(crops, "_write_unit", spy)
    _, store = _crops_store(tmp_path, images)
    assert sorted(rendered) == [0, 1]
    for channel, (pictures, ranks) in rendered.items():
        assert ranks == [0, 1, 2]
        assert sorted(p.name for p in store.unit_dir("conv", channel).iterdir()) == ["crops.json", "guided.jpg",
                                                                                     "image.jpg"]
        assert store.crop_ranks("conv", channel) == {"guided": ranks, "image": ranks}
        for kind, by_rank in pictures.items():
            cut = store.unit_crops("conv", channel, kind)
            assert sorted(cut) == ranks
            for rank, picture in zip(ranks, by_rank):
                got = np.asarray(cut[rank], np.float32) / 255
                assert got.shape == picture.shape == (32, 32, 3)
                buffer = io.BytesIO()  # what a rank's own file held before: a JPEG of the picture alone
                render.to_pil(picture).save(buffer, format="JPEG", quality=90)
                alone = np.asarray(Image.open(buffer), np.float32) / 255
                assert np.abs(got - picture).mean() <= np.abs(alone - picture).mean() + 0.002  # as close as that
                assert np.array_equal(np.asarray(store.unit_crop("conv", channel, kind, rank)), np.asarray(cut[rank]))
        assert store.unit_crop("conv", channel, "image", 3) is None  # k = 3
        assert store.unit_crop("conv", channel, "deconv", 0) is None  # a kind not made
    # the sprite takes the units' best pictures as made (in memory): as when read back from the montages
    with Image.open(store.sprite_path("conv", "image")) as sprite:
        made = np.asarray(sprite, np.float32)
    with Image.open(store.write_sprite("conv", 4, "image", [0, 1])) as sprite:
        again = np.asarray(sprite, np.float32)
    assert made[:64].std() > 20 and np.abs(made - again).mean() < 4  # JPEG


def test_a_run_reads_each_units_record_once_and_makes_sprite_tiles_only_for_the_units_kept(tmp_path, images,
                                                                                          monkeypatch):
    from collections import Counter

    from deepvis.jobs.crops import writer as crops

    model, store = _crops_store(tmp_path, images)
    with Image.open(store.sprite_path("conv", "image")) as sprite:
        before = np.asarray(sprite, np.float32)
    reads, tiles = Counter(), []
    read, tile = Store._read_json, crops.sprite_tile

    def counted(path):  # the crops records read, by channel
        if os.path.basename(path) == "crops.json":
            reads.update([int(os.path.basename(os.path.dirname(path)))])
        return read(path)

    monkeypatch.setattr(Store, "_read_json", staticmethod(counted))
    monkeypatch.setattr(crops, "sprite_tile", lambda picture: tiles.append(1) or tile(picture))
    make_crops(model, store.root, kinds=("image", "guided"), channels=range(0, 2), force=True, progress=False)
    assert reads == {0: 1, 1: 1}  # the todo scan's read serves the writer and the sprites (channels 2, 3: no folder)
    assert len(tiles) == 4
    tiles.clear()
    monkeypatch.setattr(crops, "SPRITE_TILES_KEPT", 1)
    make_crops(model, store.root, kinds=("image", "guided"), channels=range(0, 2), force=True, progress=False)
    assert len(tiles) == 2  # one unit's tiles (image, guided) kept in memory; the sprites read the other's back
    with Image.open(store.sprite_path("conv", "image")) as sprite:
        after = np.asarray(sprite, np.float32)
    assert before[:64, :128].std() > 20 and np.abs(after - before).mean() < 4  # JPEG


def _to_earlier_layout(store: Store, layer: str, channel: int, colours) -> None:
    """A unit as earlier deepvis versions wrote it: a file per rank and kind beside the montages, no tiles in the
    record. Each rank's file a flat colour here, to tell it from the montage's tile."""
    record = store.read_crops_record(layer, channel)
    for kind in record["kinds"]:
        for rank, crop in store.unit_crops(layer, channel, kind).items():
            Image.new("RGB", crop.size, colours[rank]).save(store.unit_dir(layer, channel) / f"{kind}_{rank:02d}.jpg")
    del record["tiles"]
    store.crops_record_path(layer, channel).write_text(json.dumps(record))


def test_a_unit_of_the_earlier_layout_reads_by_rank_and_a_rewrite_leaves_no_rank_file(tmp_path, images):
    from deepvis.jobs.export import export_site

    model, store = _crops_store(tmp_path, images)
    colours = [(250, 0, 0), (0, 250, 0), (0, 0, 250)]
    _to_earlier_layout(store, "conv", 0, colours)
    assert store.crop_ranks("conv", 0) == {"guided": [0, 1, 2], "image": [0, 1, 2]}
    for rank, colour in enumerate(colours):
        assert np.abs(np.asarray(store.unit_crop("conv", 0, "guided", rank), int) - colour).max() < 10  # JPEG
    # the export's per-rank site files and the sprites read both layouts
    export_site(store, tmp_path / "site", progress=False)
    with Image.open(tmp_path / "site/conv/0/image_01.jpg") as earlier:
        assert np.abs(np.asarray(earlier, int) - colours[1]).max() < 10
    with Image.open(tmp_path / "site/conv/1/image_01.jpg") as current:
        expected = np.asarray(store.unit_crop("conv", 1, "image", 1), np.float32)
        assert np.abs(np.asarray(current, np.float32) - expected).mean() < 20  # JPEG of noise, twice
    sprite_path = store.write_sprite("conv", 4, "image", [0, 1])
    with Image.open(sprite_path) as sprite:
        tiles = np.asarray(sprite, np.float32).reshape(2, 64, 2, 64, 3)  # channels 0, 1 in the first row
    assert np.abs(tiles[0, 8:-8, 0, 8:-8] - colours[0]).max() < 12  # rank 0's file
    tile = np.asarray(store.unit_crop("conv", 1, "image", 0).resize((64, 64), Image.BILINEAR), np.float32)
    assert np.abs(tiles[0, :, 1] - tile).mean() < 8
    # remaking one kind replaces its rank files by its montage; the other kind (same top-k) is kept as it was
    make_crops(model, store.root, kinds=("image",), channels=range(0, 1), force=True, progress=False)
    names = sorted(p.name for p in store.unit_dir("conv", 0).iterdir())
    assert names == ["crops.json", "guided.jpg", "guided_00.jpg", "guided_01.jpg", "guided_02.jpg", "image.jpg"]
    assert store.read_crops_record("conv", 0)["kinds"] == ["guided", "image"]
    assert np.abs(np.asarray(store.unit_crop("conv", 0, "guided", 2), int) - colours[2]).max() < 10
    assert np.abs(np.asarray(store.unit_crop("conv", 0, "image", 2), int) - colours[2]).max() > 50  # cut, new
    make_crops(model, store.root, kinds=("image", "guided"), channels=range(0, 1), force=True, progress=False)
    assert sorted(p.name for p in store.unit_dir("conv", 0).iterdir()) == ["crops.json", "guided.jpg", "image.jpg"]
    _to_earlier_layout(store, "conv", 1, colours)
    assert store.remove_crops("conv", 1) and sorted(p.name for p in store.unit_dir("conv", 1).iterdir()) == []


def test_a_unit_rewrite_keeps_what_it_may_and_a_killed_one_loses_nothing_else(tmp_path, monkeypatch):
    """Rewriting a unit's crops: other kinds of the same top-k are kept, those of another top-k go, an earlier
    deepvis's per-rank files go with their kind. A run killed part way leaves no record describing pictures not
    on disk, and the kinds it was not remaking stay recorded (a rerun does not have to make them again)."""
    from deepvis.store import crops as store_module

    store = Store(tmp_path)
    write = store_module.atomic_write_bytes

    def rewrite(kinds, topk="a"):
        store.write_crops("conv", 0, {kind: kind.encode() for kind in kinds}, {kind: [[0, 0, 4, 4]] for kind in kinds},
                          {"topk": topk, "basis": "b", "network": "n"})
        return sorted(p.name for p in store.unit_dir("conv", 0).iterdir())

    assert rewrite(["image", "guided"]) == ["crops.json", "guided.jpg", "image.jpg"]
    assert rewrite(["image", "deconv"], topk="b") == ["crops.json", "deconv.jpg", "image.jpg"]  # another top-k
    assert rewrite(["guided"], topk="b") == ["crops.json", "deconv.jpg", "guided.jpg", "image.jpg"]  # same: kept
    assert store.read_crops_record("conv", 0)["kinds"] == ["deconv", "guided", "image"]

    def killed(path, data, durable=True):  # a run killed while writing the unit's image montage
        if os.path.basename(path) == "image.jpg":
            raise KeyboardInterrupt
        write(path, data, durable)

    monkeypatch.setattr(store_module, "atomic_write_bytes", killed)
    with pytest.raises(KeyboardInterrupt):
        rewrite(["gradient", "image"], topk="b")  # same top-k: deconv and guided are not being remade
    record = store.read_crops_record("conv", 0)
    assert record["kinds"] == ["deconv", "guided"] and set(record["tiles"]) == {"deconv", "guided"}
    assert {"deconv.jpg", "guided.jpg"} <= {p.name for p in store.unit_dir("conv", 0).iterdir()}
    with pytest.raises(KeyboardInterrupt):
        rewrite(["image"], topk="c")  # another top-k: nothing to keep
    assert store.read_crops_record("conv", 0) is None  # no record describing pictures that are not there
    monkeypatch.setattr(store_module, "atomic_write_bytes", write)
    assert rewrite(["image"], topk="c") == ["crops.json", "image.jpg"]  # the killed run's leftovers go
    (store.unit_dir("conv", 0) / "guided_01.jpg").write_bytes(b"x")  # an earlier deepvis's per-rank file...
    record = store.read_crops_record("conv", 0)
    store.crops_record_path("conv", 0).write_text(json.dumps({**record, "tiles": {}, "kinds": ["guided", "image"]}))
    assert rewrite(["image"], topk="c") == ["crops.json", "guided_01.jpg", "image.jpg"]  # ...kept: same top-k
    assert rewrite(["image"], topk="d") == ["crops.json", "image.jpg"]



def test_atomic_writes_from_many_threads_leave_whole_files_with_the_usual_permissions(tmp_path):
    import os
    import stat
    from concurrent.futures import ThreadPoolExecutor

    from deepvis.store import atomic_write_bytes

    umask = os.umask(0o022)
    try:
        payloads = {tmp_path / "new" / f"f{n % 8}.bin": bytes([n % 8]) * 4096 for n in range(64)}
        with ThreadPoolExecutor(8) as pool:  # 8 files, each written 8 times at once from different threads
            list(pool.map(lambda n: atomic_write_bytes(tmp_path / "new" / f"f{n % 8}.bin", bytes([n % 8]) * 4096,
                                                       durable=n % 2 == 0), range(64)))
    finally:
        os.umask(umask)
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == sorted(p.name for p in payloads)  # no temp left
    for path, data in payloads.items():
        assert path.read_bytes() == data
        assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_an_atomic_write_steps_over_a_temporary_file_a_killed_run_left(tmp_path, monkeypatch):
    import itertools

    from deepvis.core import files as store_module

    monkeypatch.setattr(store_module, "_TEMPORARY_NUMBERS", itertools.count())
    first = next(itertools.count())  # the name this process's next write would take: as a killed run left it
    left = tmp_path / f".x.bin.{__import__('os').getpid()}-{__import__('threading').get_ident()}-{first}.tmp"
    left.write_bytes(b"half")
    store_module.atomic_write_bytes(tmp_path / "x.bin", b"whole", durable=False)
    assert (tmp_path / "x.bin").read_bytes() == b"whole" and left.read_bytes() == b"half"


def test_a_rerun_with_nothing_to_do_keeps_the_sprites_and_a_missing_one_is_made_again(tmp_path, images):
    model, store = _crops_store(tmp_path, images)
    stamps = {kind: store.sprite_path("conv", kind).stat().st_mtime_ns for kind in ("image", "guided")}
    made_from = store.read_sprites_record("conv")
    assert set(made_from) == {"image", "guided"} and made_from["image"]["made_from"]
    make_crops(model, store.root, kinds=("image", "guided"), channels=range(0, 2), progress=False)  # all current
    assert {kind: store.sprite_path("conv", kind).stat().st_mtime_ns for kind in stamps} == stamps
    store.sprite_path("conv", "guided").unlink()
    make_crops(model, store.root, kinds=("image", "guided"), channels=range(0, 2), progress=False)
    assert store.sprite_path("conv", "guided").is_file()
    assert store.sprite_path("conv", "image").stat().st_mtime_ns == stamps["image"]
    make_crops(model, store.root, kinds=("image", "guided"), channels=range(0, 3), progress=False)  # a new unit
    assert store.sprite_path("conv", "image").stat().st_mtime_ns != stamps["image"]
    assert store.read_sprites_record("conv")["image"]["made_from"] != made_from["image"]["made_from"]
