"""ONNX files as people have them: the test zoo's families (tests/zoo.py) exported by both torch exporters at two
opsets each import; their outputs equal ONNX Runtime's on the same file; gradient and guided backprop through the
import equal those through the source network at units that exist in both (module paths); and the toolbox runs
on each (predict, layers, backprop, find-max, a live view).

The TorchScript exporter runs at opsets 13 (14 for attention: ``scaled_dot_product_attention`` needs it) and 17
(LayerNormalization appears); the dynamo exporter (``dynamo=True``) writes opset 18 and up, here 18 (GELU as Erf)
and 21 (Gelu). Every file is exported at batch size 1, as most are; the import runs it on batches.
"""

from __future__ import annotations

import functools
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import deepvis
from deepvis import load_model

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

sys.path.insert(0, str(Path(__file__).parents[1]))  # tests/: zoo.py
import zoo  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_thread_torch")

#: family -> (input size, units that exist in the source network and, by module path, in the import)
FAMILIES = {
    "resnet": ((64, 64), ["fc:3", "layer2.0:1@2,2"]),
    "mobilenetv3": ((64, 64), ["classifier.3:3", "features.1:2@4,4"]),
    "tf_same": ((61, 67), ["classifier:3", "act2:1@3,3"]),
    "unet": ((32, 48), ["outc:1@5,7", "conv_up1:2@3,3"]),
    "vit": ((64, 64), ["head:3", "blocks.0.mlp.act:5"]),
    "vit_mha": ((64, 64), ["head:3", "blocks.1.mlp.fc1:4"]),
    "vit_registers": ((48, 80), ["head:3", "blocks.1.mlp.act:2"]),
    "deit": ((64, 64), ["head_dist:3", "blocks.0:6"]),
    "convnext": ((64, 64), ["head.fc:3", "stages.1.blocks.0.mlp.act:5"]),
    "swin": ((64, 64), ["head:3", "layers.0.blocks.1.mlp.act:3"]),
}
ATTENTION = {"vit", "vit_mha", "vit_registers", "deit", "swin"}
EXPORTS = [("torchscript", "low"), ("torchscript", 17), ("dynamo", 18), ("dynamo", 21)]
FILES = [(family, exporter, opset) for family in FAMILIES for exporter, opset in EXPORTS]
IDS = [f"{f}-{e}-{o}" for f, e, o in FILES]
RESULTS: dict[str, float] = {}  # file -> max relative output difference vs ONNX Runtime (printed at the end)


@functools.lru_cache(maxsize=None)
def _source(family: str):
    """The source network, loaded as deepvis loads a module (frozen: exports use a fresh one, as frozen
    nn.MultiheadAttention takes a fast path the TorchScript exporter cannot write). The factories are seeded."""
    return getattr(zoo, family)()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx_zoo")


