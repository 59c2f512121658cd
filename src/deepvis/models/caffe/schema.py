"""The part of Caffe's ``caffe.proto`` this project reads and writes, with the real field numbers, and the names
of the old (V1) layer types.

Only what locating weights needs is listed: a net's layers (V2 ``layer`` = 100, V1 ``layers`` = 2, and the
V0 ``layer`` nested in V1), their names, types and blobs. Everything else in a ``.caffemodel`` (the layers'
settings, which the ``.prototxt`` gives) is skipped by the decoder.
"""

from __future__ import annotations

from deepvis.models.caffe.wire import Field

CAFFEMODEL_SCHEMA = {
    "NetParameter": {1: Field("name", "string"), 2: Field("layers", "V1LayerParameter"),
                     100: Field("layer", "LayerParameter")},
    "LayerParameter": {1: Field("name", "string"), 2: Field("type", "string"), 7: Field("blobs", "BlobProto")},
    "V1LayerParameter": {1: Field("layer", "V0LayerParameter"), 4: Field("name", "string"),
                         5: Field("type", "enum"), 6: Field("blobs", "BlobProto")},
    "V0LayerParameter": {1: Field("name", "string"), 2: Field("type", "string"), 50: Field("blobs", "BlobProto")},
    "BlobProto": {1: Field("num", "int"), 2: Field("channels", "int"), 3: Field("height", "int"),
                  4: Field("width", "int"), 5: Field("data", "float"), 7: Field("shape", "BlobShape"),
                  8: Field("double_data", "double")},
    "BlobShape": {1: Field("dim", "int")},
}

#: V1LayerParameter.LayerType: enum name -> (number, the V2 type string).
V1_LAYER_TYPES = {
    "NONE": (0, "None"), "ABSVAL": (35, "AbsVal"), "ACCURACY": (1, "Accuracy"), "ARGMAX": (30, "ArgMax"),
    "BNLL": (2, "BNLL"), "CONCAT": (3, "Concat"), "CONTRASTIVE_LOSS": (37, "ContrastiveLoss"),
    "CONVOLUTION": (4, "Convolution"), "DATA": (5, "Data"), "DECONVOLUTION": (39, "Deconvolution"),
    "DROPOUT": (6, "Dropout"), "DUMMY_DATA": (32, "DummyData"), "EUCLIDEAN_LOSS": (7, "EuclideanLoss"),
    "ELTWISE": (25, "Eltwise"), "EXP": (38, "Exp"), "FLATTEN": (8, "Flatten"), "HDF5_DATA": (9, "HDF5Data"),
    "HDF5_OUTPUT": (10, "HDF5Output"), "HINGE_LOSS": (28, "HingeLoss"), "IM2COL": (11, "Im2col"),
    "IMAGE_DATA": (12, "ImageData"), "INFOGAIN_LOSS": (13, "InfogainLoss"), "INNER_PRODUCT": (14, "InnerProduct"),
    "LRN": (15, "LRN"), "MEMORY_DATA": (29, "MemoryData"),
    "MULTINOMIAL_LOGISTIC_LOSS": (16, "MultinomialLogisticLoss"), "MVN": (34, "MVN"), "POOLING": (17, "Pooling"),
    "POWER": (26, "Power"), "RELU": (18, "ReLU"), "SIGMOID": (19, "Sigmoid"),
    "SIGMOID_CROSS_ENTROPY_LOSS": (27, "SigmoidCrossEntropyLoss"), "SILENCE": (36, "Silence"),
    "SOFTMAX": (20, "Softmax"), "SOFTMAX_LOSS": (21, "SoftmaxWithLoss"), "SPLIT": (22, "Split"),
    "SLICE": (33, "Slice"), "TANH": (23, "TanH"), "WINDOW_DATA": (24, "WindowData"), "THRESHOLD": (31, "Threshold"),
}
_V1_BY_NUMBER = {number: v2 for number, v2 in V1_LAYER_TYPES.values()}
_V1_BY_V2 = {v2: number for number, v2 in V1_LAYER_TYPES.values()}


def layer_type(value: object) -> str:
    """A layer's type as a V2 string, whether given as V2 text, a V1 enum name, or a V1 enum number."""
    if isinstance(value, int) and not isinstance(value, bool):
        return _V1_BY_NUMBER.get(value, f"V1 type {value}")
    text = str(value)
    return V1_LAYER_TYPES[text][1] if text in V1_LAYER_TYPES else text


def v1_type_number(type_name: str) -> int:
    """The V1 enum number of a V2 type string (0, ``NONE``, for types V1 did not have)."""
    return _V1_BY_V2.get(type_name, 0)
