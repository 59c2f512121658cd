"""Probe: many layers in one forward pass, hooks always removed, clear errors."""

import pytest
import torch
from torch import nn

import deepvis
from deepvis import Probe, UnitError


def _hook_count(net):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in net.modules())


def test_all_default_layers_in_one_pass_equal_manual_forward(model):
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    names = deepvis.default_layers(model) + ["blocks.5"]  # the defaults, and a block output beside them
    with torch.no_grad(), Probe(model, names) as probe:
        out = model.net(x)
    assert set(probe.activations) == set(names)
    net = model.net
    with torch.no_grad():
        stem = net.stem(x)
        b5 = net.blocks[:6](stem)
        logits = net.classifier(net.flatten(net.pool(net.head(net.blocks[6:](b5)))))
    assert torch.allclose(probe["stem.act"], stem)
    assert torch.allclose(probe["blocks.5"], b5, atol=1e-5)
    assert torch.allclose(probe["classifier"], logits, atol=1e-4)
    assert torch.allclose(probe["prob"], out)
    for info in model.layers():
        if info.name in names:
            assert tuple(probe[info.name].shape[1:]) == info.shape
    assert _hook_count(net) == 0


def test_hooks_removed_when_forward_raises(model):
    with pytest.raises(RuntimeError):
        with Probe(model, ["blocks.3", "head.act"]):
            model.net(torch.zeros(1, 5, 224, 224))  # wrong channel count
    assert _hook_count(model.net) == 0


def test_stop_early_skips_the_rest(model):
    calls = []
    handle = model.net.head.register_forward_hook(lambda *a: calls.append(1))
    try:
        with Probe(model, ["blocks.2"], stop_early=True) as probe:
            assert probe.run(torch.zeros(1, 3, 224, 224)) is None
    finally:
        handle.remove()
    assert probe["blocks.2"].shape == (1, 24, 56, 56) and not calls


def test_unknown_layer_suggests_close_names(model):
    with pytest.raises(UnitError, match=r"unknown layer 'block.5'; did you mean 'blocks.5'"):
        with Probe(model, ["block.5"]):
            pass
    assert _hook_count(model.net) == 0


def test_activations_helper_and_other_input_sizes(model):
    acts = deepvis.activations(model, torch.zeros(3, 256, 320), ["blocks.5", "classifier"])
    assert acts["blocks.5"].shape == (80, 16, 20) and acts["classifier"].shape == (1000,)


def test_shared_module_detected_on_bare_modules():
    relu = nn.ReLU()
    net = nn.Sequential(nn.Conv2d(3, 3, 1), relu, nn.Conv2d(3, 3, 1), relu)
    with pytest.raises(UnitError, match="runs more than once per forward pass"):
        with Probe(net, ["1"]) as probe:
            probe.run(torch.zeros(1, 3, 4, 4))
    assert _hook_count(net) == 0


def test_bad_layer_leaves_no_hook_behind(model):
    """A probe whose second layer is a typo raises before hooking anything, so later probes record as usual."""
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    before = _hook_count(model.net)
    with torch.no_grad():
        net = model.net
        b3 = net.blocks[:4](net.stem(x))
        plain = {"blocks.3": b3, "classifier": net.classifier(net.flatten(net.pool(net.head(net.blocks[4:](b3))))),
                 "output": net(x)}
    with pytest.raises(UnitError, match="unknown layer 'blocks.3typo'"):
        with Probe(model, ["blocks.3", "blocks.3typo"]):
            pass
    assert _hook_count(model.net) == before
    for layers in (["blocks.3"], ["blocks.3", "classifier"]):
        with torch.no_grad(), Probe(model, layers) as probe:
            out = model.net(x)
        assert list(probe.activations) == layers
        for layer in layers:
            assert torch.allclose(probe[layer], plain[layer], atol=1e-4)
        assert torch.allclose(out, plain["output"], atol=1e-5)
    assert _hook_count(model.net) == before
