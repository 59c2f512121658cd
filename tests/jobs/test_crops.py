"""Crops from a find-max store: boxes, padding, backward images inside the field, montages, sprites, skipping."""

import numpy as np
import pytest
import torch
from PIL import Image

import deepvis
import deepvis.jobs.crops.plan as crops_module
from deepvis.jobs.crops import crop_box, make_crops, unit_box
from deepvis.jobs.findmax import find_max
from deepvis.engine.receptive_field import ReceptiveField, field_from_json

skimage_data = pytest.importorskip("skimage.data")


def test_crop_box_pads_outside_the_image():
    a = np.arange(5 * 6 * 3, dtype=np.float32).reshape(5, 6, 3) + 1
    out = crop_box(a, (-2, 4, 3, 9))
    assert out.shape == (5, 5, 3)
    assert np.all(out[:2] == 0) and np.all(out[:, 2:] == 0)
    assert np.array_equal(out[2:, :2], a[0:3, 4:6])


def test_unit_box_from_field():
    field = ReceptiveField((35, 35), (8, 8), offset=(-10, -10))
    assert unit_box(field, 5, 7, (112, 112)) == (30, 46, 65, 81)
    assert unit_box(None, -1, -1, (112, 96)) == (0, 0, 112, 96)
    assert unit_box(ReceptiveField((300, 300), (32, 32)), 1, 1, (224, 224)) == (0, 0, 224, 224)
    assert field_from_json(field.to_json()) == field


@pytest.mark.slow
def test_crops_of_a_small_store(tmp_path):
    model = deepvis.load_model(input_size=(112, 112))
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("chelsea", "coffee", "astronaut", "rocket"):
        Image.fromarray(getattr(skimage_data, name)()).save(folder / f"{name}.png")
    store = find_max(model, folder, tmp_path / "store", layers=["blocks.3", "classifier"], k=2, progress=False)
    make_crops(model, store.root, layers=["blocks.3"], kinds=("image", "guided"), channels=range(0, 3),
               progress=False)
    make_crops(model, store.root, layers=["classifier"], kinds=("image",), channels=range(285, 286), progress=False)
    top = store.read_topk("blocks.3")
    field = field_from_json(store.read_manifest().layers["blocks.3"].receptive_field)
    files = store.read_image_list()
    for channel in range(3):
        unit = store.unit_dir("blocks.3", channel)
        for rank in range(2):
            image = np.asarray(store.unit_crop("blocks.3", channel, "image", rank), np.float32) / 255
            fitted = np.asarray(model.preprocessing.fit(deepvis.load_image(folder / files[top["images"][channel, rank]])),
                                np.float32) / 255
            expected = crop_box(fitted, unit_box(field, top["y"][channel, rank], top["x"][channel, rank], (112, 112)))
            assert image.shape == expected.shape == (35, 35, 3)
            assert np.abs(image - expected).mean() < 0.05  # JPEG
            guided = np.asarray(store.unit_crop("blocks.3", channel, "guided", rank), np.float32)
            assert guided.std() > 1  # a real picture, not a flat grey
        # one picture file per kind (its montage, each rank a tile in it), then the record
        assert sorted(p.name for p in unit.iterdir()) == ["crops.json", "guided.jpg", "image.jpg"]
        assert store.unit_crop("blocks.3", channel, "image", 2) is None  # k = 2
    assert (store.layer_dir("blocks.3") / "sprite_image.jpg").exists()
    cat = np.asarray(store.unit_crop("classifier", 285, "image", 0))
    assert cat.shape == (112, 112, 3)  # a fully connected unit sees the whole input
    stamp = store.unit_file("blocks.3", 0, "image").stat().st_mtime_ns
    make_crops(model, store.root, layers=["blocks.3"], kinds=("image",), channels=range(0, 1), progress=False)
    assert store.unit_file("blocks.3", 0, "image").stat().st_mtime_ns == stamp  # done units are skipped
    make_crops(model, store.root, layers=["blocks.3"], kinds=("image",), channels=[4, 4, 3, 4], force=True,
               progress=False)  # a channel given twice is made once
    assert store.read_crops_record("blocks.3", 4)["kinds"] == ["image"]
    with pytest.raises(deepvis.DeepvisError, match="not in the store"):
        make_crops(model, store.root, layers=["blocks.9"], progress=False)
    assert torch._C._len_torch_function_stack() == 0


