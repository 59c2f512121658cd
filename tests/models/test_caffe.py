"""Caffe import: each layer type against a loop-by-loop NumPy transcription of Caffe's formula, caffemodel files
written here (V1, V2, legacy shapes) read back, a PyTorch network exported and re-imported, the three prototxts
of the original toolbox, and the errors a user can meet."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import deepvis
from deepvis import ModelError
from deepvis.models.caffe import caffe_net, load_caffe, read_caffemodel, read_mean, write_caffemodel

ORIGINAL_MODELS = Path(__file__).resolve().parents[3] / "shared" / "data" / "original-models"
RNG = np.random.default_rng(0)


@pytest.fixture(autouse=True, scope="module")
def _one_thread(single_thread_torch):
    yield


# ---------------------------------------------------------------- NumPy references (Caffe's loops, transcribed)

def conv_ref(x, w, b, stride=(1, 1), pad=(0, 0), dilation=(1, 1), group=1):
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    oh = (h + 2 * pad[0] - (dilation[0] * (kh - 1) + 1)) // stride[0] + 1
    ow = (wd + 2 * pad[1] - (dilation[1] * (kw - 1) + 1)) // stride[1] + 1
    out = np.zeros((n, o, oh, ow))
    per_group = o // group
    for oc in range(o):
        g = oc // per_group
        for i in range(oh):
            for j in range(ow):
                patch = xp[:, g * cg:(g + 1) * cg,
                           i * stride[0]: i * stride[0] + dilation[0] * (kh - 1) + 1: dilation[0],
                           j * stride[1]: j * stride[1] + dilation[1] * (kw - 1) + 1: dilation[1]]
                out[:, oc, i, j] = (patch * w[oc]).sum(axis=(1, 2, 3)) + (b[oc] if b is not None else 0)
    return out


def pool_ref(x, method, kernel, stride, pad):
    n, c, h, w = x.shape
    sizes = []
    for size, k, s, p in zip((h, w), kernel, stride, pad):
        out = int(math.ceil((size + 2 * p - k) / s)) + 1
        if (pad[0] or pad[1]) and (out - 1) * s >= size + p:
            out -= 1
        sizes.append(out)
    result = np.zeros((n, c, *sizes))
    for i in range(sizes[0]):
        for j in range(sizes[1]):
            hs, ws = i * stride[0] - pad[0], j * stride[1] - pad[1]
            if method == "MAX":
                he, we = min(hs + kernel[0], h), min(ws + kernel[1], w)
                result[:, :, i, j] = x[:, :, max(hs, 0):he, max(ws, 0):we].max(axis=(2, 3))
            else:
                he, we = min(hs + kernel[0], h + pad[0]), min(ws + kernel[1], w + pad[1])
                area = (he - hs) * (we - ws)
                result[:, :, i, j] = x[:, :, max(hs, 0):min(he, h), max(ws, 0):min(we, w)].sum(axis=(2, 3)) / area
    return result


def lrn_across_ref(x, n, alpha, beta, k):
    out = np.zeros_like(x, dtype=np.float64)
    channels = x.shape[1]
    for c in range(channels):
        lo, hi = max(0, c - (n - 1) // 2), min(channels, c + (n - 1) // 2 + 1)
        scale = k + alpha / n * (x[:, lo:hi] ** 2).sum(axis=1)
        out[:, c] = x[:, c] * scale ** -beta
    return out


def lrn_within_ref(x, n, alpha, beta):
    out = np.zeros_like(x, dtype=np.float64)
    half = (n - 1) // 2
    for i in range(x.shape[2]):
        for j in range(x.shape[3]):
            window = x[:, :, max(0, i - half):i + half + 1, max(0, j - half):j + half + 1]
            out[:, :, i, j] = x[:, :, i, j] * (1 + alpha / n ** 2 * (window ** 2).sum(axis=(2, 3))) ** -beta
    return out


def softmax_ref(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


# ---------------------------------------------------------------- helpers

def _input_block(shape):
    return 'input: "data"\n' + "".join(f"input_dim: {d}\n" for d in shape)


def _layer(name, type_, bottoms, tops, body=""):
    lines = [f'layer {{ name: "{name}" type: "{type_}"']
    lines += [f'  bottom: "{b}"' for b in bottoms] + [f'  top: "{t}"' for t in tops]
    return "\n".join(lines) + f"\n  {body}\n}}\n"


def _run(tmp_path, shape, layers_text, x, blobs=None, format="v2"):
    """Build a net (input ``data`` of ``shape``) from prototxt text, optionally with blobs, and run it on x."""
    proto = tmp_path / "net.prototxt"
    proto.write_text(_input_block(shape) + layers_text)
    weights = None
    if blobs is not None:
        weights = tmp_path / "net.caffemodel"
        write_caffemodel(weights, blobs, format=format)
    net = caffe_net(proto, weights)
    with torch.no_grad():
        return net, net(torch.from_numpy(x.astype(np.float32))).numpy()


def _pick(name, channels, total, first):
    """A 1x1 convolution that copies channels first..first+channels-1 (to feed multi-input layers)."""
    weight = np.zeros((channels, total, 1, 1), np.float32)
    weight[np.arange(channels), first + np.arange(channels)] = 1
    text = _layer(name, "Convolution", ["data"], [name],
                  f"convolution_param {{ num_output: {channels} kernel_size: 1 bias_term: false }}")
    return text, {name: [weight]}


def _close(actual, expected, atol=1e-5):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    diff = float(np.abs(actual - expected).max())
    assert diff <= atol + 1e-5 * float(np.abs(expected).max()), diff
    return diff


# ---------------------------------------------------------------- each layer type against its reference

CONV_CASES = {
    "plain": ("num_output: 4 kernel_size: 3", dict()),
    "stride_pad_groups": ("num_output: 6 kernel_size: 3 stride: 2 pad: 1 group: 2",
                          dict(stride=(2, 2), pad=(1, 1), group=2)),
    "dilation_no_bias": ("num_output: 4 kernel_size: 3 dilation: 2 bias_term: false", dict(dilation=(2, 2))),
    "hw_spellings": ("num_output: 4 kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 2 pad_w: 1",
                     dict(stride=(2, 1), pad=(2, 1))),
    "repeated_kernel": ("num_output: 3 kernel_size: 1 kernel_size: 3 pad: 0 pad: 1", dict(pad=(0, 1))),
}


@pytest.mark.parametrize("case", sorted(CONV_CASES))
def test_convolution_equals_reference(tmp_path, case):
    body, kwargs = CONV_CASES[case]
    group = kwargs.get("group", 1)
    x = RNG.standard_normal((2, 4, 9, 8)).astype(np.float32)
    out_channels = int(body.split()[1])
    kernel = {"plain": (3, 3), "stride_pad_groups": (3, 3), "dilation_no_bias": (3, 3), "hw_spellings": (3, 2),
              "repeated_kernel": (1, 3)}[case]
    w = RNG.standard_normal((out_channels, 4 // group) + kernel).astype(np.float32)
    b = None if "bias_term: false" in body else RNG.standard_normal(out_channels).astype(np.float32)
    text = _layer("conv", "Convolution", ["data"], ["conv"], f"convolution_param {{ {body} }}")
    _, out = _run(tmp_path, x.shape, text, x, {"conv": [w] if b is None else [w, b]})
    _close(out, conv_ref(x, w, b, **kwargs))


POOL_CASES = [  # (H, W, method, settings, kernel, stride, pad)
    (7, 7, "MAX", "kernel_size: 3 stride: 2", (3, 3), (2, 2), (0, 0)),          # ceil == floor
    (8, 8, "MAX", "kernel_size: 3 stride: 2", (3, 3), (2, 2), (0, 0)),          # ceil > floor
    (8, 8, "AVE", "kernel_size: 3 stride: 2", (3, 3), (2, 2), (0, 0)),          # last window clipped
    (6, 9, "AVE", "kernel_size: 3 stride: 2 pad: 1", (3, 3), (2, 2), (1, 1)),   # padding counted, overflow not
    (5, 5, "MAX", "kernel_size: 2 stride: 2 pad: 1", (2, 2), (2, 2), (1, 1)),   # window in the padding dropped
    (5, 5, "AVE", "kernel_size: 2 stride: 2 pad: 1", (2, 2), (2, 2), (1, 1)),
    (6, 6, "MAX", "kernel_size: 3 stride: 2 pad: 2", (3, 3), (2, 2), (2, 2)),   # pad > kernel/2 (not native)
    (6, 6, "AVE", "kernel_size: 3 stride: 2 pad: 2", (3, 3), (2, 2), (2, 2)),
    (7, 9, "MAX", "kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 3 pad_h: 1 pad_w: 0", (3, 2), (2, 3), (1, 0)),
    (7, 9, "AVE", "kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 3 pad_h: 1 pad_w: 0", (3, 2), (2, 3), (1, 0)),
]


@pytest.mark.parametrize("h, w, method, settings, kernel, stride, pad", POOL_CASES)
def test_pooling_equals_reference(tmp_path, h, w, method, settings, kernel, stride, pad):
    x = RNG.standard_normal((2, 3, h, w)).astype(np.float32)
    text = _layer("pool", "Pooling", ["data"], ["pool"], f"pooling_param {{ pool: {method} {settings} }}")
    _, out = _run(tmp_path, x.shape, text, x)
    _close(out, pool_ref(x, method, kernel, stride, pad))


def test_pooling_ceil_mode_differs_from_floor_where_expected(tmp_path):
    x = RNG.standard_normal((1, 1, 8, 8)).astype(np.float32)
    _, out = _run(tmp_path, x.shape, _layer("pool", "Pooling", ["data"], ["pool"],
                                            "pooling_param { pool: MAX kernel_size: 3 stride: 2 }"), x)
    assert out.shape[-2:] == (4, 4)  # floor((8 - 3) / 2) + 1 would be 3


@pytest.mark.parametrize("method", ["MAX", "AVE"])
def test_global_pooling(tmp_path, method):
    x = RNG.standard_normal((2, 5, 6, 7)).astype(np.float32)
    net, out = _run(tmp_path, x.shape, _layer("pool", "Pooling", ["data"], ["pool"],
                                              f"pooling_param {{ pool: {method} global_pooling: true }}"), x)
    expected = x.max(axis=(2, 3)) if method == "MAX" else x.mean(axis=(2, 3))
    _close(out, expected)  # the net returns an N x C x 1 x 1 output as N x C
    with deepvis.Probe(net, ["pool"]) as probe, torch.no_grad():
        net(torch.from_numpy(x))
    assert probe["pool"].shape == (2, 5, 1, 1)  # the layer itself keeps Caffe's shape


@pytest.mark.parametrize("n, alpha, beta, k", [(5, 1e-1, 0.75, 1.0), (3, 2.0, 0.5, 2.5)])
def test_lrn_across_channels_equals_reference(tmp_path, n, alpha, beta, k):
    x = (RNG.standard_normal((2, 7, 4, 5)) * 3).astype(np.float32)
    text = _layer("norm", "LRN", ["data"], ["norm"], f"lrn_param {{ local_size: {n} alpha: {alpha} beta: {beta} "
                                                     f"k: {k} }}")
    _, out = _run(tmp_path, x.shape, text, x)
    _close(out, lrn_across_ref(x, n, alpha, beta, k))


def test_lrn_within_channel_equals_reference(tmp_path):
    x = (RNG.standard_normal((2, 3, 6, 5)) * 3).astype(np.float32)
    text = _layer("norm", "LRN", ["data"], ["norm"],
                  "lrn_param { local_size: 3 alpha: 0.5 beta: 0.6 norm_region: WITHIN_CHANNEL }")
    _, out = _run(tmp_path, x.shape, text, x)
    _close(out, lrn_within_ref(x, 3, 0.5, 0.6))


@pytest.mark.parametrize("operation, coeffs", [("SUM", (0.5, -2.0)), ("SUM", ()), ("PROD", ()), ("MAX", ())])
def test_eltwise_equals_reference(tmp_path, operation, coeffs):
    x = RNG.standard_normal((2, 6, 3, 4)).astype(np.float32)
    first, first_blobs = _pick("a", 3, 6, 0)
    second, second_blobs = _pick("b", 3, 6, 3)
    settings = f"operation: {operation} " + " ".join(f"coeff: {c}" for c in coeffs)
    text = first + second + _layer("sum", "Eltwise", ["a", "b"], ["sum"], f"eltwise_param {{ {settings} }}")
    _, out = _run(tmp_path, x.shape, text, x, {**first_blobs, **second_blobs})
    a, b = x[:, :3], x[:, 3:]
    expected = {"SUM": (coeffs[0] * a + coeffs[1] * b) if coeffs else a + b, "PROD": a * b,
                "MAX": np.maximum(a, b)}[operation]
    _close(out, expected)


def test_concat_equals_reference(tmp_path):
    x = RNG.standard_normal((2, 5, 3, 4)).astype(np.float32)
    first, first_blobs = _pick("a", 2, 5, 3)
    second, second_blobs = _pick("b", 3, 5, 0)
    text = first + second + _layer("cat", "Concat", ["a", "b"], ["cat"])
    _, out = _run(tmp_path, x.shape, text, x, {**first_blobs, **second_blobs})
    _close(out, np.concatenate([x[:, 3:5], x[:, 0:3]], axis=1))


@pytest.mark.parametrize("factor", [4.0, 0.0])
def test_batchnorm_and_scale_equal_reference(tmp_path, factor):
    x = RNG.standard_normal((2, 4, 3, 3)).astype(np.float32)
    mean, var = RNG.standard_normal(4).astype(np.float32), RNG.uniform(0.5, 2, 4).astype(np.float32)
    gamma, beta = RNG.standard_normal(4).astype(np.float32), RNG.standard_normal(4).astype(np.float32)
    text = (_layer("bn", "BatchNorm", ["data"], ["bn"], "batch_norm_param { use_global_stats: true eps: 0.001 }")
            + _layer("scale", "Scale", ["bn"], ["bn"], "scale_param { bias_term: true }"))
    blobs = {"bn": [mean, var, np.array([factor], np.float32)], "scale": [gamma, beta]}
    _, out = _run(tmp_path, x.shape, text, x, blobs)
    s = 0.0 if factor == 0 else 1 / factor
    normalized = (x - (mean * s)[:, None, None]) / np.sqrt((var * s)[:, None, None] + 0.001)
    _close(out, normalized * gamma[:, None, None] + beta[:, None, None])


def test_scale_by_a_second_input(tmp_path):
    x = RNG.standard_normal((1, 4, 3, 3)).astype(np.float32)
    first, first_blobs = _pick("a", 2, 4, 0)
    gate = _layer("gate", "Pooling", ["data"], ["gate"], "pooling_param { pool: AVE global_pooling: true }")
    second, second_blobs = _pick("g", 2, 4, 2)
    second = second.replace('bottom: "data"', 'bottom: "gate"') + _layer("flat", "Flatten", ["g"], ["flat"])
    text = first + gate + second + _layer("scaled", "Scale", ["a", "flat"], ["scaled"], "scale_param { axis: 0 }")
    _, out = _run(tmp_path, x.shape, text, x, {**first_blobs, **second_blobs})
    _close(out, x[:, :2] * x[:, 2:].mean(axis=(2, 3), keepdims=True))


def test_inner_product_flattens_implicitly(tmp_path):
    x = RNG.standard_normal((2, 3, 4, 5)).astype(np.float32)
    w, b = RNG.standard_normal((7, 60)).astype(np.float32), RNG.standard_normal(7).astype(np.float32)
    text = _layer("fc", "InnerProduct", ["data"], ["fc"], "inner_product_param { num_output: 7 }")
    _, out = _run(tmp_path, x.shape, text, x, {"fc": [w, b]})
    _close(out, x.reshape(2, -1) @ w.T + b)


def test_softmax_on_channels_of_a_4d_blob(tmp_path):
    x = RNG.standard_normal((2, 5, 3, 1)).astype(np.float32)
    _, out = _run(tmp_path, x.shape, _layer("prob", "Softmax", ["data"], ["prob"]), x)
    _close(out, softmax_ref(x, 1))


@pytest.mark.parametrize("type_, settings, reference", [
    ("ReLU", "relu_param { negative_slope: 0.1 }", lambda x: np.where(x > 0, x, 0.1 * x)),
    ("ReLU", "", lambda x: np.maximum(x, 0)),
    ("Sigmoid", "", lambda x: 1 / (1 + np.exp(-x))),
    ("TanH", "", np.tanh),
    ("Dropout", "dropout_param { dropout_ratio: 0.5 }", lambda x: x),
    ("Flatten", "", lambda x: x.reshape(x.shape[0], -1)),
    ("Flatten", "flatten_param { axis: 2 }", lambda x: x.reshape(x.shape[0], x.shape[1], -1)),
])
def test_elementwise_layers_equal_reference(tmp_path, type_, settings, reference):
    x = RNG.standard_normal((2, 3, 4, 5)).astype(np.float32)
    _, out = _run(tmp_path, x.shape, _layer("layer", type_, ["data"], ["out"], settings), x)
    _close(out, reference(x.astype(np.float64)))


def test_split_feeds_every_top(tmp_path):
    x = RNG.standard_normal((1, 2, 3, 3)).astype(np.float32)
    text = (_layer("split", "Split", ["data"], ["s1", "s2"])
            + _layer("sum", "Eltwise", ["s1", "s2"], ["sum"], "eltwise_param { coeff: 1 coeff: 3 }"))
    _, out = _run(tmp_path, x.shape, text, x)
    _close(out, 4 * x)


def test_in_place_layers_change_the_blob_for_later_readers_only(tmp_path):
    # 'before' reads data, then 'rect' rectifies data in place, then 'after' reads it: tanh(x) + tanh(relu(x)).
    x = RNG.standard_normal((1, 2, 3, 3)).astype(np.float32)
    text = (_layer("before", "TanH", ["data"], ["t1"]) + _layer("rect", "ReLU", ["data"], ["data"])
            + _layer("after", "TanH", ["data"], ["t2"]) + _layer("sum", "Eltwise", ["t1", "t2"], ["sum"]))
    _, out = _run(tmp_path, x.shape, text, x)
    _close(out, np.tanh(x) + np.tanh(np.maximum(x, 0)))


def test_in_place_relu_runs_inside_the_layer_whose_blob_it_rectifies(tmp_path):
    x = RNG.standard_normal((1, 3, 5, 5)).astype(np.float32)
    w = RNG.standard_normal((2, 3, 3, 3)).astype(np.float32)
    text = (_layer("conv", "Convolution", ["data"], ["conv"],
                   "convolution_param { num_output: 2 kernel_size: 3 bias_term: false }")
            + _layer("relu", "ReLU", ["conv"], ["conv"]) + _layer("pool", "Pooling", ["conv"], ["pool"],
                                                               "pooling_param { pool: AVE kernel_size: 3 }"))
    _run(tmp_path, x.shape, text, x, {"conv": [w]})
    model = load_caffe(tmp_path / "net.prototxt", tmp_path / "net.caffemodel")
    assert model.outputs == "logits" and model.default_layers == ["conv", "pool"]
    assert [info.name for info in deepvis.list_layers(model)] == ["conv.relu", "conv", "pool"]
    with deepvis.Probe(model, ["conv"]) as probe, torch.no_grad():
        model.net(torch.from_numpy(x))
    _close(probe["conv"].numpy(), np.maximum(conv_ref(x, w, None), 0))


# ---------------------------------------------------------------- caffemodel files

def _tiny_prototxt(v1: bool = False) -> str:
    if v1:
        return (_input_block((1, 3, 6, 6))
                + 'layers { name: "conv" type: CONVOLUTION bottom: "data" top: "conv" blobs_lr: 1 blobs_lr: 2\n'
                  '  convolution_param { num_output: 2 kernel_size: 3 weight_filler { type: "gaussian" } } }\n'
                  'layers { name: "relu" type: RELU bottom: "conv" top: "conv" }\n'
                  'layers { name: "fc" type: INNER_PRODUCT bottom: "conv" top: "fc"\n'
                  '  inner_product_param { num_output: 4 } }\n')
    return (_input_block((1, 3, 6, 6))
            + _layer("conv", "Convolution", ["data"], ["conv"],
                     'param { lr_mult: 1 } convolution_param { num_output: 2 kernel_size: 3 '
                     'weight_filler { type: "xavier" } }')
            + _layer("relu", "ReLU", ["conv"], ["conv"])
            + _layer("fc", "InnerProduct", ["conv"], ["fc"], "inner_product_param { num_output: 4 }"))


def _tiny_blobs():
    return {"conv": [RNG.standard_normal((2, 3, 3, 3)).astype(np.float32), RNG.standard_normal(2).astype(np.float32)],
            "fc": [RNG.standard_normal((4, 32)).astype(np.float32), RNG.standard_normal(4).astype(np.float32)]}


@pytest.mark.parametrize("format, legacy", [("v2", False), ("v1", True), ("v1", False), ("v2", True)])
def test_caffemodel_round_trip(tmp_path, format, legacy):
    blobs = _tiny_blobs()
    path = tmp_path / "tiny.caffemodel"
    write_caffemodel(path, blobs, format=format, legacy_shapes=legacy)
    back = read_caffemodel(path)
    assert list(back) == ["conv", "fc"]
    for name, arrays in blobs.items():
        for array, read in zip(arrays, back[name]):
            expected_shape = (1,) * (4 - array.ndim) + array.shape if legacy else array.shape
            assert read.shape == expected_shape and read.dtype == np.float32
            np.testing.assert_array_equal(read.reshape(array.shape), array)


@pytest.mark.parametrize("prototxt_v1", [False, True])
@pytest.mark.parametrize("format", ["v1", "v2"])
def test_weights_load_whatever_the_formats(tmp_path, prototxt_v1, format):
    blobs = _tiny_blobs()
    proto, weights = tmp_path / "tiny.prototxt", tmp_path / "tiny.caffemodel"
    proto.write_text(_tiny_prototxt(prototxt_v1))
    write_caffemodel(weights, blobs, format=format)
    model = load_caffe(proto, weights)
    x = RNG.standard_normal((1, 3, 6, 6)).astype(np.float32)
    with torch.no_grad():
        out = model.net(torch.from_numpy(x)).numpy()
    hidden = np.maximum(conv_ref(x, *blobs["conv"]), 0).reshape(1, -1)
    _close(out, hidden @ blobs["fc"][0].T + blobs["fc"][1])
    write_caffemodel(tmp_path / "again.caffemodel", model, format=format)  # from the loaded network
    again = read_caffemodel(tmp_path / "again.caffemodel")
    np.testing.assert_array_equal(again["fc"][0].reshape(4, 32), blobs["fc"][0])


def _unpacked_blob(values: np.ndarray) -> bytes:
    """A BlobProto in the oldest style: legacy shape fields and one key per float (not packed)."""
    def varint(v):
        out = bytearray()
        while True:
            out.append((v & 0x7F) | (0x80 if v > 0x7F else 0))
            v >>= 7
            if not v:
                return bytes(out)
    head = b"".join(bytes([field << 3]) + varint(size) for field, size in zip((1, 2, 3, 4), (1, 1, 1, values.size)))
    return head + b"".join(b"\x2d" + np.float32(v).tobytes() for v in values)


def test_mean_files(tmp_path):
    mean = RNG.uniform(0, 255, (3, 4, 5)).astype(np.float32)
    np.save(tmp_path / "mean.npy", mean)
    np.testing.assert_array_equal(read_mean(tmp_path / "mean.npy"), mean)
    per_channel = (tmp_path / "bgr.npy")
    np.save(per_channel, np.array([104.0, 117.0, 123.0]))
    assert read_mean(per_channel).shape == (3, 1, 1)
    (tmp_path / "mean.binaryproto").write_bytes(_unpacked_blob(np.arange(6, dtype=np.float32)))
    np.testing.assert_array_equal(read_mean(tmp_path / "mean.binaryproto"), np.arange(6).reshape(1, 1, 6))
    np.save(tmp_path / "flat.npy", np.zeros((4, 5)))
    with pytest.raises(ModelError, match=r"shape \(4, 5\)"):
        read_mean(tmp_path / "flat.npy")
    # a packed, legacy-shaped (1, 3, 4, 5) mean as compute_image_mean writes it
    from deepvis.models.caffe.weights import _blob_message
    from deepvis.models.caffe.schema import CAFFEMODEL_SCHEMA
    from deepvis.models.caffe.wire import encode
    (tmp_path / "mean2.binaryproto").write_bytes(encode(_blob_message(mean, True, "mean"), CAFFEMODEL_SCHEMA,
                                                        "BlobProto"))
    np.testing.assert_array_equal(read_mean(tmp_path / "mean2.binaryproto"), mean)
    with pytest.raises(ModelError, match="not found"):
        read_mean(tmp_path / "missing.binaryproto")
    with pytest.raises(ModelError, match=r"\.binaryproto or \.npy"):
        read_mean(tmp_path / "mean.txt")


def test_unpacked_float_blobs_are_read(tmp_path):
    values = RNG.standard_normal(7).astype(np.float32)
    layer = b"\x0a\x01a" + b"\x3a" + _length(_unpacked_blob(values)) + _unpacked_blob(values)  # name 'a', blob
    (tmp_path / "old.caffemodel").write_bytes(b"\xa2\x06" + _length(layer) + layer)  # field 100 = layer
    blobs = read_caffemodel(tmp_path / "old.caffemodel")
    np.testing.assert_array_equal(blobs["a"][0].reshape(-1), values)


def _length(payload: bytes) -> bytes:
    assert len(payload) < 128
    return bytes([len(payload)])


# ---------------------------------------------------------------- a PyTorch network, exported and re-imported

class SmallNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(8, 6, 3, stride=1, groups=2)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.AvgPool2d(2, 2)
        self.fc = nn.Linear(6 * 3 * 2, 5)

    def forward(self, x):
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        return self.fc(x.flatten(1))


SMALL_NET_PROTOTXT = """name: "small"
input: "data"
input_shape { dim: 1 dim: 3 dim: 16 dim: 12 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 8 kernel_size: 3 pad: 1 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
  convolution_param { num_output: 6 kernel_size: 3 group: 2 } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2"
  pooling_param { pool: AVE kernel_size: 2 stride: 2 } }
