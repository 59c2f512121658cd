"""ONNX import: a small PyTorch CNN exported by the test gives the same outputs and the same gradient / deconv /
guided-backprop images through the import as through the original; node names are the layers; clear errors."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import deepvis
from deepvis import ModelError, load_model
from deepvis.engine.backprop import backprop

pytest.importorskip("onnx")

SIZE = (30, 26)  # non-square


class SmallCNN(nn.Module):
    """Module and functional rectifiers, ReLU6 (exported as Clip), BatchNorm (folded by the exporter), grouped
    convolution, max/avg pools with ceil mode, a residual sum, a concat and a flatten by view (torch exports
    LocalResponseNorm as a subgraph with an If node, not as LRN: see the hand-written graph below)."""

    def __init__(self, channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 8, 5, stride=2, padding=2)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.bn2 = nn.BatchNorm2d(8)
        self.relu6 = nn.ReLU6()
        self.branch = nn.Conv2d(8, 4, 1)
        self.pool2 = nn.AvgPool2d(2, ceil_mode=True)
        self.fc = nn.Linear(12 * 4 * 3, 10)

    def forward(self, x):
        x = self.pool1(self.relu1(self.conv1(x)))
        x = x + self.relu6(self.bn2(self.conv2(x)))
        x = torch.cat([x, F.relu(self.branch(x))], dim=1)
        x = self.pool2(x)
        return self.fc(x.view(x.size(0), -1))


def _export(net: nn.Module, path, channels: int = 3) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, torch.zeros(1, channels, *SIZE), str(path), dynamo=False, input_names=["image"])


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    torch.manual_seed(0)
    net = SmallCNN().eval()
    with torch.no_grad():
        net.bn2.running_mean.uniform_(-0.5, 0.5)
        net.bn2.running_var.uniform_(0.5, 2.0)
    path = tmp_path_factory.mktemp("onnx") / "small.onnx"
    _export(net, path)
    return load_model(net, input_size=SIZE), load_model(str(path))


def test_outputs_equal_the_original(pair):
    original, imported = pair
    assert imported.preprocessing.input_size == SIZE  # from the ONNX input shape
    x = torch.randn(5, 3, *SIZE)  # a batch, though exported with batch 1
    with torch.no_grad():
        diff = (original.net(x) - imported.net(x)).abs().max().item()
    print(f"max abs output diff ONNX vs PyTorch: {diff:.2e}")
    assert diff < 1e-5


def test_layers_are_named_after_the_nodes(pair):
    _, imported = pair
    names = imported.layer_names()
    assert {"conv1/Conv", "relu1/Relu", "pool1/MaxPool", "relu6/Clip", "fc/Gemm"} <= set(names), names
    types = {info.name: info.type for info in imported.layers()}
    assert types["conv1/Conv"] == "Conv2d" and types["relu6/Clip"] == "ReLU6" and types["fc/Gemm"] == "Linear"
    assert not any(info.type in ("Shape", "Gather", "Unsqueeze") for info in imported.layers())  # folded
    assert "relu1/Relu" in deepvis.default_layers(imported)
    acts = deepvis.activations(imported, torch.randn(3, *SIZE), ["relu1/Relu", "fc/Gemm"])
    assert acts["relu1/Relu"].shape == (8, 15, 13) and acts["fc/Gemm"].shape == (10,)


@pytest.mark.parametrize("mode", ["gradient", "deconv", "guided"])
def test_backward_modes_equal_the_original(pair, mode):
    original, imported = pair
    image = torch.randn(3, *SIZE)
    for ours, theirs in (("fc:3", "fc/Gemm:3"), ("relu1:5@4,4", "relu1/Relu:5@4,4")):
        a = backprop(original, image, ours, mode=mode)
        b = backprop(imported, image, theirs, mode=mode)
        diff = (a.input_grad - b.input_grad).abs().max().item()
        print(f"{mode} {ours}: max abs input-gradient diff {diff:.2e} (scale {a.input_grad.abs().max():.2e}), "
              f"rectifiers modified {a.rectifiers_modified} / {b.rectifiers_modified}")
        assert a.rectifiers_modified == b.rectifiers_modified
        assert diff <= 1e-5 * max(1.0, a.input_grad.abs().max().item())
    if mode == "guided":
        assert b.rectifiers_modified >= 1 and a.input_grad.abs().sum() > 0


def test_gray_input_and_probabilities(tmp_path):
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3),
                        nn.Softmax(dim=1)).eval()
    _export(net, tmp_path / "gray.onnx", channels=1)
    model = load_model(str(tmp_path / "gray.onnx"))
    assert model.preprocessing.channel_order == "gray" and model.outputs == "probs"
    top = deepvis.predict(model, deepvis.sample_images()[0], top=3)
    assert abs(sum(p.prob for p in top) - 1) < 1e-5  # the network's own softmax, not applied twice


def test_errors_are_clear(tmp_path, monkeypatch):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07not a protobuf at all" * 10)
    with pytest.raises(ModelError, match="garbage.onnx"):
        load_model(str(garbage))
    with pytest.raises(ModelError, match="not found"):
        load_model(str(tmp_path / "missing.onnx"))
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 16, 16])
    graph = helper.make_graph([helper.make_node("Resize", ["x"], ["y"], name="upsample")], "g", [x], [y])
    onnx.save(helper.make_model(graph), str(tmp_path / "resize.onnx"))
    with pytest.raises(ModelError, match="Resize.*upsample"):
        load_model(str(tmp_path / "resize.onnx"))
    monkeypatch.setitem(sys.modules, "onnx", None)  # as if not installed
    with pytest.raises(ModelError, match=r"pip install 'deepvis\[onnx\]'"):
        load_model(str(garbage))


def test_asymmetric_padding_and_explicit_graph_ops(tmp_path):
    """Ops written by hand (not by torch's exporter): asymmetric pads, LRN, Clip bounds, Gemm with transB=0."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = rng.standard_normal((2, 3, 3, 3)).astype(np.float32)
    fc = rng.standard_normal((2 * 4 * 4, 5)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[0, 0, 1, 1], strides=[2, 2]),
             helper.make_node("LRN", ["c"], ["n"], name="lrn", size=3, alpha=1e-2, beta=0.75, bias=2.0),
             helper.make_node("Clip", ["n", "lo", "hi"], ["r"], name="clip"),
             helper.make_node("Flatten", ["r"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "fc"], ["y"], name="fc")]
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(fc, "fc"),
             numpy_helper.from_array(np.array(0.0, np.float32), "lo"),
             numpy_helper.from_array(np.array(1.0, np.float32), "hi")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(tmp_path / "hand.onnx"))
    model = load_model(str(tmp_path / "hand.onnx"))
    x = torch.randn(2, 3, 8, 8)
    conv = F.conv2d(F.pad(x, (0, 1, 0, 1)), torch.from_numpy(w), stride=2)
    expected = F.local_response_norm(conv, 3, 1e-2, 0.75, 2.0).clamp(0, 1).flatten(1) @ torch.from_numpy(fc)
    with torch.no_grad():
        assert torch.allclose(model.net(x), expected, atol=1e-5)
    assert backprop(model, x[0], "fc:1", mode="guided").rectifiers_modified == 1  # clamp(0, 1) is a rectifier


