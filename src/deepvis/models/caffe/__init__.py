"""Caffe models without Caffe: ``deploy.prototxt`` (V1 or V2) plus an optional ``.caffemodel`` -> :class:`Model`.

Layer names become module names, so units read as in the original toolbox (``conv5:151``, ``inception_3a/1x1:3``).
Each module's output is what Caffe's blob of that name held: in-place layers (``relu5`` on ``conv5``) run inside
the layer whose blob they overwrite and appear as its children (``conv5.relu5``).
"""

from __future__ import annotations

from pathlib import Path

import torch

from deepvis.core.errors import ModelError
from deepvis.models.model import Model
from deepvis.models.preprocessing import Preprocessing
from deepvis.models.caffe.layers import CaffeLayer, Softmax
from deepvis.models.caffe.net import CaffeNet, build_net, read_net_spec
from deepvis.models.caffe.prototxt import read_prototxt
from deepvis.models.caffe.weights import Blobs, read_caffemodel, read_mean, write_caffemodel

__all__ = ["CaffeNet", "caffe_net", "load_caffe", "read_caffemodel", "read_mean", "write_caffemodel"]


def load_caffe(prototxt: str | Path, weights: str | Path | None = None) -> Model:
    """Build a Caffe network from its deploy prototxt, with the weights of a ``.caffemodel`` (or, without one,
    deterministic random weights, enough to browse the structure).

    Preprocessing is Caffe's: BGR (or gray for one input channel), 0-255 values, the declared input size;
    the mean is left at 0 for the caller to set (see :func:`read_mean`).
    """
    net = caffe_net(prototxt, weights)
    channels, height, width = net.input_shape[1:]
    if channels not in (1, 3):
        raise ModelError(f"input '{net.input_name}' of {prototxt} has {channels} channels; deepvis feeds images "
                         "with 1 (gray) or 3 (BGR) channels")
    preprocessing = Preprocessing(input_size=(height, width), mean=(0.0,) * channels, std=(1.0,) * channels,
                                  channel_order="bgr" if channels == 3 else "gray", value_scale=255.0)
    last = net.get_submodule(net.steps[-1].module)
    standalone_in_place = {step.module for step in net.steps if step.tops == step.bottoms}
    return Model(net=net, preprocessing=preprocessing, labels=None, spec=str(prototxt),
                 outputs="probs" if isinstance(last, Softmax) else "logits",
                 default_layers=[step.module for step in net.steps if step.module not in standalone_in_place])


def caffe_net(prototxt: str | Path, weights: str | Path | None = None) -> CaffeNet:
    """The bare network of :func:`load_caffe` (any number of input channels), in eval mode."""
    spec = read_net_spec(read_prototxt(prototxt))
    net, layers = build_net(spec)
    net.to_empty(device="cpu")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        if weights is None:
            for layer in layers:
                layer.reset_blobs(generator)
        else:  # every layer with blobs gets them from the file, or this fails
            _assign(layers, read_caffemodel(weights), Path(weights))
    return net.eval()


def _assign(layers: list[CaffeLayer], blobs: Blobs, path: Path) -> None:
    """Copy each layer's blobs from the weights file, checking count and shape (size-1 dimensions aside)."""
    wanted = [layer for layer in layers if layer.blob_names]
    if wanted and not any(layer.caffe_name in blobs for layer in wanted):
        stored = ", ".join(list(blobs)[:5]) + (", ..." if len(blobs) > 5 else "")
        raise ModelError(f"{path} has none of the prototxt's layers (it has: {stored or 'none'}); "
                         "is it the weights of this network?")
    for layer in wanted:
        stored = blobs.get(layer.caffe_name)
        where = f"{path}: layer '{layer.caffe_name}' ({layer.caffe_type})"
        if not stored:
            raise ModelError(f"{where} has no blobs in the weights file")
        if len(stored) != len(layer.blob_names):
            raise ModelError(f"{where} has {len(stored)} blobs, the prototxt expects {len(layer.blob_names)} "
                             f"({', '.join(layer.blob_names)})")
        for name, target, array in zip(layer.blob_names, layer.blobs(), stored):
            if _squeezed(target.shape) != _squeezed(array.shape):
                raise ModelError(f"{where}: {name} blob has shape {tuple(array.shape)}, the prototxt expects "
                                 f"{tuple(target.shape)}")
            target.copy_(torch.from_numpy(array.reshape(tuple(target.shape))))


def _squeezed(shape) -> tuple[int, ...]:
    return tuple(size for size in shape if size != 1)
