"""Layouts on today's families: ViT / DeiT tokens (CLS, distillation, registers, non-square), ConvNeXt's
channels-last MLPs, Swin's NHWC stages; the (C, H, W) view against the raw outputs; units at grid positions and
extra tokens; find-max per feature against brute force; crops, optimize and the live toolbox on them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import deepvis
import zoo
from deepvis import UnitError
from deepvis.models.layouts import Layout, parse_layout

MODELS = {  # factory, input size, {layer: expected description}
    "vit": (zoo.vit, (64, 64), {"patch_embed.proj": "maps 32x4x4", "patch_embed": "tokens 32x4x4",
                                "blocks.0.mlp.fc1": "tokens 64x4x4 +1", "blocks.1": "tokens 32x4x4 +1",
                                "head": "vector 10"}),
    "vit_registers": (zoo.vit_registers, (48, 80), {"blocks.0.mlp.act": "tokens 64x3x5 +5",
                                                    "blocks.1.attn.qkv": "tokens 96x3x5 +5"}),
    "deit": (zoo.deit, (64, 64), {"blocks.1.mlp.fc2": "tokens 32x4x4 +2", "head_dist": "vector 10"}),
    "vit_mha": (zoo.vit_mha, (64, 64), {"blocks.0.attn": "tokens 32x4x4 +1", "blocks.0.mlp.fc1": "tokens 64x4x4 +1"}),
    "convnext": (zoo.convnext, (64, 64), {"stages.0.blocks.0.conv_dw": "maps 16x16x16",
                                          "stages.0.blocks.0.mlp.fc1": "nhwc 64x16x16",
                                          "stages.1.blocks.0.mlp.act": "nhwc 128x8x8",
                                          "stages.1.blocks.0": "maps 32x8x8", "head.fc": "vector 10"}),
    "swin": (zoo.swin, (64, 64), {"patch_embed": "nhwc 16x16x16", "layers.0.blocks.1": "nhwc 16x16x16",
                                  "layers.1.downsample.reduction": "nhwc 32x8x8", "layers.1": "nhwc 32x8x8"}),
}


def load(name: str) -> deepvis.Model:
    factory, size, _ = MODELS[name]
    return deepvis.load_model(factory(), input_size=size)


def raw_outputs(model: deepvis.Model, x: torch.Tensor, layers: list[str]) -> dict[str, torch.Tensor]:
    """The layers' outputs as the network makes them, by plain forward hooks (independent of deepvis)."""
    modules, found = dict(model.net.named_modules()), {}
    handles = [modules[name].register_forward_hook(lambda _m, _i, out, name=name: found.__setitem__(name, out))
               for name in layers]
    try:
        with torch.no_grad():
            model.net(x)
    finally:
        for handle in handles:
            handle.remove()
    return found


@pytest.mark.parametrize("name", list(MODELS))
def test_layouts_of_each_family(name):
    model = load(name)
    infos = {info.name: info for info in model.layers()}
    for layer, expected in MODELS[name][2].items():
        assert infos[layer].describe() == expected, layer
    assert any(info.default for info in infos.values())
    # the view's channels are features, never tokens or rows
    for info in infos.values():
        if info.layout.kind == "tokens":
            assert info.shape[1:] == info.layout.grid and info.raw_shape[1] == info.shape[0]


def test_windowed_attention_mixes_the_batch_and_says_so():
    model = load("swin")
    info = next(i for i in model.layers() if i.name == "layers.0.blocks.0.attn")
    assert not info.batch_first and not info.probeable and not info.default
    with pytest.raises(UnitError, match="mixes the batch"):
        deepvis.layer_info(model, "layers.0.blocks.0.attn")


@pytest.mark.parametrize("name, layer", [("vit_registers", "blocks.0.mlp.fc1"), ("deit", "blocks.1"),
                                         ("convnext", "stages.1.blocks.0.mlp.fc1"), ("swin", "layers.0.blocks.1")])
