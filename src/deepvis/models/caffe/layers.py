"""Caffe's layer types as ``nn.Module``s with Caffe's arithmetic (pooling sizes, LRN, batch-norm scale factor...).

Each module is one Caffe layer (``caffe_name``, ``caffe_type``) holding its blobs as parameters named in
``blob_names``, in Caffe's order. In-place layers that directly follow a layer (a ReLU whose top is its bottom)
run inside it as child modules, so the module's output is what Caffe's blob held after them: ``conv5`` shows
rectified activations, as in the original toolbox, and ``conv5.relu5`` is the ReLU itself.
Rectifiers call ``F.relu`` and convolutions ``F.conv2d``, so deepvis's backward modes and receptive-field
computation (which intercept these functions) see them.
"""

from __future__ import annotations

import math
from functools import reduce
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from deepvis.models.caffe.message import Message

Shape = tuple[int, ...]


class CaffeLayer(nn.Module):
    """One Caffe layer; subclasses implement :meth:`compute` and, when they have blobs, :meth:`reset_blobs`."""

    blob_names: tuple[str, ...] = ()
    #: How many bottom blobs the layer reads (least, most), and whether it may write several tops.
    bottoms: tuple[int, int] = (1, 1)
    many_tops = False

    def __init__(self, caffe_name: str, caffe_type: str):
        super().__init__()
        self.caffe_name = caffe_name
        self.caffe_type = caffe_type
        self.in_place: list[str] = []  # child modules run on the output, in order (in-place layers)

    def add_in_place(self, module_name: str, layer: "CaffeLayer") -> None:
        """Run ``layer`` on this layer's output, as Caffe's in-place layers overwrite the blob."""
        self.add_module(module_name, layer)
        self.in_place.append(module_name)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        out = self.compute(*inputs)
        for name in self.in_place:
            out = self._modules[name](out)
        return out

    def compute(self, *inputs: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def blobs(self) -> list[torch.Tensor]:
        """The layer's blobs in Caffe's order (what a ``.caffemodel`` stores for it)."""
        return [getattr(self, name) for name in self.blob_names]

    def reset_blobs(self, generator: torch.Generator) -> None:
        """Fill the blobs with a deterministic default (used when no weights are given)."""

    def _add_blob(self, name: str, shape: Shape, trainable: bool = True) -> None:
        if trainable:
            self.register_parameter(name, nn.Parameter(torch.empty(shape)))
        else:
            self.register_buffer(name, torch.empty(shape))
        self.blob_names = self.blob_names + (name,)


def _pair(param: Message, name: str, default: int | None) -> tuple[int, int]:
    """A 2-D setting in any Caffe spelling: ``name_h``/``name_w``, or ``name[_size]`` once or twice."""
    repeated = "kernel_size" if name == "kernel" else name
    if param.has(f"{name}_h") or param.has(f"{name}_w"):
        if not (param.has(f"{name}_h") and param.has(f"{name}_w")):
            raise param.error(f"give both {name}_h and {name}_w")
        return param.int(f"{name}_h"), param.int(f"{name}_w")
    values = param.ints(repeated)
    if not values:
        if default is None:
            raise param.error(f"{repeated} (or {name}_h and {name}_w) is required")
        return default, default
    if len(values) > 2:
        raise param.error(f"{repeated} has {len(values)} values; only 2-D layers are supported")
    return (values[0], values[-1])


def _spatial(shape: Shape, where: Message) -> None:
    if len(shape) != 4:
        raise where.error(f"expects a 4-D (N, C, H, W) input, got shape {shape}")


class Convolution(CaffeLayer):
    """Caffe convolution: groups, dilation, pad/stride/kernel in all spellings, optional bias."""

    def __init__(self, name: str, param: Message, shapes: Sequence[Shape]):
        super().__init__(name, "Convolution")
        _spatial(shapes[0], param)
        self.kernel = _pair(param, "kernel", None)
        self.stride = _pair(param, "stride", 1)
        self.pad = _pair(param, "pad", 0)
        dilation = param.ints("dilation") or [1]
        self.dilation = (dilation[0], dilation[-1])
        self.groups = param.int("group", 1)
        out_channels, in_channels = param.int("num_output"), shapes[0][1]
        if out_channels <= 0 or in_channels % self.groups or out_channels % self.groups:
            raise param.error(f"num_output {out_channels} and input channels {in_channels} must be positive "
                              f"multiples of group {self.groups}")
        self._add_blob("weight", (out_channels, in_channels // self.groups) + self.kernel)
        if param.bool("bias_term", True):
            self._add_blob("bias", (out_channels,))

    def compute(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, getattr(self, "bias", None), self.stride, self.pad, self.dilation, self.groups)

    def reset_blobs(self, generator: torch.Generator) -> None:
        _he_normal(self.weight, self.weight[0].numel(), generator)
        if "bias" in self.blob_names:
            self.bias.zero_()


class InnerProduct(CaffeLayer):
    """Fully connected: everything from ``axis`` on is flattened first, as Caffe does implicitly."""

    def __init__(self, name: str, param: Message, shapes: Sequence[Shape]):
        super().__init__(name, "InnerProduct")
        self.axis = _axis(param.int("axis", 1), len(shapes[0]), param)
        in_features, out_features = math.prod(shapes[0][self.axis:]), param.int("num_output")
        self.transpose = param.bool("transpose", False)
        self._add_blob("weight", (in_features, out_features) if self.transpose else (out_features, in_features))
        if param.bool("bias_term", True):
            self._add_blob("bias", (out_features,))

    def compute(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.t() if self.transpose else self.weight
        return F.linear(x.flatten(self.axis), weight, getattr(self, "bias", None))

    def reset_blobs(self, generator: torch.Generator) -> None:
        _he_normal(self.weight, self.weight.shape[0 if self.transpose else 1], generator)
        if "bias" in self.blob_names:
            self.bias.zero_()


def pooled_size(size: int, kernel: int, stride: int, pad: int, padded: bool) -> int:
    """Caffe's pooling output size: rounded up, minus a last window that would start past the image plus its
    padding (a check Caffe makes on both axes when either is padded)."""
    out = -(-(size + 2 * pad - kernel) // stride) + 1
    if padded and (out - 1) * stride >= size + pad:
        out -= 1
    return out


class Pooling(CaffeLayer):
    """MAX or AVE pooling with Caffe's output size; AVE divides by the window clipped to the padded image."""

    def __init__(self, name: str, param: Message, shapes: Sequence[Shape]):
        super().__init__(name, "Pooling")
        _spatial(shapes[0], param)
        self.method = param.enum("pool", {"MAX": 0, "AVE": 1, "STOCHASTIC": 2}, "MAX")
        if self.method == "STOCHASTIC":
            raise param.error("STOCHASTIC pooling is not supported")
        self.global_pooling = param.bool("global_pooling", False)
        self.kernel = shapes[0][2:] if self.global_pooling else _pair(param, "kernel", None)
        self.stride = (1, 1) if self.global_pooling else _pair(param, "stride", 1)
        self.pad = (0, 0) if self.global_pooling else _pair(param, "pad", 0)
        if any(p >= k for p, k in zip(self.pad, self.kernel)):
            raise param.error(f"pad {self.pad} must be smaller than kernel {self.kernel}")
        sizes = self._sizes(shapes[0][2:], self.kernel, pooled_size)
        if min(sizes) < 1:
            raise param.error(f"kernel {self.kernel} is larger than the padded input {shapes[0][2:]}")

    def compute(self, x: torch.Tensor) -> torch.Tensor:
        kernel = tuple(x.shape[2:]) if self.global_pooling else self.kernel
        out = self._sizes(x.shape[2:], kernel, pooled_size)
        native = self._sizes(x.shape[2:], kernel, pooled_size_torch)
        if out == native and all(2 * p <= k for p, k in zip(self.pad, kernel)):
            if self.method == "MAX":
                return F.max_pool2d(x, kernel, self.stride, self.pad, ceil_mode=True)
            return F.avg_pool2d(x, kernel, self.stride, self.pad, ceil_mode=True, count_include_pad=True)
        return self._explicit(x, kernel, out)

    def _sizes(self, sizes: Sequence[int], kernel: Sequence[int], rule: Callable[..., int]) -> list[int]:
        padded = any(self.pad)
        return [rule(*args, padded) for args in zip(sizes, kernel, self.stride, self.pad)]

    def _explicit(self, x: torch.Tensor, kernel: Sequence[int], out: Sequence[int]) -> torch.Tensor:
        """The general case (PyTorch's pooling cannot express it): pad explicitly, then pool without padding."""
        extra = [(n - 1) * s + k - size - p for n, s, k, size, p in zip(out, self.stride, kernel, x.shape[2:],
                                                                       self.pad)]
        padding = (self.pad[1], extra[1], self.pad[0], extra[0])
        if self.method == "MAX":
            return F.max_pool2d(F.pad(x, padding, value=-math.inf), kernel, self.stride)
        total = F.avg_pool2d(F.pad(x, padding), kernel, self.stride, divisor_override=1)
        counts = [torch.clamp(torch.arange(n, device=x.device) * s - p + k, max=size + p)
                  - (torch.arange(n, device=x.device) * s - p)
                  for n, s, k, size, p in zip(out, self.stride, kernel, x.shape[2:], self.pad)]
        return total / (counts[0][:, None] * counts[1][None, :]).to(x.dtype)


def pooled_size_torch(size: int, kernel: int, stride: int, pad: int, padded: bool) -> int:
    """PyTorch's ``ceil_mode`` output size (it drops a window starting in the right padding even without pad)."""
    out = -(-(size + 2 * pad - kernel) // stride) + 1
    if (out - 1) * stride >= size + pad:
        out -= 1
    return out


class LRN(CaffeLayer):
    """Local response normalization. ACROSS_CHANNELS: ``x / (k + alpha/n * sum_window x^2)^beta`` over n channels;
    WITHIN_CHANNEL: ``x / (1 + alpha/n^2 * sum_window x^2)^beta`` over n x n pixels (Caffe ignores k there)."""

    def __init__(self, name: str, param: Message, shapes: Sequence[Shape]):
        super().__init__(name, "LRN")
        _spatial(shapes[0], param)
        self.size = param.int("local_size", 5)
        if self.size % 2 == 0 or self.size < 1:
            raise param.error(f"local_size must be odd (as Caffe requires), got {self.size}")
        self.alpha, self.beta, self.k = param.float("alpha", 1.0), param.float("beta", 0.75), param.float("k", 1.0)
        self.region = param.enum("norm_region", {"ACROSS_CHANNELS": 0, "WITHIN_CHANNEL": 1}, "ACROSS_CHANNELS")

    def compute(self, x: torch.Tensor) -> torch.Tensor:
        if self.region == "ACROSS_CHANNELS":
            return F.local_response_norm(x, self.size, self.alpha, self.beta, self.k)
        mean_square = F.avg_pool2d(x * x, self.size, 1, (self.size - 1) // 2, count_include_pad=True)
        return x * (1 + self.alpha * mean_square) ** -self.beta


class BatchNorm(CaffeLayer):
    """Caffe batch norm: blobs mean, variance and a scale factor they are divided by (0 means 0); no affine part
    (Caffe puts that in a following Scale layer)."""

    def __init__(self, name: str, param: Message, shapes: Sequence[Shape]):
        super().__init__(name, "BatchNorm")
        channels = shapes[0][1] if len(shapes[0]) > 1 else 1
        self.eps = param.float("eps", 1e-5)
        self.use_global_stats = param.bool("use_global_stats", True)  # Caffe's default at test time
        for blob, shape in (("mean", (channels,)), ("variance", (channels,)), ("scale_factor", (1,))):
            self._add_blob(blob, shape, trainable=False)

    def compute(self, x: torch.Tensor) -> torch.Tensor:
        if not self.use_global_stats:
            return F.batch_norm(x, None, None, training=True, eps=self.eps)
        factor = self.scale_factor[0]
        scale = torch.where(factor == 0, torch.zeros_like(factor), 1 / factor)
        return F.batch_norm(x, self.mean * scale, self.variance * scale, training=False, eps=self.eps)

    def reset_blobs(self, generator: torch.Generator) -> None:
        self.mean.zero_()
        self.variance.fill_(1)
        self.scale_factor.fill_(1)


class Scale(CaffeLayer):
    """``x * scale (+ bias)``, the scale a learned blob over axes ``axis..axis+num_axes`` or a second input."""

    bottoms = (1, 2)

    def __init__(self, name: str, param: Message, shapes: Sequence[Shape]):
        super().__init__(name, "Scale")
        self.axis = _axis(param.int("axis", 1), len(shapes[0]), param)
        if len(shapes) > 1:
            covered = shapes[1]
        else:
            num_axes = param.int("num_axes", 1)
            covered = shapes[0][self.axis:] if num_axes == -1 else shapes[0][self.axis:self.axis + num_axes]
            self._add_blob("scale", tuple(covered))
        if shapes[0][self.axis:self.axis + len(covered)] != tuple(covered):
            raise param.error(f"scale shape {tuple(covered)} does not fit input shape {shapes[0]} at axis {self.axis}")
        if param.bool("bias_term", False):
            self._add_blob("bias", tuple(covered))

    def compute(self, x: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        scale = self.scale if scale is None else scale
        out = x * self._aligned(scale, x.dim())
        return out + self._aligned(self.bias, x.dim()) if "bias" in self.blob_names else out

    def _aligned(self, blob: torch.Tensor, ndim: int) -> torch.Tensor:
        return blob.reshape((1,) * self.axis + tuple(blob.shape) + (1,) * (ndim - self.axis - blob.dim()))

    def reset_blobs(self, generator: torch.Generator) -> None:
        if "scale" in self.blob_names:
            self.scale.fill_(1)
        if "bias" in self.blob_names:
            self.bias.zero_()


class ReLU(CaffeLayer):
    """``max(x, 0) + negative_slope * min(x, 0)``."""

    def __init__(self, name: str, param: Message, shapes: Sequence[Shape]):
        super().__init__(name, "ReLU")
        self.negative_slope = param.float("negative_slope", 0.0)

    def compute(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x, self.negative_slope) if self.negative_slope else F.relu(x)


class _Pointwise(CaffeLayer):
    """A parameter-free layer given by one function of its input."""

    function: Callable[[torch.Tensor], torch.Tensor]

    def __init__(self, name: str, param: Message, shapes: Sequence[Shape]):
        super().__init__(name, type(self).__name__)

    def compute(self, x: torch.Tensor) -> torch.Tensor:
        return type(self).function(x)


class Sigmoid(_Pointwise):
    function = torch.sigmoid


class TanH(_Pointwise):
    function = torch.tanh


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


class Dropout(_Pointwise):
    """The identity: deepvis runs networks as Caffe's TEST phase does."""

    function = _identity


class Split(_Pointwise):
    """Copies its input to several tops (they share one tensor: nothing here writes in place)."""

    many_tops = True

    function = _identity


class Softmax(CaffeLayer):
    def __init__(self, name: str, param: Message, shapes: Sequence[Shape]):
        super().__init__(name, "Softmax")
        self.axis = _axis(param.int("axis", 1), len(shapes[0]), param)

    def compute(self, x: torch.Tensor) -> torch.Tensor:
        return F.softmax(x, dim=self.axis)


class Flatten(CaffeLayer):
    def __init__(self, name: str, param: Message, shapes: Sequence[Shape]):
        super().__init__(name, "Flatten")
        self.axis = _axis(param.int("axis", 1), len(shapes[0]), param)
        self.end_axis = _axis(param.int("end_axis", -1), len(shapes[0]), param)

    def compute(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(self.axis, self.end_axis)


class Concat(CaffeLayer):
    bottoms = (1, 1 << 30)

    def __init__(self, name: str, param: Message, shapes: Sequence[Shape]):
        super().__init__(name, "Concat")
        axis = param.int("axis", 1) if param.has("axis") else param.int("concat_dim", 1)
        self.axis = _axis(axis, len(shapes[0]), param)

    def compute(self, *inputs: torch.Tensor) -> torch.Tensor:
        return torch.cat(inputs, dim=self.axis)


class Eltwise(CaffeLayer):
    """Element-wise SUM (with one coefficient per input), PROD or MAX of equally shaped inputs."""

    bottoms = (2, 1 << 30)

    def __init__(self, name: str, param: Message, shapes: Sequence[Shape]):
        super().__init__(name, "Eltwise")
        self.operation = param.enum("operation", {"PROD": 0, "SUM": 1, "MAX": 2}, "SUM")
        self.coeffs = param.floats("coeff") or [1.0] * len(shapes)
        if len(self.coeffs) != len(shapes):
            raise param.error(f"{len(self.coeffs)} coefficients for {len(shapes)} inputs")
        if self.operation != "SUM" and param.has("coeff"):
            raise param.error("coefficients are only for the SUM operation")
        if len(set(shapes)) > 1:
            raise param.error(f"inputs must have the same shape, got {list(shapes)}")

    def compute(self, *inputs: torch.Tensor) -> torch.Tensor:
        if self.operation == "PROD":
            return reduce(torch.mul, inputs)
        if self.operation == "MAX":
            return reduce(torch.maximum, inputs)
        return reduce(torch.add, [x if c == 1 else x * c for x, c in zip(inputs, self.coeffs)])


def _axis(axis: int, ndim: int, where: Message) -> int:
    if not -ndim <= axis < ndim:
        raise where.error(f"axis {axis} is out of range for a {ndim}-D input")
    return axis % ndim


def _he_normal(weight: torch.Tensor, fan_in: int, generator: torch.Generator) -> None:
    weight.copy_(torch.randn(weight.shape, generator=generator) * math.sqrt(2.0 / max(fan_in, 1)))


#: Caffe type -> module class; each takes (layer name, its ``*_param`` message, input shapes).
LAYER_TYPES: dict[str, type[CaffeLayer]] = {
    cls.__name__: cls for cls in (Convolution, InnerProduct, Pooling, LRN, BatchNorm, Scale, ReLU, Sigmoid, TanH,
                                  Dropout, Split, Softmax, Flatten, Concat, Eltwise)}
#: The ``*_param`` field holding each type's settings.
PARAM_FIELDS = {"Convolution": "convolution_param", "InnerProduct": "inner_product_param",
                "Pooling": "pooling_param", "LRN": "lrn_param", "BatchNorm": "batch_norm_param",
                "Scale": "scale_param", "ReLU": "relu_param", "Softmax": "softmax_param",
                "Flatten": "flatten_param", "Concat": "concat_param", "Eltwise": "eltwise_param",
                "Dropout": "dropout_param"}

__all__ = ["CaffeLayer", "LAYER_TYPES", "PARAM_FIELDS", "pooled_size"]
