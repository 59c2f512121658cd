"""Receptive fields computed from the model: textbook values, padding, dilation, functional ops, clipping."""

from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import deepvis
from deepvis.engine.receptive_field import input_box, receptive_field, receptive_fields


def caffenet_shaped() -> nn.Sequential:
    """The layer geometry of CaffeNet / AlexNet (227 x 227 input), random weights."""
    layers = [("conv1", nn.Conv2d(3, 96, 11, stride=4)), ("relu1", nn.ReLU()), ("pool1", nn.MaxPool2d(3, 2)),
              ("norm1", nn.LocalResponseNorm(5)), ("conv2", nn.Conv2d(96, 256, 5, padding=2, groups=2)),
              ("relu2", nn.ReLU()), ("pool2", nn.MaxPool2d(3, 2)), ("norm2", nn.LocalResponseNorm(5)),
              ("conv3", nn.Conv2d(256, 384, 3, padding=1)), ("relu3", nn.ReLU()),
              ("conv4", nn.Conv2d(384, 384, 3, padding=1, groups=2)), ("relu4", nn.ReLU()),
              ("conv5", nn.Conv2d(384, 256, 3, padding=1, groups=2)), ("relu5", nn.ReLU()),
              ("pool5", nn.MaxPool2d(3, 2)), ("flatten", nn.Flatten()), ("fc6", nn.Linear(256 * 6 * 6, 64))]
    return nn.Sequential(OrderedDict(layers))


def test_caffenet_textbook_values():
    model = deepvis.load_model(caffenet_shaped(), input_size=(227, 227))
    fields = receptive_fields(model, ["conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "fc6"])
    sizes = {name: f.size[0] for name, f in fields.items() if f is not None}
    assert sizes == {"conv1": 11, "pool1": 19, "conv2": 51, "pool2": 67, "conv3": 99, "conv4": 131, "conv5": 163}
    strides = {name: f.stride for name, f in fields.items() if f is not None}
    assert strides["conv1"] == (4, 4) and strides["pool1"] == (8, 8) and strides["conv5"] == (16, 16)
    assert fields["fc6"] is None
    # the corner unit of conv5 sees the 99 x 99 top-left pixels (its field hangs over the border)
    assert input_box(model, "conv5:0@0,0") == (0, 0, 98, 98)
    assert input_box(model, "conv1:7@1,2") == (4, 8, 14, 18)  # stride 4, no padding: [4y, 4y + 10]


class Functional(nn.Module):
    """Same geometry written with functional pooling and rectifiers, plus a residual and a dilated conv."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=2, dilation=2)
        self.conv3 = nn.Conv2d(8, 8, 1)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = x + torch.relu_(self.conv2(x))
        return self.conv3(x).clamp(min=0)


def test_functional_ops_dilation_and_residual():
    model = deepvis.load_model(Functional(), input_size=(64, 64))
    fields = receptive_fields(model, ["conv1", "conv2", "conv3"])
    assert fields["conv1"].size == (3, 3) and fields["conv1"].stride == (1, 1)
    # pool 2x2 after conv1: 4; dilated 3x3 (span 5) at stride 2 adds 4 * 2 = 8 -> 12; the 1x1 adds nothing
    assert fields["conv2"].size == (12, 12) and fields["conv2"].stride == (2, 2)
    assert fields["conv3"].size == (12, 12)
    assert torch._C._len_torch_function_stack() == 0
    assert not any(m._forward_hooks for m in model.net.modules())


def test_default_model_fields_grow_with_depth():
    model = deepvis.load_model()
    fields = receptive_fields(model, ["stem.act", "blocks.0", "blocks.5", "pool", "classifier"])
    assert fields["stem.act"].size == (3, 3) and fields["stem.act"].stride == (2, 2)
    assert fields["blocks.0"].size == (7, 7)  # + a 3x3 depthwise conv at stride 2
    assert fields["blocks.5"].stride == (16, 16) and not fields["blocks.5"].clipped
    assert fields["pool"] is None and fields["classifier"] is None  # global: the whole input
    with pytest.raises(deepvis.UnitError, match="no spatial dimensions"):
        receptive_field(model, "classifier")
    with pytest.raises(deepvis.UnitError, match="needs a position"):
        input_box(model, "blocks.5:3")


@pytest.mark.slow
def test_the_bundled_models_shipped_fields_are_what_it_measures(model):
    """The bundled model ships its fields (measuring them is a fixed cost of every command otherwise): a fresh
    measurement of the default layers and a spread of the others gives the same table."""
    from deepvis.models.efficientnet_lite import shipped_fields
    from deepvis.engine.receptive_field import receptive_fields

    table = next(iter(shipped_fields().values()))
    fresh = deepvis.load_model()
    fresh._fields.clear()
    spatial_defaults = [name for name in deepvis.default_layers(fresh) if name in table]
    sample = list(dict.fromkeys(spatial_defaults + sorted(table)[::25]))
    assert len(spatial_defaults) >= 15 and len(sample) > 20
    assert receptive_fields(fresh, sample) == receptive_fields(model, sample)
