"""Caffe's binary files without Caffe: ``.caffemodel`` weights (V1 and V2 nets), ``.binaryproto`` means.

A ``.caffemodel`` is a serialized ``NetParameter``; each layer carries its parameter blobs in Caffe's order
(convolution: weight, bias; batch norm: mean, variance, scale factor; ...). Blobs are matched to the prototxt's
layers by layer name, as Caffe does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from deepvis.core.errors import ModelError
from deepvis.models.caffe.layers import CaffeLayer
from deepvis.models.caffe.message import Message
from deepvis.models.caffe.schema import CAFFEMODEL_SCHEMA, v1_type_number
from deepvis.models.caffe.wire import WireError, decode, encode

_LAZY = frozenset({"layer", "layers", "blobs"})
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"

#: Layer name -> its blobs, in Caffe's order.
Blobs = dict[str, list[np.ndarray]]


def read_caffemodel(path: str | Path) -> Blobs:
    """Every layer's blobs in a ``.caffemodel`` (float32 arrays shaped as stored), keyed by layer name."""
    path = Path(path)
    data = _read_bytes(path, "weights")
    if data.startswith(_HDF5_SIGNATURE):
        raise ModelError(f"{path} is an HDF5 caffemodel; deepvis reads the binary protobuf format "
                         "(save it with Caffe's net.save(), or export the weights with snapshot_format: BINARYPROTO)")
    try:
        net = decode(data, CAFFEMODEL_SCHEMA, "NetParameter", raw=_LAZY)
    except WireError as exc:
        raise ModelError(f"{path}: {_top_level_position(exc)}: {exc} (byte {exc.offset}; truncated or damaged "
                         "file?)") from None
    entries = [("layer", entry) for entry in net.all("layer")] + [("layers", entry) for entry in net.all("layers")]
    if not entries:
        raise ModelError(f"{path} holds no layers: not a Caffe .caffemodel (a binary NetParameter)")
    blobs: Blobs = {}
    previous = None
    for index, (field, (offset, chunk)) in enumerate(entries):
        where = f"{path}: layer #{index + 1}" + (f" (after '{previous}')" if previous else "") + f" at byte {offset}"
        message_type = "LayerParameter" if field == "layer" else "V1LayerParameter"
        layer = _decode(chunk, message_type, where, offset)
        if layer.has("layer"):  # a V0 layer inside a V1 one: the very first Caffe format
            layer = _decode(layer.last("layer")[1], "V0LayerParameter", where, layer.last("layer")[0])
        name = layer.string("name")
        where = f"{path}: layer '{name}'" if name else where
        blobs[name] = [_blob_array(blob, f"{where}, blob {i}", offset)
                       for i, (offset, blob) in enumerate(layer.all("blobs"))]
        previous = name or previous
    return blobs


def _top_level_position(exc: WireError) -> str:
    """Where a top-level decoding error falls: ``layer #N (after 'name')``, or not in a layer at all."""
    if exc.number not in (2, 100):
        return "not a Caffe .caffemodel (a binary NetParameter)"
    read = exc.partial.all("layer") + exc.partial.all("layers")
    if not read:
        return "layer #1"
    offset, chunk = read[-1]
    try:
        last = decode(chunk, CAFFEMODEL_SCHEMA, "LayerParameter" if exc.partial.has("layer") else "V1LayerParameter",
                      offset, raw=_LAZY).string("name")
    except (WireError, ModelError):
        last = "?"
    return f"layer #{len(read) + 1} (after '{last}')"


def read_mean(path: str | Path) -> np.ndarray:
    """A data mean as a (C, H, W) float32 array in the file's channel order (Caffe's: BGR).

    Reads a ``.binaryproto`` (a serialized BlobProto, as Caffe's ``compute_image_mean`` writes) or a ``.npy``
    array: (C, H, W), (1, C, H, W), or per-channel values (C,) -> (C, 1, 1).
    """
    path = Path(path)
    if path.suffix.lower() == ".npy":
        if not path.is_file():
            raise ModelError(f"mean file not found: {path}")
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot read mean file {path}: {exc}") from None
    elif path.suffix.lower() == ".binaryproto":
        data = _read_bytes(path, "mean")
        array = _blob_array(data, f"mean file {path}", 0)
    else:
        raise ModelError(f"mean file {path}: expected a .binaryproto or .npy file")
    array = np.asarray(array, dtype=np.float32)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    elif array.ndim == 1:
        array = array.reshape(-1, 1, 1)
    if array.ndim != 3 or array.shape[0] not in (1, 3):
        raise ModelError(f"mean file {path} has shape {array.shape}; expected (C, H, W) with 1 or 3 channels")
    return array