layer { name: "fc" type: "InnerProduct" bottom: "pool2" top: "fc" inner_product_param { num_output: 5 } }
"""


@pytest.fixture(scope="module")
def small_pair(tmp_path_factory):
    torch.manual_seed(0)
    reference = SmallNet().eval()
    folder = tmp_path_factory.mktemp("small")
    (folder / "small.prototxt").write_text(SMALL_NET_PROTOTXT)
    blobs = {name: [p.detach().numpy() for p in getattr(reference, name).parameters()]
             for name in ("conv1", "conv2", "fc")}
    write_caffemodel(folder / "small.caffemodel", blobs)
    return reference, load_caffe(folder / "small.prototxt", folder / "small.caffemodel")


def test_exported_pytorch_network_gives_the_same_outputs(small_pair):
    reference, model = small_pair
    x = torch.randn(4, 3, 16, 12)
    with torch.no_grad():
        diff = _close(model.net(x).numpy(), reference(x).numpy(), atol=1e-5)
    print(f"max abs diff, caffemodel import vs PyTorch: {diff:.2e}")
    assert model.preprocessing.input_size == (16, 12) and model.preprocessing.channel_order == "bgr"
    assert model.preprocessing.value_scale == 255.0 and model.outputs == "logits"


@pytest.mark.parametrize("mode", ["guided", "deconv", "gradient"])
def test_backprop_modes_match_the_pytorch_network(small_pair, mode):
    reference, model = small_pair
    deepvis.models.model.prepare(model.net)
    x = torch.randn(1, 3, 16, 12)
    imported = deepvis.backprop(model, x, "conv2:1", mode=mode)
    original = deepvis.backprop(deepvis.Model(net=reference, preprocessing=model.preprocessing), x,
                                "relu2:1", mode=mode)
    diff = _close(imported.input_grad.numpy(), original.input_grad.numpy(), atol=1e-5)
    assert float(original.input_grad.abs().max()) > 0
    assert imported.rectifiers_modified == original.rectifiers_modified
    print(f"max abs diff, {mode} backprop: {diff:.2e}")


def test_the_same_network_through_caffemodel_and_onnx(small_pair, tmp_path):
    """Issue 6: a .caffemodel and an ONNX file written from one PyTorch network both reproduce it, and guided
    backprop through the ONNX import equals guided backprop through the network itself."""
    pytest.importorskip("onnx")
    import warnings

    reference, caffe_model = small_pair
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(reference, torch.zeros(1, 3, 16, 12), str(tmp_path / "small.onnx"), dynamo=False)
    onnx_model = deepvis.load_model(str(tmp_path / "small.onnx"))
    x = torch.randn(3, 3, 16, 12)
    with torch.no_grad():
        expected = reference(x).numpy()
        _close(caffe_model.net(x).numpy(), expected, atol=1e-5)
        _close(onnx_model.net(x).numpy(), expected, atol=1e-5)
    original = deepvis.Model(net=reference, preprocessing=onnx_model.preprocessing)
    fc = next(name for name in onnx_model.layer_names() if "Gemm" in name or "fc" in name.lower())
    imported = deepvis.backprop(onnx_model, x[:1], f"{fc}:2", mode="guided")
    direct = deepvis.backprop(original, x[:1], "fc:2", mode="guided")
    assert float(direct.input_grad.abs().max()) > 0 and imported.rectifiers_modified == direct.rectifiers_modified
    _close(imported.input_grad.numpy(), direct.input_grad.numpy(), atol=1e-6)


# ---------------------------------------------------------------- the original toolbox's three networks

CAFFENET_SHAPES = {"conv1": (96, 3, 11, 11), "conv2": (256, 48, 5, 5), "conv3": (384, 256, 3, 3),
                   "conv4": (384, 192, 3, 3), "conv5": (256, 192, 3, 3), "fc6": (4096, 9216),
                   "fc7": (4096, 4096), "fc8": (1000, 4096)}


def _original(relative: str) -> Path:
    path = ORIGINAL_MODELS / relative
    if not path.is_file():
        pytest.skip(f"{path} not present (the shared data folder is not checked out beside this repository)")
    return path


def _random_blobs(shapes: dict[str, list[tuple[int, ...]]]) -> dict[str, list[np.ndarray]]:
    return {name: [(RNG.standard_normal(shape, dtype=np.float32) * 0.01) for shape in blob_shapes]
                   for name, blob_shapes in shapes.items()}


def _check_probabilities(model):
    x = torch.randn(1, 3, *model.preprocessing.input_size) * 50
    with torch.no_grad():
        probs = model.net(x)
    assert probs.shape == (1, 1000) and model.outputs == "probs"
    assert abs(float(probs.sum()) - 1) < 1e-4 and float(probs.min()) >= 0


@pytest.mark.slow
def test_caffenet_yos_with_v1_weights(tmp_path):
    proto = _original("caffenet-yos/caffenet-yos-deploy.prototxt")
    blobs = _random_blobs({name: [shape, shape[:1]] for name, shape in CAFFENET_SHAPES.items()})
    write_caffemodel(tmp_path / "caffenet.caffemodel", blobs, format="v1")  # V1, legacy 4-D shapes
    model = load_caffe(proto, tmp_path / "caffenet.caffemodel")
    np.testing.assert_array_equal(model.net.conv2.weight.detach().numpy(), blobs["conv2"][0])
    np.testing.assert_array_equal(model.net.fc8.bias.detach().numpy(), blobs["fc8"][1])
    _check_probabilities(model)
    expected = ["conv1", "pool1", "norm1", "conv2", "pool2", "norm2", "conv3", "conv4", "conv5", "pool5", "fc6",
                "fc7", "fc8", "prob"]
    assert model.default_layers == expected
    catalog = {info.name: info for info in deepvis.list_layers(model)}
    assert set(expected) <= set(catalog) and "conv1.relu1" in catalog and "fc6.drop6" in catalog
    assert catalog["conv5"].shape == (256, 13, 13) and catalog["pool5"].shape == (256, 6, 6)
    assert model.preprocessing.input_size == (227, 227) and model.preprocessing.channel_order == "bgr"
    from deepvis.engine.receptive_field import receptive_field
    assert receptive_field(model, "pool5").size == (195, 195)  # AlexNet's well-known numbers
    assert receptive_field(model, "pool5").stride == (32, 32)


def _structure_blobs(model) -> dict[str, list[np.ndarray]]:
    from deepvis.models.caffe.layers import CaffeLayer

    shapes = {m.caffe_name: [tuple(b.shape) for b in m.blobs()] for m in model.net.modules()
              if isinstance(m, CaffeLayer) and m.blob_names}
    return _random_blobs(shapes)


@pytest.mark.slow
@pytest.mark.parametrize("relative, names, weight_shapes", [
    ("bvlc-googlenet/bvlc-googlenet-deploy.prototxt",
     ["conv1/7x7_s2", "inception_3a/1x1", "inception_3a/output", "inception_5b/pool_proj", "pool5/7x7_s1",
      "loss3/classifier", "prob"],
     {"inception_3a/1x1": (64, 192, 1, 1), "inception_4e/5x5": (128, 32, 5, 5), "loss3/classifier": (1000, 1024)}),
    ("squeezenet/deploy.prototxt",
     ["conv1", "pool1", "fire2/squeeze1x1", "fire2/expand3x3", "fire2/concat", "fire9/concat", "conv10", "pool10",
      "prob"],
     {"fire2/squeeze1x1": (16, 96, 1, 1), "fire9/expand3x3": (256, 64, 3, 3), "conv10": (1000, 512, 1, 1)}),
])
def test_v2_originals_with_weights(tmp_path, relative, names, weight_shapes):
    proto = _original(relative)
    blobs = _structure_blobs(load_caffe(proto))
    for name, shape in weight_shapes.items():
        assert blobs[name][0].shape == shape
    write_caffemodel(tmp_path / "net.caffemodel", blobs)
    model = load_caffe(proto, tmp_path / "net.caffemodel")
    _check_probabilities(model)
    catalog = [info.name for info in deepvis.list_layers(model)]
    assert all(name in catalog for name in names)
    assert all(name in model.default_layers for name in names)
    assert [n for n in model.default_layers if n in names] == names  # in forward order
    unit = f"{names[1]}:3"
    result = deepvis.backprop(model, torch.randn(1, 3, *model.preprocessing.input_size), unit, mode="guided")
    grad = result.input_grad
    assert torch.isfinite(grad).all() and float(grad.abs().max()) > 0 and result.rectifiers_modified > 0


# ---------------------------------------------------------------- inputs: gray, non-square, Input layers

def test_gray_non_square_input_layer(tmp_path):
    proto = tmp_path / "gray.prototxt"
    proto.write_text('layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 dim: 20 '
                     'dim: 32 } } }\n'
                     + _layer("conv", "Convolution", ["data"], ["conv"],
                              "convolution_param { num_output: 4 kernel_size: 5 stride: 2 }")
                     + _layer("relu", "ReLU", ["conv"], ["conv"])
                     + _layer("pool", "Pooling", ["conv"], ["pool"], "pooling_param { pool: MAX kernel_size: 3 "
                                                                     "stride: 2 }")
                     + _layer("fc", "InnerProduct", ["pool"], ["fc"], "inner_product_param { num_output: 10 }")
                     + _layer("prob", "Softmax", ["fc"], ["prob"]))
    model = load_caffe(proto)
    pre = model.preprocessing
    assert (pre.input_size, pre.channel_order, pre.mean, pre.std) == ((20, 32), "gray", (0.0,), (1.0,))
    catalog = {info.name: info.shape for info in deepvis.list_layers(model)}
    assert catalog["conv"] == (4, 8, 14) and catalog["pool"] == (4, 4, 7) and catalog["prob"] == (10,)
    from PIL import Image
    image = Image.fromarray(RNG.integers(0, 255, (40, 64, 3), dtype=np.uint8))
    top = deepvis.predict(model, image, top=3)
    assert len(top) == 3
    result = deepvis.backprop(model, image, "conv:1@3,3", mode="guided")
    assert result.input_grad.shape == (1, 20, 32) and result.rgb_grad().shape == (20, 32, 3)


def test_input_shape_declaration_and_train_only_layers_skipped(tmp_path):
    proto = tmp_path / "net.prototxt"
    proto.write_text('input: "data"\ninput_shape { dim: 1 dim: 3 dim: 10 dim: 14 }\n'
                     'layer { name: "train_data" type: "Data" top: "data" include { phase: TRAIN } }\n'
                     + _layer("pool", "Pooling", ["data"], ["pool"], "pooling_param { pool: MAX kernel_size: 2 }")
                     + _layer("loss", "SoftmaxWithLoss", ["pool", "label"], ["loss"])
                     + 'layer { name: "acc" type: "Accuracy" bottom: "pool" bottom: "label" top: "acc" '
                       'include { phase: TEST } }\n')
    model = load_caffe(proto)
    assert model.preprocessing.input_size == (10, 14) and model.default_layers == ["pool"]


# ---------------------------------------------------------------- errors: one line, naming what is wrong

def _one_line_error(call, *patterns):
    with pytest.raises(ModelError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message, message
    for pattern in patterns:
        assert pattern in message, (pattern, message)
    return message


def test_truncated_and_garbage_caffemodels(tmp_path):
    proto = tmp_path / "tiny.prototxt"
    proto.write_text(_tiny_prototxt())
    path = tmp_path / "tiny.caffemodel"
    write_caffemodel(path, _tiny_blobs())
    data = path.read_bytes()
    (tmp_path / "cut.caffemodel").write_bytes(data[: len(data) - 20])
    _one_line_error(lambda: load_caffe(proto, tmp_path / "cut.caffemodel"), "layer #2 (after 'conv')", "byte")
    layer_cut = data[:120]
    (tmp_path / "cut2.caffemodel").write_bytes(layer_cut)
    _one_line_error(lambda: load_caffe(proto, tmp_path / "cut2.caffemodel"), "cut2.caffemodel: layer #1", "byte 0")
    (tmp_path / "garbage.caffemodel").write_bytes(np.random.default_rng(1).integers(0, 256, 5000, np.uint8).tobytes())
    _one_line_error(lambda: load_caffe(proto, tmp_path / "garbage.caffemodel"), "garbage.caffemodel", "not a Caffe")
    (tmp_path / "text.caffemodel").write_text("this is not a caffemodel at all\n" * 10)
    _one_line_error(lambda: load_caffe(proto, tmp_path / "text.caffemodel"), "text.caffemodel", "not a Caffe")
    _one_line_error(lambda: load_caffe(proto, tmp_path / "missing.caffemodel"), "not found", "missing.caffemodel")


def test_damaged_blob_names_its_layer(tmp_path):
    proto = tmp_path / "tiny.prototxt"
    proto.write_text(_tiny_prototxt())
    blobs = _tiny_blobs()
    path = tmp_path / "tiny.caffemodel"
    write_caffemodel(path, blobs)
    data = bytearray(path.read_bytes())
    where = bytes(data).find(b"\x0a\x02\x04\x20")  # BlobShape { dim: [4, 32] } (packed) of fc's weight
    assert where > 0
    data[where + 3] = 33  # now (4, 33): 132 values wanted, 128 stored
    (tmp_path / "bad.caffemodel").write_bytes(bytes(data))
    _one_line_error(lambda: load_caffe(proto, tmp_path / "bad.caffemodel"), "layer 'fc'", "(4, 33)")


def test_shape_mismatch_names_layer_and_shapes(tmp_path):
    proto = tmp_path / "tiny.prototxt"
    proto.write_text(_tiny_prototxt())
    blobs = _tiny_blobs()
    blobs["fc"][0] = RNG.standard_normal((4, 30)).astype(np.float32)
    write_caffemodel(tmp_path / "w.caffemodel", blobs)
    _one_line_error(lambda: load_caffe(proto, tmp_path / "w.caffemodel"), "layer 'fc'", "(4, 30)", "(4, 32)")
    write_caffemodel(tmp_path / "few.caffemodel", {"conv": blobs["conv"][:1], "fc": blobs["fc"]})
    _one_line_error(lambda: load_caffe(proto, tmp_path / "few.caffemodel"), "layer 'conv'", "1 blobs")
    write_caffemodel(tmp_path / "other.caffemodel", {"something": [np.zeros(3, np.float32)]})
    _one_line_error(lambda: load_caffe(proto, tmp_path / "other.caffemodel"), "none of the prototxt's layers")


@pytest.mark.parametrize("text, patterns", [
    ('input: "data"\ninput_dim: 1\ninput_dim: 3\ninput_dim: 8\ninput_dim: 8\nlayer {\n  name: "c"\n  type: '
     '"Convolution"\n  bottom "data"\n}\n', ["net.prototxt:9:10", "syntax error", "':' or '{'"]),
    ('input: "data"\ninput_dim: 1\nlayer { name: "c" \n', ["net.prototxt:4:1", "end of file"]),
    ('input: "data"\ninput_dim: 1 $\n', ["net.prototxt:2:14", "unexpected character"]),
])
def test_prototxt_syntax_errors_give_line_and_column(tmp_path, text, patterns):
    proto = tmp_path / "net.prototxt"
    proto.write_text(text)
    _one_line_error(lambda: load_caffe(proto), *patterns)


def test_unknown_layer_type_and_other_prototxt_errors(tmp_path):
    proto = tmp_path / "net.prototxt"
    base = _input_block((1, 3, 8, 8))
    cases = [
        (_layer("up", "Deconvolution", ["data"], ["up"]), ["layer 'up'", "'Deconvolution' is not supported"]),
        ('layers { name: "old" type: ABSVAL bottom: "data" top: "old" }\n', ["layer 'old'", "'AbsVal'"]),
        (_layer("c", "Convolution", ["nothing"], ["c"]), ["layer 'c'", "'nothing'"]),
        (_layer("c", "Convolution", ["data"], ["c"], "convolution_param { num_output: 2 }"),
         ["layer 'c'", "kernel_size"]),
        (_layer("p", "Pooling", ["data"], ["p"], "pooling_param { kernel_size: 20 }"), ["layer 'p'", "larger"]),
        (_layer("n", "LRN", ["data"], ["n"], "lrn_param { local_size: 4 }"), ["layer 'n'", "odd"]),
        ('layer { name: "d" type: "Data" top: "data" }\n', ["layer 'd'", "deploy prototxt"]),
    ]
    for body, patterns in cases:
        proto.write_text(base + body)
        _one_line_error(lambda: load_caffe(proto), *patterns)
    proto.write_text(_layer("c", "ReLU", ["data"], ["c"]))
    _one_line_error(lambda: load_caffe(proto), "exactly one input")
    _one_line_error(lambda: load_caffe(tmp_path / "missing.prototxt"), "not found", "missing.prototxt")


def test_names_pytorch_reserves_are_adapted(tmp_path):
    proto = tmp_path / "net.prototxt"
    proto.write_text(_input_block((1, 1, 4, 4)) + _layer("a.b", "ReLU", ["data"], ["x"])
                     + _layer("train", "TanH", ["x"], ["y"]) + _layer("a_b", "Sigmoid", ["y"], ["z"]))
    model = load_caffe(proto)
    assert model.default_layers == ["a_b", "train_", "a_b_"]
    x = RNG.standard_normal((1, 1, 4, 4)).astype(np.float32)
    with torch.no_grad():
        _close(model.net(torch.from_numpy(x)).numpy(), 1 / (1 + np.exp(-np.tanh(np.maximum(x, 0)))))
