"""Caffe's layer types as ``nn.Module``s with Caffe's arithmetic (pooling sizes, LRN, batch-norm scale factor...).

Each module is one Caffe layer (``caffe_name``, ``caffe_type``) holding its blobs as parameters named in
``blob_names``, in Caffe's order. In-place layers that directly follow a layer (a ReLU whose top is its bottom)
run inside it as child modules, so the module's output is what Caffe's blob held after them: ``conv5`` shows
rectified activations, as in the original toolbox, and ``conv5.relu5`` is the ReLU itself.
Rectifiers call ``F.relu`` and convolutions ``F.conv2d``, so deepvis's backward modes and receptive-field
computation (which intercept these functions) see them.

One module per kind: ``base`` (:class:`CaffeLayer` and shared setting readers), ``weighted`` (Convolution,
InnerProduct), ``pooling``, ``norms`` (LRN, BatchNorm, Scale), ``activations``, ``structure`` (Split, Flatten,
Concat, Eltwise); this package holds the type table.
"""

from __future__ import annotations

from deepvis.models.caffe.layers.activations import Dropout, ReLU, Sigmoid, Softmax, TanH
from deepvis.models.caffe.layers.base import CaffeLayer, Shape
from deepvis.models.caffe.layers.norms import LRN, BatchNorm, Scale
from deepvis.models.caffe.layers.pooling import Pooling, pooled_size, pooled_size_torch
from deepvis.models.caffe.layers.structure import Concat, Eltwise, Flatten, Split
from deepvis.models.caffe.layers.weighted import Convolution, InnerProduct

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

__all__ = ["CaffeLayer", "LAYER_TYPES", "PARAM_FIELDS", "Shape", "pooled_size", "pooled_size_torch",
           "BatchNorm", "Concat", "Convolution", "Dropout", "Eltwise", "Flatten", "InnerProduct", "LRN", "Pooling",
           "ReLU", "Scale", "Sigmoid", "Softmax", "Split", "TanH"]
