"""The engine's three hook styles (Probe's module hooks, the rectifier rules' function mode, attention recording's
SDPA wrapper and module hooks): a failed ``__enter__`` leaves nothing installed, and contexts nested and exited in
any order each remove only their own hooks while the others keep working; once all have exited, the process is as
before (``F.scaled_dot_product_attention`` the original function, no function mode, no module hooks)."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deepvis.core.errors import DeepvisError
from deepvis.engine import rules as rules_module
from deepvis.engine.attention import AttentionRecorder, record_attention
from deepvis.engine.backprop import RectifierRules, rectifier_rules
from deepvis.engine.probe import Probe

sys.path.insert(0, str(Path(__file__).parents[1]))  # tests/: zoo.py
import zoo  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_thread_torch")

SDPA = torch._C._nn.scaled_dot_product_attention


def frozen(name: str) -> nn.Module:
    net = getattr(zoo, name)()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def image(batch: int = 2, size: int = 64) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1))


def assert_clean(*nets: nn.Module) -> None:
    assert F.scaled_dot_product_attention is SDPA
    assert torch._C._len_torch_function_stack() == 0
    for net in nets:
        for module in net.modules():
            assert not module._forward_hooks and not module._forward_pre_hooks, module


def input_grad(net: nn.Module, x: torch.Tensor, mode: str | None = None) -> torch.Tensor:
    """The gradient of output 0 at ``x``, under a fresh ``rectifier_rules(mode)`` context (None: as things are)."""
    x = x.clone().requires_grad_(True)
    if mode is None:
        out = net(x)
    else:
        with rectifier_rules(mode):
            out = net(x)
    return torch.autograd.grad(out[:, 0].sum(), x)[0]


# ------------------------------------------------------------------------------------------------ attention
@pytest.mark.parametrize("exit_order", list(itertools.permutations(range(3))))
def test_attention_recorders_exited_in_any_order_keep_recording_then_leave_nothing(exit_order):
    """The known bug: two recorders exited out of order left the SDPA wrapper installed for good."""
    net, x = frozen("vit"), image()
    with torch.no_grad():
        plain = net(x)
    recorders = [record_attention(net) for _ in range(3)]
    for recorder in recorders:
        recorder.__enter__()
    with torch.no_grad():
        assert torch.equal(net(x), plain)
    expected = dict(recorders[0].maps)
    assert list(expected) == [f"blocks.{i}.attn" for i in range(2)]
    for recorder in recorders[1:]:
        assert list(recorder.maps) == list(expected)
    remaining = list(recorders)
    for index in exit_order:
        recorders[index].__exit__(None, None, None)
        remaining.remove(recorders[index])
        before = {id(recorder): recorder.maps for recorder in recorders}
        with torch.no_grad():
            assert torch.equal(net(x), plain)
        for recorder in recorders:
            if recorder in remaining:  # a new pass, recorded as before
                assert recorder.maps is not before[id(recorder)] and list(recorder.maps) == list(expected)
                for layer, probs in expected.items():
                    assert torch.equal(recorder.maps[layer], probs)
            else:
                assert recorder.maps is before[id(recorder)]
        assert (F.scaled_dot_product_attention is SDPA) == (not remaining)
    assert_clean(net)


def test_attention_recorders_interleaved_across_models():
    vit, mha = frozen("vit"), frozen("vit_mha")
    first, second = record_attention(vit).__enter__(), record_attention(mha).__enter__()
    first.__exit__(None, None, None)
    with torch.no_grad():
        mha(image())
    assert list(second.maps) == ["blocks.0.attn.attn", "blocks.1.attn.attn"]
    second.__exit__(None, None, None)
    assert_clean(vit, mha)


def _fail_on(module: nn.Module, method: str, monkeypatch) -> None:
    def fail(*args, **kwargs):
        raise RuntimeError("cannot hook")
    monkeypatch.setattr(module, method, fail)


def test_attention_recorder_failed_enter_rolls_back(monkeypatch):
    net, x = frozen("vit_mha"), image()
    _fail_on(net.blocks[1].attn.attn, "register_forward_hook", monkeypatch)  # after several hooks are in place
    with pytest.raises(RuntimeError, match="cannot hook"):
        record_attention(net).__enter__()
    assert_clean(net)
    other = frozen("vit")
    with record_attention(other) as outer:  # another recorder's wrapper stays, and it keeps recording
        with pytest.raises(RuntimeError, match="cannot hook"), record_attention(net):
            pass
        assert F.scaled_dot_product_attention is not SDPA
        with torch.no_grad():
            other(x)
        assert list(outer.maps) == ["blocks.0.attn", "blocks.1.attn"]
    assert_clean(net, other)


def test_attention_recorder_is_a_class_made_by_record_attention():
    net = frozen("vit")
    recorder = record_attention(net, eager=True)
    assert isinstance(recorder, AttentionRecorder) and recorder.eager
    with recorder:
        with pytest.raises(DeepvisError, match="recording already"):
            recorder.__enter__()
    assert_clean(net)


# ------------------------------------------------------------------------------------------------ probe
@pytest.mark.parametrize("exit_order", list(itertools.permutations(range(3))))
def test_probes_exited_in_any_order_remove_only_their_hooks(exit_order):
    net, x = zoo.resnet(), image()
    with torch.no_grad():
        plain = net(x)
    probes = [Probe(net, ["layer1", "layer2"], below_in_place=True), Probe(net, ["layer2", "relu"]),
              Probe(net, ["layer3"])]
    for probe in probes:
        probe.__enter__()
    remaining = list(probes)
    for index in exit_order:
        probes[index].__exit__()
        remaining.remove(probes[index])
        before = [dict(probe.activations) for probe in probes]
        with torch.no_grad():
            assert torch.equal(net(x), plain)
        for probe, seen in zip(probes, before):
            if probe in remaining:
                assert set(probe.activations) == set(probe.layers)
                assert all(probe.activations[name] is not seen.get(name) for name in probe.layers)
            else:
                assert probe.activations == seen
    assert_clean(net)
    with torch.no_grad():
        assert torch.equal(net(x), plain)


@pytest.mark.parametrize("below_in_place", [False, True])
def test_probe_failed_enter_rolls_back(below_in_place, monkeypatch):
    net = zoo.resnet()
    with Probe(net, ["layer3"]) as outer:
        _fail_on(net, "register_forward_pre_hook", monkeypatch)  # the last hook a probe installs
        with pytest.raises(RuntimeError, match="cannot hook"):
            Probe(net, ["layer1", "relu", "layer2"], below_in_place=below_in_place).__enter__()
        monkeypatch.undo()
        hooked = [m for m in net.modules() if m._forward_hooks or m._forward_pre_hooks]
        assert hooked == [net, net.layer3]  # the outer probe's own
        with torch.no_grad():
            net(image())
        assert outer["layer3"].shape == (2, 24, 4, 4)
    assert_clean(net)


# ------------------------------------------------------------------------------------------------ rectifier rules
@pytest.mark.parametrize("exit_order", list(itertools.permutations(range(3))))
def test_rectifier_rules_exited_in_any_order_keep_the_remaining_rule(exit_order):
    """torch's own ``TorchFunctionMode.__exit__`` pops whichever mode is on top: exiting the outer context first
    would take the inner one's rule away and leave the outer one in force."""
    net, x = zoo.resnet(), image(1)
    expected = {mode: input_grad(net, x, mode) for mode in ("gradient", "deconv", "guided")}
    assert not torch.equal(expected["deconv"], expected["guided"])
    contexts = [rectifier_rules("deconv"), rectifier_rules("guided"), rectifier_rules("gradient")]
    for context in contexts:
        context.__enter__()
    remaining = list(contexts)
    for index in exit_order:
        contexts[index].__exit__(None, None, None)
        remaining.remove(contexts[index])
        assert torch._C._len_torch_function_stack() == len(remaining)
        counts = [context.modified for context in contexts]
        got = input_grad(net, x)
        # the innermost remaining rule decides (inner modes run first; gradient mode passes calls on)
        modes = [mode for context, mode in zip(contexts, ("deconv", "guided", "gradient")) if context in remaining]
        mode = next((mode for mode in reversed(modes) if mode != "gradient"), "gradient")
        torch.testing.assert_close(got, expected[mode], atol=1e-6, rtol=0)
        for context, count in zip(contexts, counts):
            if context not in remaining:
                assert context.modified == count
    assert_clean(net)