def test_store_reads_the_original_toolbox_layout(tmp_path):
    from deepvis.store import Store

    root = tmp_path / "unit_jpg_vis"
    for folder, name in (("max_im", "conv5_0151.jpg"), ("max_deconv", "conv5_0151.jpg"),
                         ("regularized_opt", "conv5_0151_montage.jpg"), ("regularized_opt", "whole_layer.jpg")):
        (root / folder / "conv5").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8)).save(root / folder / "conv5" / name)
    store = Store(root)
    pictures = store.unit_pictures("conv5", 151)
    assert pictures == {"optimized": root / "regularized_opt/conv5/conv5_0151_montage.jpg",
                        "images": root / "max_im/conv5/conv5_0151.jpg",
                        "deconv": root / "max_deconv/conv5/conv5_0151.jpg"}
    assert store.unit_pictures("conv5", 7) == {}
    assert store.sprite("conv5") == root / "regularized_opt/conv5/whole_layer.jpg"
    # this project's own layout wins where both exist
    (store.unit_dir("conv5", 151)).mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(store.unit_dir("conv5", 151) / "image.jpg")
    assert store.unit_pictures("conv5", 151)["images"] == store.unit_dir("conv5", 151) / "image.jpg"


def test_small_fields_get_context_and_an_outline_outside_the_field():
    from deepvis.jobs.crops import context_box, draw_outline

    box = (10, 20, 13, 23)  # a 3 x 3 field (the stem's)
    shown = context_box(box, 32)
    assert shown == (-4, 6, 28, 38) and shown[2] - shown[0] == 32 and shown[3] - shown[1] == 32
    assert context_box((0, 0, 35, 35), 32) == (0, 0, 35, 35)  # large enough: unchanged
    a = np.random.default_rng(0).random((40, 40, 3)).astype(np.float32)
    picture = draw_outline(crop_box(a, shown), box, shown, colour=(1.0, 0.0, 0.0))
    inside = picture[box[0] - shown[0]:box[2] - shown[0], box[1] - shown[1]:box[3] - shown[1]]
    assert np.array_equal(inside, a[10:13, 20:23])  # the field's pixels stay exact
    ring = picture[box[0] - shown[0] - 1:box[2] - shown[0] + 1, box[1] - shown[1] - 1:box[3] - shown[1] + 1]
    edge = np.ones(ring.shape[:2], bool)
    edge[1:-1, 1:-1] = False
    assert np.all(ring[edge] == (1.0, 0.0, 0.0))  # a 1-px outline just outside it
    assert np.array_equal(picture[0, 0], crop_box(a, shown)[0, 0])


def test_crops_made_before_the_context_setting_are_redone():
    from deepvis.store import CROPS_SETTINGS, Store

    class Manifest:
        weights_sha256, preprocessing = "w", {"mean": [0.5]}
        layers = {"l": type("L", (), {"receptive_field": {"size": 3}, "layout": "maps"})()}

    before = dict(CROPS_SETTINGS)
    try:
        with_setting = Store.crops_basis(Manifest, "l")
        CROPS_SETTINGS.clear()
        assert Store.crops_basis(Manifest, "l") != with_setting  # the basis records how crops are drawn
    finally:
        CROPS_SETTINGS.update(before)


@pytest.mark.slow
def test_batched_windowed_crops_equal_whole_image_backward_passes(tmp_path):
    """Several units' top images in one backward pass, on crop-sized windows where the field is small: the same
    pictures as one unit at a time on whole images; the stem's 3-px field is shown in 32 px of context."""
    from deepvis.jobs.crops import _plan, _Inputs
    from deepvis.store import Store

    model = deepvis.load_model(input_size=(112, 112))
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("chelsea", "coffee", "astronaut"):
        Image.fromarray(getattr(skimage_data, name)()).save(folder / f"{name}.png")
    store = find_max(model, folder, tmp_path / "store", layers=["stem.act", "blocks.3"], k=2, progress=False)
    make_crops(model, store.root, kinds=("image", "guided"), channels=range(0, 6), progress=False, batch_rows=8)
    manifest = store.read_manifest()
    files = [folder / p for p in store.read_image_list()]
    plan = _plan(model, _Inputs(model, files), Store(store.root), manifest, "blocks.3", ["guided"])
    assert plan.window == (48, 48)  # field 35, stride 8: 48 x 48 windows instead of 112 x 112 images
    top = store.read_topk("blocks.3")
    field = field_from_json(manifest.layers["blocks.3"].receptive_field)
    for channel in range(6):
        for rank in range(2):
            y, x = int(top["y"][channel, rank]), int(top["x"][channel, rank])
            image = deepvis.load_image(files[top["images"][channel, rank]])
            grad = deepvis.backprop(model, image, f"blocks.3:{channel}@{y},{x}", mode="guided").input_grad
            rgb = model.preprocessing.to_rgb(grad).permute(1, 2, 0).numpy()
            expected = deepvis.back_image(crop_box(rgb, unit_box(field, y, x, (112, 112))), "raw")
            saved = np.asarray(store.unit_crop("blocks.3", channel, "guided", rank), np.float32) / 255
            assert np.abs(saved - expected).mean() < 0.03  # JPEG
    stem = np.asarray(store.unit_crop("stem.act", 0, "image", 0))
    assert stem.shape == (32, 32, 3)  # a 3-px field in context
    # the plan is measured once and kept in the store: a second run measures nothing, and gets the same plan
    saved = Store(store.root).read_crops_plan("blocks.3")
    assert saved["window"] == [48, 48] and saved["flops_per_row"] == plan.flops_per_row > 0
    measure = crops_module._measure_plan
    crops_module._measure_plan = lambda *args, **kwargs: pytest.fail("the saved plan was measured again")
    try:
        again = _plan(model, _Inputs(model, files), Store(store.root), manifest, "blocks.3", ["guided"])
    finally:
        crops_module._measure_plan = measure
    assert (again.window, again.flops_per_row, again.field) == (plan.window, plan.flops_per_row, plan.field)
    # the cost estimate counts work: a 48 x 48 window of blocks.3 is cheaper than a whole image up to blocks.3
    whole = crops_module._forward_flops(model, _Inputs(model, files).get(0)[0][None], "blocks.3")
    assert 0 < plan.flops_per_row < whole / 3