def test_coverage_page_matches_the_operator_table():
    from importlib import util
    from pathlib import Path

    script = Path(__file__).parents[2] / "docs" / "make_onnx_coverage.py"
    spec = util.spec_from_file_location("make_onnx_coverage", script)
    module = util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.PAGE.read_text() == module.render(), "run: PYTHONPATH=src python docs/make_onnx_coverage.py"
    from deepvis.models.onnx import CONVERTERS

    assert {"LayerNormalization", "Erf", "Gelu", "Resize", "ConvTranspose", "Split", "Expand", "Where",
            "Einsum", "HardSwish"} <= set(CONVERTERS)


def _save(tmp_path, nodes, inits, in_shape, out_shape, name, opset=17):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    path = tmp_path / name
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), str(path))
    return path


def test_same_padding_constant_if_and_folded_shape_chains(tmp_path):
    """auto_pad SAME_UPPER / SAME_LOWER on an odd input, an If with a constant condition, a Slice whose end comes
    from Shape (folded), ConvTranspose with asymmetric pads: equal to onnxruntime on the same file."""
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    inits = {"w": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
             "wt": rng.standard_normal((4, 2, 3, 3)).astype(np.float32),
             "cond": np.array(True), "zero": np.array([0], np.int64), "two": np.array([2], np.int64),
             "one": np.array([1], np.int64)}
    then = helper.make_graph([helper.make_node("Relu", ["c"], ["t"])], "then", [],
                             [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)])
    other = helper.make_graph([helper.make_node("Sigmoid", ["c"], ["e"])], "else", [],
                              [helper.make_tensor_value_info("e", TensorProto.FLOAT, None)])
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", auto_pad="SAME_UPPER", strides=[2, 2]),
             helper.make_node("If", ["cond"], ["r"], name="branch", then_branch=then, else_branch=other),
             helper.make_node("MaxPool", ["r"], ["p"], name="pool", auto_pad="SAME_LOWER", kernel_shape=[3, 3],
                              strides=[2, 2]),
             helper.make_node("Shape", ["p"], ["s"], name="shape"),
             helper.make_node("Gather", ["s", "two"], ["last"], name="bounds", axis=0),  # the height: 4
             helper.make_node("Slice", ["p", "zero", "last", "one"], ["q"], name="crop"),
             helper.make_node("ConvTranspose", ["q", "wt"], ["y"], name="up", strides=[2, 2], pads=[0, 1, 1, 0])]
    path = _save(tmp_path, nodes, inits, [1, 3, 13, 11], None, "same.onnx")
    model = load_model(str(path))
    x = torch.randn(1, 3, 13, 11)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    expected = session.run(None, {"x": x.numpy()})[0]
    with torch.no_grad():
        ours = model.net(x).numpy()
    assert ours.shape == expected.shape and np.abs(ours - expected).max() <= 1e-4 * np.abs(expected).max()
    assert not any(info.type in ("Shape", "Gather", "If") for info in model.layers())