@functools.lru_cache(maxsize=None)
def _export(folder: Path, family: str, exporter: str, opset) -> Path:
    if opset == "low":
        opset = 14 if family in ATTENTION else 13
    path = folder / f"{family}_{exporter}{opset}.onnx"
    size = FAMILIES[family][0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(getattr(zoo, family)(), torch.zeros(1, 3, *size), str(path), dynamo=exporter == "dynamo",
                          opset_version=opset, input_names=["image"], verbose=False)
    return path


@functools.lru_cache(maxsize=None)
def _load(folder: Path, family: str, exporter: str, opset):
    return load_model(str(_export(folder, family, exporter, opset)))


@pytest.mark.parametrize("family,exporter,opset", FILES, ids=IDS)
def test_outputs_equal_onnxruntime(folder, family, exporter, opset):
    path = _export(folder, family, exporter, opset)
    started = time.perf_counter()
    model = _load(folder, family, exporter, opset)
    loaded = time.perf_counter() - started
    size = FAMILIES[family][0]
    assert model.preprocessing.input_size == size
    x = torch.randn(3, 3, *size, generator=torch.Generator().manual_seed(1))  # a batch: the file says batch 1
    with torch.no_grad():
        ours = model.net(x).numpy()
        source = _source(family)(x).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    theirs = np.concatenate([session.run(None, {"image": x[i:i + 1].numpy()})[0] for i in range(len(x))])
    scale = np.abs(theirs).max()
    relative = float(np.abs(ours - theirs).max() / scale)
    RESULTS[path.name] = relative
    print(f"{path.name}: loaded in {loaded:.2f}s, {len(model.layer_names())} layers, max relative difference "
          f"vs onnxruntime {relative:.2e}, vs the source network {np.abs(ours - source).max() / scale:.2e}")
    assert ours.shape == theirs.shape
    assert relative < 1e-4


@pytest.mark.parametrize("mode", ["gradient", "guided"])
@pytest.mark.parametrize("family,exporter,opset", FILES, ids=IDS)
def test_backward_equals_the_source_network(folder, family, exporter, opset, mode):
    imported = _load(folder, family, exporter, opset)
    size, units = FAMILIES[family]
    source = load_model(_source(family), input_size=size)
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(2))
    for unit in units:
        a = deepvis.backprop_batch(source, x, unit, mode)
        b = deepvis.backprop_batch(imported, x, unit, mode)
        scale = a.input_grad.abs().max().item()  # zero where the unit is zero after its ReLU: then both are
        relative = (a.input_grad - b.input_grad).abs().max().item() / max(scale, 1e-30)
        print(f"{family} {exporter} {opset} {mode} {unit}: max relative input-gradient difference {relative:.2e}"
              f" (scale {scale:.1e})")
        assert relative < 1e-4 and a.rectifiers_modified == b.rectifiers_modified
        assert scale > 0 or unit != units[0]


@pytest.mark.slow
@pytest.mark.parametrize("family,exporter,opset", FILES, ids=IDS)
def test_the_toolbox_runs_on_the_import(folder, family, exporter, opset, tmp_path):
    from deepvis.jobs.findmax import find_max
    from deepvis.apps.server.session import Toolbox, ViewRequest

    model = _load(folder, family, exporter, opset)
    samples = deepvis.sample_images()[:3]
    if family != "unet":  # per-pixel class maps: no predictions
        assert len(deepvis.predict(model, samples[0], top=3)) == 3
    infos = model.layers()
    assert all(info.to_json() for info in infos)
    shown = [info.name for info in infos if info.default]
    unit = FAMILIES[family][1][1]
    layer = unit.partition(":")[0]
    assert layer in [info.name for info in infos]
    picture = deepvis.backprop(model, samples[1], unit, mode="guided").image("norm")
    assert picture.shape == (*model.preprocessing.input_size, 3)
    images = tmp_path / "images.txt"
    images.write_text("\n".join(str(p) for p in samples) + "\n")
    spatial = [info.name for info in infos if info.default and info.shape is not None and len(info.shape) == 3]
    find_max(model, images, tmp_path / "store", layers=[layer, spatial[-1]], k=2, batch_size=2, progress=False)
    toolbox = Toolbox(model, images=images)
    for name in (spatial[-1], shown[-1]):
        view = toolbox.view(ViewRequest.from_json({"input": toolbox.input_from_file(0).id, "layer": name,
                                                   "channel": 1, "cursor": "grid", "back_mode": "guided",
                                                   "back_filter": "norm"}))
        assert view["back"]["png"] and view["unit"]["unit"].startswith(f"{name}:1")


@pytest.mark.parametrize("family", ["vit_mha", "swin", "tf_same"])
def test_files_with_a_batch_axis(tmp_path, family):
    """Exported with ``dynamic_axes`` (batch left open): the import runs the batch as ONNX Runtime does."""
    size = FAMILIES[family][0]
    path = tmp_path / f"{family}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(getattr(zoo, family)(), torch.zeros(1, 3, *size), str(path), dynamo=False,
                          opset_version=17, input_names=["image"], dynamic_axes={"image": {0: "batch"}})
    x = torch.randn(3, 3, *size, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ours = load_model(str(path)).net(x).numpy()
    theirs = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": x.numpy()})[0]
    assert np.abs(ours - theirs).max() < 1e-4 * np.abs(theirs).max()


def test_zz_report():
    """Prints the measured differences (run with -s to see them)."""
    if RESULTS:
        worst = max(RESULTS, key=RESULTS.get)
        print(f"\n{len(RESULTS)} files, max relative difference vs onnxruntime {RESULTS[worst]:.2e} ({worst})")