def test_the_view_reads_the_raw_output(name, layer):
    model = load(name)
    info = deepvis.layer_info(model, layer)
    x = torch.randn(2, 3, *model.preprocessing.input_size, generator=torch.Generator().manual_seed(0))
    raw = raw_outputs(model, x, [layer])[layer]
    with torch.no_grad(), deepvis.Probe(model, [layer]) as probe:
        model.net(x)
    view = probe[layer]
    assert view.shape[1:] == info.shape
    channels, height, width = info.shape
    rng = np.random.default_rng(1)
    for _ in range(20):
        n, c, y, x_pos = 1, int(rng.integers(channels)), int(rng.integers(height)), int(rng.integers(width))
        if info.layout.kind == "nhwc":
            expected = raw[n, y, x_pos, c]
        else:
            expected = raw[n, info.extra_tokens + y * width + x_pos, c]
        assert view[n, c, y, x_pos] == expected
    if info.extra_tokens:
        assert torch.equal(probe.extra[layer], raw[:, :info.extra_tokens].transpose(1, 2))


def test_units_at_grid_positions_and_extra_tokens():
    model = load("vit_registers")
    layer = "blocks.1.mlp.fc1"
    x = torch.randn(1, 3, 48, 80, generator=torch.Generator().manual_seed(2))
    traced = deepvis.trace(model, x, [layer], "gradient")
    for unit, token in (("blocks.1.mlp.fc1:7@cls", 0), ("blocks.1.mlp.fc1:7@t3", 3), ("blocks.1.mlp.fc1:7@2,4", None)):
        got = traced.backward(unit).input_grad
        xr = x.clone().requires_grad_(True)
        found = {}
        handle = dict(model.net.named_modules())[layer].register_forward_hook(
            lambda _m, _i, out: found.__setitem__("out", out))
        model.net(xr)
        handle.remove()
        row = token if token is not None else 5 + 2 * 5 + 4  # 5 extra tokens, then the 3x5 grid row by row
        (expected,) = torch.autograd.grad(found["out"][0, row, 7], xr)
        assert torch.allclose(got, expected, atol=1e-6, rtol=0), unit
        assert got.abs().sum() > 0
    with pytest.raises(UnitError, match="only 5 extra tokens"):
        traced.backward("blocks.1.mlp.fc1:7@t5")
    with pytest.raises(UnitError, match="no extra tokens"):
        deepvis.trace(load("convnext"), torch.zeros(1, 3, 64, 64), ["stages.0.blocks.0.mlp.fc1"]).backward(
            "stages.0.blocks.0.mlp.fc1:1@cls")
    assert str(deepvis.parse_unit("blocks.1.mlp.fc1:7@t0")) == "blocks.1.mlp.fc1:7@cls"


def test_a_config_states_a_layout_detection_cannot_tell(tmp_path):
    model = load("vit")
    assert parse_layout("tokens+1", (4, 4)) == Layout("tokens", (4, 4), 1)
    assert parse_layout("tokens+2 after", (4, 4)) == Layout("tokens", (4, 4), 2, extra_first=False)
    for bad in ("grid", "maps+1", "tokens+x", "nhwc after"):
        with pytest.raises(deepvis.ModelError, match="layout of layer"):
            parse_layout(bad, (4, 4), "some.layer")
    model.layouts = {"patch_embed.proj": "nhwc"}
    model._catalog = None
    assert deepvis.layer_info(model, "patch_embed.proj").describe() == "nhwc 4x32x4"


def _catalog_passes(model) -> tuple[list, list[tuple[int, ...]]]:
    """The layer catalog built afresh, and the input shapes of the forward passes building it took."""
    seen = []
    handle = model.net.register_forward_pre_hook(lambda _m, args: seen.append(tuple(args[0].shape)))
    model._catalog = None
    try:
        return [(i.name, i.layout, i.shape, i.raw_shape) for i in model.layers()], seen
    finally:
        handle.remove()