def test_layers_are_interleaved_in_proportion_to_their_work():
    """A run over several layers takes their groups in an order where every layer has done about the same share of
    its own work at any time (within one group): the rate of any stretch is the rate of the whole run, so the ETA
    of the first minute already holds."""
    from deepvis.jobs.crops import interleave

    work = {"stem": [1.0] * 30 + [0.5], "blocks.6": [8.0] * 6, "head": [40.0, 40.0, 12.0]}
    order = interleave(work)
    assert sorted(order) == sorted((name, i) for name, costs in work.items() for i in range(len(costs)))
    for name in work:
        assert [i for n, i in order if n == name] == list(range(len(work[name])))  # each layer in its own order
    totals = {name: sum(costs) for name, costs in work.items()}
    one_group = max(max(costs) / totals[name] for name, costs in work.items())
    done = dict.fromkeys(work, 0.0)
    for name, i in order:
        done[name] += work[name][i]
        shares = [done[n] / totals[n] for n in work]
        assert max(shares) - min(shares) <= one_group + 1e-9
    assert order[0][0] != order[1][0] or order[1][0] != order[2][0]  # not one layer after another
    assert {n for n, _ in order[:3]} == set(work)  # the first groups already mix every layer


def test_progress_eta_follows_the_work_not_the_items(monkeypatch):
    """Cheap units first (small windows) must not promise an early end: with costs, the ETA is work left / rate."""
    from deepvis.core import progress as progress_module

    clock = [0.0]
    monkeypatch.setattr(progress_module.time, "perf_counter", lambda: clock[0])
    bar = progress_module.Progress(100, "crops", unit="units", enabled=False, total_cost=1000.0)
    plain = progress_module.Progress(100, "crops", unit="units", enabled=False)
    clock[0] = 60.0
    bar.update(50, cost=100.0)  # half the units in a minute, but only a tenth of the work
    assert bar.eta() == pytest.approx(540.0)
    plain.update(50)
    assert plain.eta() == pytest.approx(60.0)  # counted in items, it would say one more minute


def test_progress_line_at_the_end_says_no_time_left(monkeypatch, capsys):
    """Costs summed in floating point may pass their total: the last line said 'ETA -1m60s'."""
    from deepvis.core import progress as progress_module

    clock = [0.0]
    monkeypatch.setattr(progress_module.time, "perf_counter", lambda: clock[0])
    monkeypatch.setattr(progress_module.sys.stderr, "isatty", lambda: False)
    bar = progress_module.Progress(3, "crops", unit="units", total_cost=0.3)
    for _ in range(3):
        clock[0] += 0.4
        bar.update(1, cost=0.1)  # 0.1 + 0.1 + 0.1 = 0.30000000000000004
    clock[0] += 0.1
    bar.close()
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1] == "crops: 3/3 units, 2.3 units/s, ETA 0m00s", lines
    middle = progress_module.Progress(10, "find-max", total_cost=10.0, enabled=False)
    clock[0] += 59.6
    middle.update(1, cost=0.999)  # 9.001 work left at 0.999 per 59.6 s: 537.0 s
    assert middle.eta() == pytest.approx(537.0, abs=0.1)


def test_the_images_decoded_ahead_on_threads_are_those_get_decodes(tmp_path):
    """crops decode a run's top images ahead, one thread per core: the same tensors and pixels as one by one; an
    unreadable image is the error ``get`` gives, raised up front (before any unit is made)."""
    from deepvis.jobs.crops import _Inputs
    from deepvis.core.errors import DeepvisError

    model = deepvis.load_model()
    files = list(deepvis.sample_images())[:3]
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    files.append(bad)
    ahead = _Inputs(model, files)
    with pytest.raises(DeepvisError, match="bad.jpg"):
        ahead.prefetch([3, 0, 1, 2])
    ahead.prefetch([0, 1, 2])
    assert sorted(ahead.cache) == [0, 1, 2]
    one_by_one = _Inputs(model, files)
    for index in range(3):
        tensor, pixels = one_by_one.get(index)
        assert torch.equal(ahead.cache[index][0], tensor) and np.array_equal(ahead.cache[index][1], pixels)
    with pytest.raises(DeepvisError, match="bad.jpg"):
        ahead.get(3)