def test_what_cannot_be_converted_is_named_in_one_line(tmp_path):
    from onnx import helper

    # a Slice bound computed from the data (not from a shape): nothing to fold
    nodes = [helper.make_node("ReduceMax", ["x"], ["m"], name="peak", keepdims=0),
             helper.make_node("Cast", ["m"], ["e"], name="to_int", to=7),
             helper.make_node("Reshape", ["e", "one"], ["end"], name="as_list"),
             helper.make_node("Slice", ["x", "zero", "end", "three"], ["y"], name="data_slice")]
    inits = {"zero": np.array([0], np.int64), "one": np.array([1], np.int64), "three": np.array([3], np.int64)}
    path = _save(tmp_path, nodes, inits, [1, 3, 8, 8], None, "slice.onnx")
    with pytest.raises(ModelError) as error:
        load_model(str(path))
    message = str(error.value)
    assert "\n" not in message and "Slice" in message and "data_slice" in message and "constant" in message
    nodes = [helper.make_node("NonMaxSuppression", ["x", "x"], ["y"], name="nms")]
    path = _save(tmp_path, nodes, {}, [1, 3, 8, 8], None, "nms.onnx")
    with pytest.raises(ModelError, match=r"cannot convert: NonMaxSuppression \(node 'nms'\)"):
        load_model(str(path))


def test_module_paths_address_the_source_networks_tensors(tmp_path):
    """A ViT exported by the TorchScript exporter: ``blocks.0.mlp.act`` (GELU written as Div/Erf/Add/Mul) and
    ``blocks.0.attn.qkv`` (MatMul + Add: one nn.Linear) hold the source network's values."""
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parents[1]))
    import zoo

    source = zoo.vit()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(zoo.vit(), torch.zeros(1, 3, 64, 64), str(tmp_path / "vit.onnx"), dynamo=False,
                          opset_version=14)
    imported = load_model(str(tmp_path / "vit.onnx"))
    source = load_model(source, input_size=(64, 64))
    layers = ["blocks.0.mlp.act", "blocks.0.attn.qkv", "blocks.1", "head"]
    image = torch.randn(3, 64, 64)
    ours, theirs = deepvis.activations(imported, image, layers), deepvis.activations(source, image, layers)
    for layer in layers:
        assert torch.allclose(ours[layer], theirs[layer], atol=1e-5), layer
    types = {info.name: info.type for info in imported.layers()}
    assert types["blocks/blocks_0/attn/qkv/MatMul"] == "Linear"
    assert "blocks.0.mlp.act" in deepvis.default_layers(imported)
    names = imported.layer_names()
    assert len(names) == len(set(names))


def test_the_graph_runs_at_its_input_size(pair):
    _, imported = pair
    with pytest.raises(ModelError, match=r"runs at input size 30x26 .* got 32x32"):
        imported.net(torch.randn(1, 3, 32, 32))