def test_stated_layouts_spare_the_second_forward_pass(model):
    """The bundled model states every layer's layout: its catalog is built from one forward pass, and equals the
    one found by detection (a second pass at twice the input size). A statement that leaves a layer whose reading
    needs that pass (a 3-D map, a 2-D output beside a patch grid) unstated keeps it; vectors never need it."""
    stated, passes = _catalog_passes(model)
    assert passes == [(1, 3, 224, 224)]
    layouts, model.layouts = model.layouts, {}
    try:
        detected, passes = _catalog_passes(model)
        assert passes == [(1, 3, 224, 224), (1, 3, 448, 448)] and detected == stated
        model.layouts = {name: text for name, text in layouts.items() if name != "blocks.3.depthwise.act"}
        assert _catalog_passes(model) == (detected, [(1, 3, 224, 224), (1, 3, 448, 448)])
    finally:
        model.layouts = layouts
        model._catalog = None
    vit = load("vit")  # stating its token layers is not enough while the patch embedding's conv map is unstated
    tokens = {i.name: "tokens+1" for i in vit.layers() if i.layout.kind == "tokens"}
    vit.layouts = dict(tokens)
    assert len(_catalog_passes(vit)[1]) == 2
    vit.layouts = {**tokens, "patch_embed.proj": "maps"}
    found, passes = _catalog_passes(vit)
    assert len(passes) == 1 and [layout for _, layout, _, _ in found if layout.kind == "tokens"]
    mlp = deepvis.Model(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 5), torch.nn.ReLU()),
                        deepvis.Preprocessing(input_size=(8, 8)))
    assert _catalog_passes(mlp)[1] == [(1, 3, 8, 8)]  # vectors only: nothing to read from growth