def write_caffemodel(path: str | Path, net_or_blobs, format: str = "v2", legacy_shapes: bool | None = None) -> None:
    """Write layer blobs as a ``.caffemodel`` that Caffe (and :func:`read_caffemodel`) reads.

    ``net_or_blobs``: a network built by :func:`load_caffe` (or its ``Model``), or a mapping layer name ->
    list of arrays (in Caffe's blob order). ``format``: ``'v2'`` (``layer``) or ``'v1'`` (``layers``, the old
    format). ``legacy_shapes``: store blob shapes as 4-D num/channels/height/width, as V1-era Caffe did
    (default: only for ``'v1'``).
    """
    if format not in ("v1", "v2"):
        raise ValueError(f"format must be 'v1' or 'v2', got {format!r}")
    legacy = format == "v1" if legacy_shapes is None else legacy_shapes
    net = Message()
    for name, (type_name, arrays) in _layers_to_write(net_or_blobs).items():
        layer = Message()
        layer.add("name", name)
        if format == "v2":
            if type_name:
                layer.add("type", type_name)
        else:
            layer.add("type", v1_type_number(type_name or ""))
        for array in arrays:
            layer.add("blobs", _blob_message(np.asarray(array, dtype=np.float32), legacy, name))
        net.add("layer" if format == "v2" else "layers", layer)
    Path(path).write_bytes(encode(net, CAFFEMODEL_SCHEMA, "NetParameter"))


def _layers_to_write(net_or_blobs) -> dict[str, tuple[str | None, Sequence]]:
    if isinstance(net_or_blobs, Mapping):
        return {name: (None, list(arrays)) for name, arrays in net_or_blobs.items()}
    module = getattr(net_or_blobs, "net", net_or_blobs)
    layers = {}
    for sub in module.modules():
        if isinstance(sub, CaffeLayer) and sub.blob_names:
            layers[sub.caffe_name] = (sub.caffe_type, [blob.detach().cpu().numpy() for blob in sub.blobs()])
    return layers


def _blob_message(array: np.ndarray, legacy: bool, layer: str) -> Message:
    blob = Message()
    if legacy:
        if array.ndim > 4:
            raise ValueError(f"layer {layer!r}: a {array.ndim}-D blob cannot be stored in legacy 4-D shape fields")
        for field, size in zip(("num", "channels", "height", "width"), (1,) * (4 - array.ndim) + array.shape):
            blob.add(field, size)
    else:
        shape = Message()
        shape.add("dim", np.array(array.shape, dtype=np.int64))
        blob.add("shape", shape)
    blob.add("data", array.reshape(-1))
    return blob


def _blob_array(chunk, where: str, offset: int) -> np.ndarray:
    blob = _decode(chunk, "BlobProto", where, offset)
    values = [np.asarray(v, dtype=np.float32).reshape(-1) for v in blob.all("data") + blob.all("double_data")]
    data = np.concatenate(values) if values else np.zeros(0, dtype=np.float32)
    legacy = [blob.int(field) for field in ("num", "channels", "height", "width")]
    if blob.has("shape"):
        shape = tuple(blob.message("shape").ints("dim"))
    elif any(blob.has(field) for field in ("num", "channels", "height", "width")):
        shape = tuple(legacy)
    else:
        shape = (data.size,)
    if int(np.prod(shape, dtype=np.int64)) != data.size:
        raise ModelError(f"{where}: shape {shape} needs {int(np.prod(shape, dtype=np.int64))} values but the file "
                         f"holds {data.size} (damaged file?)")
    return data.reshape(shape)


def _decode(data, type_name: str, where: str, base: int = 0) -> Message:
    try:
        return decode(data, CAFFEMODEL_SCHEMA, type_name, base, raw=_LAZY)
    except WireError as exc:
        raise ModelError(f"{where}: {exc} (byte {exc.offset}; truncated or damaged file?)") from None


def _read_bytes(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ModelError(f"{what} file not found: {path}") from None
    except OSError as exc:
        raise ModelError(f"cannot read {what} file {path}: {exc}") from None


__all__ = ["Blobs", "read_caffemodel", "read_mean", "write_caffemodel"]