def test_rectifier_rules_failed_enter_rolls_back(monkeypatch):
    net, x = zoo.resnet(), image(1)
    guided = input_grad(net, x, "guided")
    with rectifier_rules("guided") as outer:
        def fail(mode):
            raise RuntimeError("cannot push")
        monkeypatch.setattr(rules_module, "_push_on_torch_function_stack", fail)
        with pytest.raises(RuntimeError, match="cannot push"), rectifier_rules("deconv"):
            pass
        monkeypatch.undo()
        assert torch._C._len_torch_function_stack() == 1
        torch.testing.assert_close(input_grad(net, x), guided, atol=1e-6, rtol=0)
        assert outer.modified > 0
    assert_clean(net)


def test_rectifier_rules_is_a_class_made_by_rectifier_rules():
    rules = rectifier_rules("guided", save_like_autograd=True)
    assert isinstance(rules, RectifierRules) and rules.save_like_autograd and rules.rule == (True, True)
    with pytest.raises(DeepvisError, match="unknown backprop mode"):
        rectifier_rules("nope")


# ------------------------------------------------------------------------------------------------ all three
@pytest.mark.parametrize("exit_order", list(itertools.permutations(range(3))))
def test_the_three_styles_nested_and_exited_in_any_order(exit_order):
    vit, cnn, x = frozen("vit"), zoo.resnet(), image(1)
    with torch.no_grad():
        plain_vit, plain_cnn = vit(x), cnn(x)
    guided = input_grad(cnn, x, "guided")
    contexts = [record_attention(vit), Probe(cnn, ["layer2"]), rectifier_rules("guided")]
    for context in contexts:
        context.__enter__()
    live = list(contexts)
    for index in exit_order:
        contexts[index].__exit__(None, None, None)
        live.remove(contexts[index])
        with torch.no_grad():
            assert torch.equal(vit(x), plain_vit)
        got = input_grad(cnn, x)
        assert torch.equal(cnn(x).detach(), plain_cnn)
        if contexts[0] in live:
            assert list(contexts[0].maps) == ["blocks.0.attn", "blocks.1.attn"]
        if contexts[1] in live:
            assert contexts[1]["layer2"].shape == (1, 16, 8, 8)
        if contexts[2] in live:
            torch.testing.assert_close(got, guided, atol=1e-6, rtol=0)
    assert_clean(vit, cnn)
    torch.testing.assert_close(input_grad(cnn, x), input_grad(cnn, x, "gradient"), atol=0, rtol=0)