# ------------------------------------------------------------------------------------------------ find-max and on
@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Real photos (scikit-image), small crops of them at several places."""
    data = pytest.importorskip("skimage.data")
    folder = tmp_path_factory.mktemp("photos")
    for name in ("chelsea", "coffee", "astronaut", "rocket", "camera", "coins"):
        image = Image.fromarray(np.asarray(getattr(data, name)())).convert("RGB")
        for i, box in enumerate(((0, 0, 200, 200), (100, 50, 300, 250), (50, 100, 250, 300))):
            image.crop(box).resize((96, 96)).save(folder / f"{name}_{i}.png")
    return folder


@pytest.mark.parametrize("name, layer", [("vit_registers", "blocks.0.mlp.fc1"), ("convnext", "stages.1.blocks.0.mlp.act")])
def test_find_max_keeps_one_row_per_feature_equal_to_brute_force(name, layer, photos, tmp_path):
    from deepvis.jobs.findmax import find_max

    model = load(name)
    info = deepvis.layer_info(model, layer)
    _, files = deepvis.pixels.images.find_images(photos)
    x = torch.stack([model.preprocessing.to_tensor(deepvis.load_image(f)) for f in files])
    raw = raw_outputs(model, x, [layer])[layer]
    if info.layout.kind == "tokens":  # features on the patch grid; extra tokens have no place on it
        features = raw[:, info.extra_tokens:, :].transpose(1, 2)  # (N, D, gh*gw)
    else:
        features = raw.flatten(1, 2).transpose(1, 2)  # nhwc: (N, C, H*W)
    width = info.shape[2]
    for batch in (1, 7):
        store = find_max(model, photos, tmp_path / f"store{batch}", layers=[layer], k=4, batch_size=batch,
                         progress=False)
        top = store.read_topk(layer)
        assert top["values"].shape == (info.channels, 4)
        for channel in range(0, info.channels, 5):
            best, where = features[:, channel].max(dim=1)
            order = sorted(range(len(files)), key=lambda i: (-float(best[i]), i))[:4]
            assert top["images"][channel].tolist() == order
            assert np.allclose(top["values"][channel], best[order].numpy(), atol=1e-5)
            assert top["y"][channel].tolist() == [int(where[i]) // width for i in order]
            assert top["x"][channel].tolist() == [int(where[i]) % width for i in order]


@pytest.mark.slow
def test_crops_optimize_and_the_toolbox_on_a_vit(photos, tmp_path):
    from deepvis.jobs.crops import make_crops
    from deepvis.jobs.findmax import find_max
    from deepvis.apps.server.session import Toolbox, ViewRequest

    model = load("vit")
    layers = ["blocks.0.attn.qkv", "blocks.1.mlp.act"]  # before attention: one patch; after: the whole input
    store = find_max(model, photos, tmp_path / "store", layers=layers, k=3, progress=False)
    fields = {name: store.read_manifest().layers[name].receptive_field for name in layers}
    assert fields == {"blocks.0.attn.qkv": {"size": 16, "stride": 16, "offset": [0, 0]}, "blocks.1.mlp.act": None}
    make_crops(model, store.root, layers=layers, kinds=("image", "guided"), channels=range(2), progress=False)
    crop = store.unit_crop("blocks.0.attn.qkv", 1, "image", 0)
    assert crop.size == (32, 32)  # the 16-px patch, in context (fields under 32 px get 32 px around them)
    # after attention every unit sees the whole input: the crop is its effective field, where most of its
    # input gradient lies (measured on the scanned images)
    from deepvis.jobs.crops import _effective_field, _Inputs

    files = [Path(store.read_manifest().image_root) / name for name in store.read_image_list()]
    effective = _effective_field(model, _Inputs(model, files), "blocks.1.mlp.act", None, [64, 4, 4])
    side = effective.size[0]
    assert 8 < side < 64 and effective.size[0] == effective.size[1]
    assert store.unit_crop("blocks.1.mlp.act", 1, "guided", 0).size == (side, side)
    # optimize a token feature at a grid position: the objective rises
    result = deepvis.optimize(model, "blocks.1.mlp.fc1:3@1,2", "paper", max_iter=30)[0]
    objective = [v for v in result.record["obj"] if v is not None]
    assert objective[-1] > objective[0]
    with pytest.raises(UnitError, match="extra token"):
        deepvis.optimize(model, "blocks.1.mlp.fc1:3@cls", "paper", max_iter=2)
    # the live toolbox: a token layer is a grid of feature tiles on the patch grid
    toolbox = Toolbox(load("vit"))
    item = toolbox.input_from_file(0) if toolbox.image_files else toolbox.input_from_bytes(
        (photos / "chelsea_0.png").read_bytes(), "chelsea")
    data = toolbox.view(ViewRequest(item.id, "blocks.1.mlp.act", 5, cursor="grid", back_mode="guided"))
    assert (data["grid"]["tile_h"], data["grid"]["tile_w"]) == (4, 4) and len(data["values"]) == 64
    assert data["back"] is not None and data["unit"]["unit"] == "blocks.1.mlp.act:5"


@pytest.mark.slow
def test_a_vit_layer_shows_256_tiles_of_14x14(skimage_pngs):
    from deepvis.apps.server.session import Toolbox, ViewRequest

    toolbox = Toolbox(deepvis.load_model(zoo.vit_base_shape()), layers=["blocks.1.mlp.fc2"])  # not a default: asked
    item = toolbox.input_from_bytes(skimage_pngs["chelsea"].read_bytes(), "chelsea")
    data = toolbox.view(ViewRequest(item.id, "blocks.1.mlp.fc2", 0, cursor="grid"))
    assert len(data["values"]) == 256 and (data["grid"]["tile_h"], data["grid"]["tile_w"]) == (14, 14)
    assert data["grid"]["rows"] * data["grid"]["cols"] >= 256


def test_effective_fields_lie_inside_the_theoretical_ones(model):
    """On the bundled CNN the effective field (90% of the input-gradient mass of real photos) is smaller than the
    theoretical one, centred near the unit; on a ViT before attention it is the unit's patch."""
    from deepvis.engine.receptive_field import effective_receptive_fields, receptive_fields

    layers = ["blocks.3", "blocks.8", "blocks.12"]
    photos = torch.cat([model.input(path) for path in deepvis.sample_images()])
    effective = effective_receptive_fields(model, layers + ["classifier"], photos)
    theoretical = receptive_fields(model, layers)
    assert effective["classifier"] is None
    sizes = []
    for layer in layers:
        field, seen = theoretical[layer], effective[layer]
        assert seen.stride == field.stride
        assert seen.size[0] <= field.size[0] and seen.size[1] <= field.size[1]
        # centres agree within a stride: unit (y, x)'s boxes overlap around the same place
        centre = [o + s / 2 for o, s in zip(seen.offset, seen.size)]
        expected = [o + s / 2 for o, s in zip(field.offset, field.size)]
        assert all(abs(a - b) <= s for a, b, s in zip(centre, expected, field.stride))
        sizes.append(seen.size[0])
    assert sizes == sorted(sizes) and sizes[-1] < 224  # growing with depth, inside the input
    vit = load("vit")
    patch = effective_receptive_fields(vit, ["blocks.0.attn.qkv"], torch.randn(4, 3, 64, 64))["blocks.0.attn.qkv"]
    assert abs(patch.size[0] - 16) <= 1 and patch.stride == (16, 16)


