"""load_model(module) leaves the caller's module as it was: its train mode, its parameters' requires_grad and its
in-place flags; training it on still learns, and the model sees the new weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import deepvis
from deepvis.engine.backprop import MODES, Trace
from tests.conftest import import_real


def _flags(net: nn.Module) -> dict:
    return {"training": {n: m.training for n, m in net.named_modules()},
            "inplace": {n: m.inplace for n, m in net.named_modules() if isinstance(getattr(m, "inplace", None), bool)},
            "grad": {n: p.requires_grad for n, p in net.named_parameters()}}


def _sequential() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True), nn.MaxPool2d(2),
                         nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Dropout(0.5), nn.Linear(8, 10))


def _resnet18() -> nn.Module:
    torchvision = import_real("torchvision")
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None, num_classes=10)


@pytest.mark.filterwarnings("ignore:.*majority failure")  # three steps: the unit is not expected to win
@pytest.mark.parametrize("build, layer, cam_layer", [(_sequential, "5", "4"), (_resnet18, "layer4", "layer4")],
                         ids=["sequential", "resnet18"])
def test_load_model_leaves_the_callers_module_as_it_was(build, layer, cam_layer, single_thread_torch):
    net = build().train()
    next(net.parameters()).requires_grad_(False)  # the caller's own choice (a frozen stem): kept as well
    before = _flags(net)
    assert any(before["inplace"].values())
    model = deepvis.load_model(net, input_size=(32, 32))
    x = torch.rand(1, 3, 32, 32)
    deepvis.predict(model, x)
    for mode in MODES:
        deepvis.backprop(model, x, f"{layer}:1", mode=mode)
    deepvis.activations(model, x, [layer])
    trace = Trace(model, x, [layer], "guided")
    assert trace.backward(f"{layer}:1").input_grad.abs().sum() > 0
    deepvis.attribute(model, x, f"{cam_layer}:2", "gradcam")
    deepvis.optimize(model, f"{layer}:0", max_iter=3, progress=False)
    assert _flags(net) == before
    assert all(p.grad is None for p in net.parameters())  # deepvis left no gradients in them

    # training on: it learns, and the model sees the new weights (shared, not copied)
    trained = [p for p in net.parameters() if p.requires_grad]
    old = [p.detach().clone() for p in trained]
    optimizer = torch.optim.SGD(trained, lr=0.01)
    loss = nn.functional.cross_entropy(net(torch.rand(2, 3, 32, 32)), torch.tensor([1, 2]))
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in trained)
    seen = model.net(x).detach().clone()
    optimizer.step()
    assert all(not torch.equal(p, o) for p, o in zip(trained, old))
    assert not torch.equal(model.net(x), seen)
    assert not model.net.training and not any(p.requires_grad for p in model.net.parameters())
    net.eval()
    with torch.no_grad():
        assert torch.isfinite(net(x)).all()
        torch.testing.assert_close(model.net(x), net(x))  # the same weights, in eval mode


def test_a_prepared_module_is_used_as_it_is():
    net = _sequential().eval().requires_grad_(False)
    for module in net.modules():
        if hasattr(module, "inplace"):
            module.inplace = False
    assert deepvis.load_model(net, input_size=(16, 16)).net is net
