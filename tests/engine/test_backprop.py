"""Backward modes against hand-computed values, autograd, and across ways of writing a ReLU."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import deepvis
from deepvis import DeepvisError, UnitError, backprop, backprop_batch, load_model


class TwoLayer(nn.Module):
    """x -> fc1 -> rectifier -> fc2, hand-weighted: fc1(x=[1,2]) = [2, 4, -1]."""

    def __init__(self, act: nn.Module):
        super().__init__()
        self.fc1 = nn.Linear(2, 3, bias=False)
        self.act = act
        self.fc2 = nn.Linear(3, 1, bias=False)
        with torch.no_grad():
            self.fc1.weight.copy_(torch.tensor([[0.0, 1.0], [2.0, 1.0], [1.0, -1.0]]))
            self.fc2.weight.copy_(torch.tensor([[1.0, -1.0, 3.0]]))

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


X = torch.tensor([[1.0, 2.0]])


# Start: one-hot at fc2:0, so the signal reaching the rectifier output is fc2's weight row [1, -1, 3];
# the rectifier input is [2, 4, -1] (mask [1, 1, 0]); the input gets fc1.weight^T times the rectifier's output.
#   gradient: [1,-1,3] * mask        = [1,-1,0] -> [0*1 + 2*-1 + 1*0, 1*1 + 1*-1 - 1*0] = [-2, 0]
#   deconv:   relu([1,-1,3])         = [1, 0,3] -> [0 + 0 + 3, 1 + 0 - 3]              = [3, -2]
#   guided:   relu([1,-1,3]) * mask  = [1, 0,0] -> [0, 1]
@pytest.mark.parametrize("mode, expected", [("gradient", [-2.0, 0.0]), ("deconv", [3.0, -2.0]), ("guided", [0.0, 1.0])])
def test_hand_computed_relu(mode, expected):
    result = backprop_batch(TwoLayer(nn.ReLU()), X, "fc2:0", mode, signal="argmax")
    grad, act, _, modified = result.input_grad, result.activation, result.layer_grads, result.rectifiers_modified
    assert torch.equal(grad, torch.tensor([expected]))
    assert act.item() == -2.0  # fc2(relu([2, 4, -1])) = 1*2 - 1*4 + 3*0
    assert modified == (0 if mode == "gradient" else 1)


def test_hand_computed_relu6_clamps_the_top_too():
    # With ReLU6 and an input scaled so fc1 = [2, 8, -1]: the mask is [1, 0, 0] (8 is above 6).
    net = TwoLayer(nn.ReLU6())
    with torch.no_grad():
        net.fc1.weight[1] = torch.tensor([4.0, 2.0])
    x = X
    grads = {m: backprop_batch(net, x, "fc2:0", m, signal="argmax").input_grad for m in deepvis.MODES}
    # gradient: [1,-1,3]*[1,0,0] = [1,0,0] -> W1^T = [0, 1]
    assert torch.equal(grads["gradient"], torch.tensor([[0.0, 1.0]]))
    # deconv: relu([1,-1,3]) = [1,0,3] -> [0 + 0 + 3, 1 + 0 - 3] = [3, -2]
    assert torch.equal(grads["deconv"], torch.tensor([[3.0, -2.0]]))
    # guided: [1,0,3]*[1,0,0] = [1,0,0] -> [0, 1]
    assert torch.equal(grads["guided"], torch.tensor([[0.0, 1.0]]))


def test_map_signal_is_the_activation_itself():
    # 'map' starts from the unit's activation: fc2(x) = 1*2 - 1*4 + 3*0 = -2, so gradients are -2 x the one-hot's.
    result = backprop_batch(TwoLayer(nn.ReLU()), X, "fc2:0", "gradient", signal="map")
    grad, act, _, _ = result.input_grad, result.activation, result.layer_grads, result.rectifiers_modified
    assert act.item() == -2.0
    assert torch.equal(grad, torch.tensor([[4.0, 0.0]]))


class ConvNet(nn.Module):
    """conv -> rect -> maxpool -> conv -> rect -> linear, with the rectifier written in a chosen way."""

    def __init__(self, rect: str):
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 6, 3, padding=1)
        self.fc = nn.Linear(6 * 4 * 4, 5)
        self.rect = rect
        self.relu1, self.relu2 = nn.ReLU(), nn.ReLU()

    def _r(self, x, module):
        return {
            "module": lambda: module(x),
            "F.relu": lambda: F.relu(x),
            "F.relu_inplace": lambda: F.relu(x, inplace=True),
            "torch.relu": lambda: torch.relu(x),
            "Tensor.relu": lambda: x.relu(),
            "relu_": lambda: x.relu_(),
            "torch.relu_": lambda: torch.relu_(x),
            "clamp": lambda: x.clamp(min=0),
            "clamp_min_": lambda: x.clamp_min_(0),
        }[self.rect]()

    def forward(self, x):
        x = F.max_pool2d(self._r(self.conv1(x), self.relu1), 2)
        x = self._r(self.conv2(x), self.relu2)
        x = F.max_pool2d(x, 2)
        return self.fc(x.flatten(1))


REFERENCE = ConvNet("module")
WAYS = ["F.relu", "F.relu_inplace", "torch.relu", "Tensor.relu", "relu_", "torch.relu_", "clamp", "clamp_min_"]


@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize("mode", deepvis.MODES)
@pytest.mark.parametrize("unit", ["conv2:3", "conv2:1@2,5", "fc:4"])
def test_functional_relus_equal_modules(way, mode, unit):
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    result = backprop_batch(REFERENCE, x, unit, mode)
    expected, act_a, _, n_a = result.input_grad, result.activation, result.layer_grads, result.rectifiers_modified
    result = backprop_batch(ConvNet(way), x, unit, mode)
    got, act_b, _, n_b = result.input_grad, result.activation, result.layer_grads, result.rectifiers_modified
    assert torch.equal(act_a, act_b)
    assert torch.allclose(got, expected, atol=1e-6, rtol=0)
    assert n_a == n_b == (0 if mode == "gradient" else (1 if unit.startswith("conv2") else 2))
    assert got.abs().sum() > 0


def test_modes_differ_on_a_real_network():
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    grads = {m: backprop_batch(REFERENCE, x, "fc:2", m).input_grad for m in deepvis.MODES}
    assert not torch.allclose(grads["gradient"], grads["deconv"])
    assert not torch.allclose(grads["deconv"], grads["guided"])


@pytest.mark.parametrize("signal", ["map", "argmax"])
def test_gradient_equals_autograd(signal):
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    net = ConvNet("module")
    result = backprop_batch(net, x, "conv2:3", "gradient", signal=signal, layers=["conv1", "fc"])
    got, _, layer_grads, _ = result.input_grad, result.activation, result.layer_grads, result.rectifiers_modified
    xr = x.clone().requires_grad_(True)
    c1 = net.conv1(xr)
    out = net.conv2(F.max_pool2d(net.relu1(c1), 2))
    a = out[:, 3]
    if signal == "map":
        objective = 0.5 * (a**2).sum()  # the original's live start diff: the map itself
    else:
        objective = a.flatten()[a.flatten().argmax()]
    gx, gc1 = torch.autograd.grad(objective, [xr, c1])
    assert torch.allclose(got, gx, atol=1e-6)
    assert torch.allclose(layer_grads["conv1"], gc1, atol=1e-6)
    assert torch.count_nonzero(layer_grads["fc"]) == 0  # above the unit: nothing flows back


def _snapshot(net):
    return ({k: v.clone() for k, v in net.state_dict().items()},
            [(m.training, len(m._forward_hooks), len(m._backward_hooks), len(m._forward_pre_hooks))
             for m in net.modules()],
            [p.requires_grad for p in net.parameters()])


@pytest.mark.parametrize("mode", deepvis.MODES)
def test_user_model_is_never_mutated(mode):
    net = ConvNet("relu_")
    net.train()
    before = _snapshot(net)
    x = torch.randn(1, 3, 16, 16)
    backprop_batch(net, x, "conv2:0", mode, layers=["conv1"])
    with pytest.raises(UnitError):
        backprop_batch(net, x, "conv2:99", mode)
    with pytest.raises(UnitError):
        backprop_batch(net, x, "nope:1", mode)
    after = _snapshot(net)
    assert before[1:] == after[1:]
    assert all(torch.equal(before[0][k], after[0][k]) for k in before[0])
    assert torch._C._len_torch_function_stack() == 0  # no mode left behind
    # the same forward afterwards runs with plain autograd
    xr = x.clone().requires_grad_(True)
    g = torch.autograd.grad(net(xr).sum(), xr)[0]
    assert torch.isfinite(g).all()


def test_no_rectifiers_reported():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GELU(), nn.Conv2d(4, 2, 3))
    result = backprop_batch(net, torch.randn(1, 3, 8, 8), "2:1", "guided")
    _, _, _, modified = result.input_grad, result.activation, result.layer_grads, result.rectifiers_modified
    assert modified == 0


def test_errors_name_the_value():
    net = ConvNet("module")
    x = torch.randn(1, 3, 16, 16)
    with pytest.raises(UnitError, match=r"channel 6 out of range.*6 channels"):
        backprop_batch(net, x, "conv2:6", "gradient")
    with pytest.raises(UnitError, match=r"position 8,0 out of range.*8x8"):
        backprop_batch(net, x, "conv2:0@8,0", "gradient")
    with pytest.raises(UnitError, match="no spatial dimensions"):
        backprop_batch(net, x, "fc:0@0,0", "gradient")
    with pytest.raises(UnitError, match="unknown layer 'conv3'.*conv1|unknown layer 'conv3'.*conv2"):
        backprop_batch(net, x, "conv3:0", "gradient")
    with pytest.raises(DeepvisError, match="unknown backprop mode 'zf'"):
        backprop_batch(net, x, "conv2:0", "zf")


@pytest.mark.slow
def test_default_model_modes_images_and_filters(model):
    skimage_data = pytest.importorskip("skimage.data")
    image = skimage_data.chelsea()
    results = {m: backprop(model, image, "classifier:285", mode=m) for m in deepvis.MODES}
    assert results["gradient"].rectifiers_modified == 0
    # every ReLU6 that runs before the logits: stem + 16 depthwise + 15 expand + head = 33
    assert results["deconv"].rectifiers_modified == results["guided"].rectifiers_modified == 33
    for result in results.values():
        assert result.input_grad.shape == (3, 224, 224)
        for name in deepvis.FILTERS:
            picture = result.image(name)
            assert picture.shape == (224, 224, 3) and picture.min() >= 0 and picture.max() <= 1
    # guided backprop of the cat class concentrates on the cat: more signal in the centre than at the border
    norm = results["guided"].input_grad.norm(dim=0)
    assert norm[56:168, 56:168].mean() > norm[:28].mean()
    # a one-hot at a position reaches only that unit's receptive field
    local = backprop(model, image, "blocks.3:5@2,3", mode="guided")
    rows = local.input_grad.abs().sum(dim=(0, 2)).nonzero()
    assert rows.max() < 224 // 2 and local.signal == "onehot@2,3"


def test_intermediate_layer_grads_on_default_model(model):
    result = backprop(model, torch.zeros(3, 224, 224) + 0.1, "blocks.5:7", mode="deconv",
                      layers=["blocks.2", "blocks.5", "head.act"])
    assert result.layer_grads["blocks.2"].shape == (24, 56, 56)
    assert result.layer_grads["blocks.2"].abs().sum() > 0
    assert result.layer_grads["head.act"].abs().sum() == 0
    assert result.layer_grads["blocks.5"][7].abs().sum() > 0 and result.layer_grads["blocks.5"][:7].abs().sum() == 0


# ------------------------------------------------------------------------------------------------ the Trace
@pytest.mark.parametrize("way", ["module", "relu_", "F.relu_inplace"])
@pytest.mark.parametrize("mode", deepvis.MODES)
def test_one_trace_many_backward_passes_equal_separate_ones(way, mode):
    """One traced forward pass (full network, every layer recorded) serves backward passes from several units of
    several layers, each equal to its own ``backprop_batch``; in-place rectifiers included (guided retries)."""
    net = ConvNet(way)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    traced = deepvis.trace(net, x, ["conv1", "conv2", "fc"], mode)
    assert traced.output is not None and traced.output.shape == (2, 5)
    for unit, to in (("conv2:3", ["conv1"]), ("fc:4", ["conv1", "conv2"]), ("conv1:0@3,5", []), ("conv2:1", [])):
        got = traced.backward(unit, to=to)
        expected = backprop_batch(net, x, unit, mode, layers=to)
        assert torch.allclose(got.input_grad, expected.input_grad, atol=1e-6, rtol=0), (unit, mode)
        assert torch.equal(got.activation, expected.activation)
        assert got.layer_grads.keys() == expected.layer_grads.keys()
        for name in to:
            assert torch.allclose(got.layer_grads[name], expected.layer_grads[name], atol=1e-6, rtol=0)
        assert got.rectifiers_modified == expected.rectifiers_modified
        assert got.input_grad.abs().sum() > 0


def test_one_unit_per_image_is_a_one_hot_at_each_images_own_position():
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(6))
    units = ["conv2:2@0,1", "conv2:2@5,7", "conv2:2"]
    together = deepvis.trace(REFERENCE, x, ["conv2"], "guided").backward(units, signal="argmax")
    for n, unit in enumerate(units):
        alone = backprop_batch(REFERENCE, x[n:n + 1], unit, "guided", signal="argmax")
        assert torch.allclose(together.input_grad[n:n + 1], alone.input_grad, atol=1e-6, rtol=0)
    with pytest.raises(DeepvisError, match="one unit per image"):
        deepvis.trace(REFERENCE, x, ["conv2"]).backward(units[:2])


def test_backward_from_an_objective_and_from_a_signal_tensor():
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(7))
    traced = deepvis.trace(REFERENCE, x, ["conv2", "fc"])
    objective = traced["fc"][0, 1] - 2 * traced["conv2"][0, 3].mean()
    got = traced.backward(objective).input_grad
    xr = x.clone().requires_grad_(True)
    out = REFERENCE.conv2(F.max_pool2d(REFERENCE.relu1(REFERENCE.conv1(xr)), 2))
    expected = torch.autograd.grad(REFERENCE(xr)[0, 1] - 2 * out[0, 3].mean(), xr)[0]
    assert torch.allclose(got, expected, atol=1e-6, rtol=0)
    signal = torch.zeros_like(traced["conv2"])
    signal[0, :, 2, 2] = 1.0  # every channel at one position: not one unit
    through_signal = traced.backward("conv2", signal=signal).input_grad
    xr = x.clone().requires_grad_(True)
    out = REFERENCE.conv2(F.max_pool2d(REFERENCE.relu1(REFERENCE.conv1(xr)), 2))
    assert torch.allclose(through_signal, torch.autograd.grad(out[0, :, 2, 2].sum(), xr)[0], atol=1e-6, rtol=0)
    with pytest.raises(DeepvisError, match="not recorded by this trace"):
        traced.backward("conv1:0")


class _ChangesALayerLater(nn.Module):
    """conv1's output is changed in place after it was recorded (as functional code may do)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv1, self.conv2 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 2, 3, padding=1)

    def forward(self, x):
        y = self.conv1(x)
        y.mul_(3.0)
        return self.conv2(y)


def test_a_layer_changed_in_place_after_it_was_recorded_is_traced_again():
    net = _ChangesALayerLater()
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(8))
    traced = deepvis.trace(net, x, ["conv1", "conv2"], "gradient")
    got = traced.backward("conv1:1")
    expected = backprop_batch(net, x, "conv1:1", "gradient")
    assert torch.equal(got.activation, expected.activation)  # conv1's own output, not 3x it
    assert torch.allclose(got.input_grad, expected.input_grad, atol=1e-6, rtol=0)