# ------------------------------------------------------------------------------------------------ every entry point
FAMILIES = [("vit", "blocks.1.mlp.act:3@1,2", "64"), ("vit_registers", "blocks.0:5@t2", "48,80"),
            ("deit", "blocks.1.mlp.fc1:2@cls", "64"), ("convnext", "stages.1.blocks.0.mlp.act:7@3,3", "64"),
            ("swin", "layers.1.blocks.0.mlp.fc1:4@2,5", "64")]


@pytest.mark.parametrize("name, unit, size", FAMILIES)
def test_predict_layers_and_backprop_from_the_command_line(name, unit, size, skimage_pngs, tmp_path, capsys):
    from deepvis.apps import cli

    spec = f"{zoo.__file__}:{name}"
    image = str(skimage_pngs["chelsea"])
    assert cli.main(["predict", image, "--model", spec, "--input-size", size, "--json", "--top", "3"]) == 0
    top = __import__("json").loads(capsys.readouterr().out)[0]["top"]
    probs = [p["prob"] for p in top]
    assert len(top) == 3 and probs == sorted(probs, reverse=True) and 0 < probs[-1] and probs[0] < 1
    assert cli.main(["layers", "--model", spec, "--input-size", size]) == 0
    listing = capsys.readouterr().out
    model = load(name)
    for layer, description in MODELS[name][2].items():
        if deepvis.layer_info(model, layer).default:
            line = next(line for line in listing.splitlines() if line.startswith(f"{layer} "))
            assert description in line, line
    for mode in ("gradient", "guided"):
        out = tmp_path / f"{mode}.png"
        assert cli.main(["backprop", image, "--model", spec, "--input-size", size, "--unit", unit, "--mode", mode,
                         "-o", str(out)]) == 0
        assert Image.open(out).size == tuple(reversed(load(name).preprocessing.input_size))
    captured = capsys.readouterr()
    assert "no rectifier" in captured.out  # GELU networks: guided equals the gradient, and it says so


def test_timm_specs_read_the_same_layouts(monkeypatch, tmp_path):
    """The ``timm:`` spec (a stand-in package, as timm does not import beside this torch) gives the same catalog."""
    import sys
    import types

    def create_model(name, pretrained=False):
        net = {"vit_small_reg4_test": zoo.vit_registers, "convnext_test": zoo.convnext}[name]()
        net.pretrained_cfg, net.num_classes = {"hf_hub_id": f"timm/{name}"}, 10
        return net

    sizes = {"vit_small_reg4_test": (3, 48, 80), "convnext_test": (3, 64, 64)}
    fake = types.ModuleType("timm")
    fake.is_model = lambda name: name in sizes
    fake.create_model = create_model
    fake.data = types.SimpleNamespace(resolve_data_config=lambda args, model: {
        "input_size": sizes[model.pretrained_cfg["hf_hub_id"][5:]], "mean": (0.5,) * 3, "std": (0.5,) * 3})
    monkeypatch.setitem(sys.modules, "timm", fake)
    for name, reference in (("vit_small_reg4_test", "vit_registers"), ("convnext_test", "convnext")):
        weights = tmp_path / f"{name}.pth"
        torch.save(MODELS[reference][0]().state_dict(), weights)
        model = deepvis.load_model(f"timm:{name}", weights=weights)
        assert model.preprocessing.input_size == MODELS[reference][1]
        got = {info.name: info.describe() for info in model.layers()}
        assert {layer: got[layer] for layer in MODELS[reference][2]} == MODELS[reference][2]
