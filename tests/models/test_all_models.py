"""The same toolbox for every kind of model: an ONNX file, a config-file model with a mean image and BGR input, and
a grayscale non-square factory model and a Caffe prototxt each go through predict, layers, backprop, find-max,
crops, optimize (the command line)
and the live toolbox (its API), on the bundled sample images."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
import torch
from PIL import Image

import deepvis
from deepvis.apps import cli
from deepvis.apps.cli.loading import command_model
from deepvis.apps.server.session import Toolbox, ViewRequest

pytestmark = pytest.mark.usefixtures("single_thread_torch")

NET = """
import torch
from torch import nn

def build(channels=3):
    torch.manual_seed(0)  # the same weights in every process: find-max, crops and optimize must see one model
    return nn.Sequential(nn.Conv2d(channels, 6, 3, stride=2), nn.ReLU(), nn.Conv2d(6, 8, 3), nn.ReLU(),
                         nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))

def gray():
    return build(channels=1)
"""


def _onnx(folder: Path) -> list[str]:
    pytest.importorskip("onnx")
    from importlib import util

    spec = util.spec_from_file_location("all_models_net", folder / "net.py")
    module = util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.build().eval(), torch.zeros(1, 3, 28, 36), str(folder / "net.onnx"), dynamo=False)
    return ["--model", str(folder / "net.onnx")]


def _config(folder: Path) -> list[str]:
    np.save(folder / "mean.npy", np.random.default_rng(0).uniform(90, 130, (3, 40, 40)).astype(np.float32))
    (folder / "labels.txt").write_text("one\ntwo\nthree\nfour\nfive\n")
    (folder / "model.toml").write_text('model = "net.py:build"\nlabels = "labels.txt"\nhidden_layers = ["0"]\n'
                                       '[preprocessing]\ninput_size = [32, 24]\nchannel_order = "bgr"\nscale = 1\n'
                                       'mean = "mean.npy"\nstd = [58, 57, 57]\n')
    return ["--model", str(folder / "model.toml")]


def _gray(folder: Path) -> list[str]:
    return ["--model", f"{folder / 'net.py'}:gray", "--channel-order", "gray", "--mean", "0.5", "--std", "0.25",
            "--input-size", "26,34"]


PROTOTXT = """
name: "small"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 30 dim: 26 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 6 kernel_size: 3 stride: 2 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "fc2" type: "InnerProduct" bottom: "pool1" top: "fc2" inner_product_param { num_output: 5 } }
layer { name: "prob" type: "Softmax" bottom: "fc2" top: "prob" }
"""


def _caffe(folder: Path) -> list[str]:
    (folder / "deploy.prototxt").write_text(PROTOTXT)
    return ["--model", str(folder / "deploy.prototxt"), "--mean", "104,117,123"]


KINDS = {"onnx": _onnx, "config": _config, "gray": _gray, "caffe": _caffe}


@pytest.fixture(params=list(KINDS))
def model_args(request, tmp_path):
    (tmp_path / "net.py").write_text(NET)
    return KINDS[request.param](tmp_path)


def _run(capsys, *args) -> str:
    code = cli.main([str(a) for a in args])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


def test_every_command_and_the_live_toolbox(model_args, tmp_path, capsys):
    samples = deepvis.sample_images()
    predictions = json.loads(_run(capsys, "predict", "--samples", "--json", "--top", "2", *model_args))
    assert len(predictions) == len(samples) and all(len(p["top"]) == 2 for p in predictions)
    layers = json.loads(_run(capsys, "layers", "--json", *model_args))
    spatial = [layer["name"] for layer in layers if len(layer["shape"]) == 3]
    assert spatial, layers
    layer = spatial[-1]
    out = tmp_path / "guided.png"
    _run(capsys, "backprop", samples[1], "--unit", f"{layer}:1", "--mode", "guided", "-o", out, *model_args)
    model = command_model(cli.build_parser().parse_args(["layers", *model_args]))  # as the commands load it
    assert Image.open(out).size == model.preprocessing.input_size[::-1]

    image_list = tmp_path / "images.txt"
    image_list.write_text("\n".join(str(p) for p in samples) + "\n")
    store = tmp_path / "store"
    _run(capsys, "find-max", image_list, "--out", store, "--layers", layer, "--k", "2", "--batch-size", "3", "-q",
         *model_args)
    _run(capsys, "crops", store, "--kinds", "image", "guided", "--units", "0-1", "-q", *model_args)
    unit_folder = store / deepvis.store.layer_dirname(layer) / "0000"
    assert all(deepvis.store.Store(store).unit_crop(layer, 0, kind, 0) is not None for kind in ("image", "guided"))
    _run(capsys, "optimize", "--out", store, "--layers", layer, "--units", "0-1", "--max-iter", "6", "-q", *model_args)
    assert Image.open(unit_folder / "optimized.png").size == model.preprocessing.input_size[::-1]
    saved = json.loads((unit_folder / "optimized.json").read_text())
    record = saved["record"]  # a unit that is zero after its ReLU at the start has no gradient: the paper stops
    assert len(record["obj"]) == 6 or (record["meta_result"] == "grad 0 failure" and record["obj"] == [0.0])
    assert record["best_obj"] >= record["obj"][0]
    _run(capsys, "optimize", "--unit", f"{layer}:1", "-o", tmp_path / "modern.png", "--method", "modern",
         "--steps", "4", "-q", *model_args)
    assert Image.open(tmp_path / "modern.png").size == model.preprocessing.input_size[::-1]

    toolbox = Toolbox(model, store=store)
    info = toolbox.info()
    assert info["input_size"] == list(model.preprocessing.input_size) and layer in [i["name"] for i in info["layers"]]
    item = toolbox.input_from_file(2)
    view = toolbox.view(ViewRequest.from_json({"input": item.id, "layer": layer, "channel": 1, "cursor": "grid",
                                               "back_mode": "deconv", "back_filter": "norm"}))
    assert view["back"]["png"] and view["unit"]["unit"] == f"{layer}:1" and len(view["predictions"]) == 5
    pictures = toolbox.unit_images(layer, 0)["images"]  # URLs, decoded once by the server (ONNX names have '/')
    assert pictures and all((store / unquote(url.removeprefix("/store/"))).is_file() for url in pictures.values())

