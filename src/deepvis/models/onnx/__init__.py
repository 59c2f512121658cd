"""ONNX files as ``nn.Module`` graphs whose layers are the ONNX nodes, named after them.

Each run-time node becomes one submodule, so every node is addressable as a layer (``features/features_0/Conv:3``),
hookable, and listed in the catalog; where the exporter recorded the source network's module paths, they address
the same tensors (``blocks.0.mlp.act:3``, see names.py). Values known when the file is loaded (constants, shapes at
the model's input size and everything computed from them) are evaluated once by ``onnx.reference`` (fold.py); the
other nodes are converted by the operator table (ops.py; ``docs/onnx-coverage.md`` lists it) and run by the graph
(graph.py). Only the ``onnx`` package is needed (``pip install 'deepvis[onnx]'``): ``onnx2torch`` imports
torchvision, which cannot be installed beside every torch build, and its converted graphs call rectifiers the
same way.
"""

from __future__ import annotations

from pathlib import Path

from deepvis.core.errors import ModelError, one_line
from deepvis.models.model import Model
from deepvis.models.preprocessing import Preprocessing
from deepvis.models.onnx.graph import OnnxGraph
from deepvis.models.onnx.ops import CONVERTERS, OnnxOp, coverage

__all__ = ["load_onnx", "OnnxGraph", "OnnxOp", "CONVERTERS", "coverage"]


def load_onnx(path: str | Path) -> Model:
    """An ONNX file as a :class:`Model`: input size (and gray for one channel) from its input shape when static,
    ImageNet mean and std on [0, 1] pixels unless flags or a config file say otherwise."""
    onnx = _import_onnx()
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelError(f"model file not found: '{path}'")
    try:
        proto = onnx.load(str(path))
    except Exception as exc:
        raise ModelError(f"'{path}' is not a readable ONNX model ({type(exc).__name__}: "
                         f"{one_line(exc, 150)})") from None
    if not proto.graph.node:
        raise ModelError(f"'{path}' is not an ONNX model with a graph (no nodes found)")
    net = OnnxGraph(proto, str(path))
    channels, height, width = (tuple(net.input_shape) + (0, 0, 0))[:3]
    preprocessing = Preprocessing()
    if channels == 1:
        preprocessing = preprocessing.with_(channel_order="gray", mean=(0.449,), std=(0.226,))
    if height and width:
        preprocessing = preprocessing.with_(input_size=(height, width))
    last = next((n for n in proto.graph.node if proto.graph.output[0].name in n.output), None)
    outputs = "probs" if last is not None and last.op_type == "Softmax" else "logits"
    model = Model(net=net, preprocessing=preprocessing, spec=str(path), outputs=outputs)
    if net.scope_paths:  # the catalog's guess among node layers, then module paths where they read better
        guessed = {info.name for info in model.layers() if info.default}
        model.default_layers, model._catalog = net.default_layers(guessed) or None, None
    return model


def _import_onnx():
    try:
        import onnx  # optional dependency
        import onnx.numpy_helper  # noqa: F401  # optional dependency
        import onnx.reference  # noqa: F401  # optional dependency
    except ImportError:
        raise ModelError("opening .onnx files needs the onnx package: pip install 'deepvis[onnx]'") from None
    return onnx
