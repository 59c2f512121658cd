"""Attribution maps (deepvis.attribution) against Captum, a NumPy Grad-CAM++, hand-made references on token and
channels-last layers, the CLI, and the model-randomization sanity check of Adebayo et al. 2018."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import deepvis
from deepvis.apps import cli
from deepvis.engine.attribution import (INTEGRATIONS, METHODS, attribute, default_cam_layer, gradcam, guided_gradcam,
                                 input_x_gradient, integrated_gradients, make_baseline, smoothgrad, upsample)
from deepvis.core.errors import DeepvisError
from deepvis.core.units import Unit

sys.path.insert(0, str(Path(__file__).parents[1]))  # tests/: zoo.py
import zoo  # noqa: E402

pytestmark = pytest.mark.usefixtures("single_thread_torch")

CLASS = 3
SIZE = (32, 32)


class SmallCNN(nn.Module):
    """conv-relu x3, global pool, linear; ``functional=True`` applies F.relu in forward (no ReLU modules)."""

    def __init__(self, functional: bool = False):
        super().__init__()
        torch.manual_seed(0)
        self.functional = functional
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(16, 16, 3, padding=1)
        if not functional:
            self.relu1, self.relu2, self.relu3 = nn.ReLU(), nn.ReLU(), nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(16, 10)

    def forward(self, x):
        act = (lambda i, t: F.relu(t)) if self.functional else (lambda i, t: getattr(self, f"relu{i}")(t))
        x = act(1, self.conv1(x))
        x = act(2, self.conv2(x))
        x = act(3, self.conv3(x))
        return self.classifier(self.pool(x).flatten(1))


def wrap(net: nn.Module, size=SIZE) -> deepvis.Model:
    return deepvis.load_model(deepvis.Model(net=net, preprocessing=deepvis.Preprocessing(input_size=size)))


@pytest.fixture(scope="module")
def cnn():
    return wrap(SmallCNN())


@pytest.fixture(scope="module")
def x():
    return torch.randn(1, 3, *SIZE, generator=torch.Generator().manual_seed(1))


def close(actual: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-5) -> None:
    """Equal at ``rtol`` relative: elementwise, with an absolute floor of rtol times the largest value."""
    actual, expected = torch.as_tensor(actual).double(), torch.as_tensor(expected).double()
    assert actual.shape == expected.shape
    scale = expected.abs().max().item()
    assert scale > 0, "the reference is all zeros: the comparison would prove nothing"
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * scale)


captum_attr = pytest.importorskip("captum.attr")


# ---------------------------------------------------------------------------------------------- vs Captum
def test_gradcam_equals_captum_layer_gradcam_upsampled(cnn, x):
    reference = captum_attr.LayerGradCam(cnn.net, cnn.net.conv3).attribute(x, target=CLASS, relu_attributions=True)
    reference = captum_attr.LayerAttribution.interpolate(reference, SIZE, interpolate_mode="bilinear")
    ours = attribute(cnn, x, f"classifier:{CLASS}", "gradcam", layer="conv3")
    close(torch.from_numpy(ours.map), reference[0, 0])
    close(upsample(gradcam(cnn, x, f"classifier:{CLASS}", "conv3"), SIZE), reference)
    assert ours.raw.shape == (1, 16, 16) and ours.settings == {"layer": "conv3"}


def test_default_cam_layer_is_the_last_spatial_layer_before_the_unit(cnn, model):
    assert default_cam_layer(cnn, f"classifier:{CLASS}") == "relu3"
    assert default_cam_layer(cnn, "conv3:0") == "relu2"
    assert default_cam_layer(cnn, "conv1:0") == "conv1"  # nothing spatial before it: its own layer
    assert default_cam_layer(model, "classifier:285") == "head"


def test_guided_gradcam_equals_captum_also_on_a_functional_relu_net(cnn, x):
    reference = captum_attr.GuidedGradCam(cnn.net, cnn.net.conv3).attribute(x, target=CLASS,
                                                                            interpolate_mode="bilinear")
    close(guided_gradcam(cnn, x, f"classifier:{CLASS}", "conv3"), reference)
    functional = wrap(SmallCNN(functional=True))  # same weights, F.relu in forward: Captum cannot hook it
    close(guided_gradcam(functional, x, f"classifier:{CLASS}", "conv3"), reference)
    ours = attribute(functional, x, f"classifier:{CLASS}", "guided-gradcam", layer="conv3")
    close(torch.from_numpy(ours.map), reference[0].abs().sum(0))


def test_input_x_gradient_equals_captum(cnn, x):
    reference = captum_attr.InputXGradient(cnn.net).attribute(x, target=CLASS)
    close(input_x_gradient(cnn, x, f"classifier:{CLASS}"), reference)


def test_smoothgrad_equals_captum_noise_tunnel_with_the_same_noise(cnn, x, monkeypatch):
    samples, sigma = 12, 0.2
    stdev = sigma * float(x.max() - x.min())
    noise = torch.randn(samples, *x.shape[1:], generator=torch.Generator().manual_seed(5)) * stdev
    from captum.attr._core.noise_tunnel import NoiseTunnel

    monkeypatch.setattr(NoiseTunnel, "_add_noise_to_input",
                        staticmethod(lambda inp, std, n: inp.repeat_interleave(n, dim=0) + noise))
    reference = NoiseTunnel(captum_attr.Saliency(cnn.net)).attribute(
        x, nt_type="smoothgrad", nt_samples=samples, stdevs=stdev, target=CLASS, abs=False)
    close(smoothgrad(cnn, x, f"classifier:{CLASS}", noise=noise, batch_size=5), reference)  # 3 chunks
    # without a noise tensor: seeded noise of sigma times the input's range, the same for the same seed
    a = smoothgrad(cnn, x, f"classifier:{CLASS}", samples=4, sigma=sigma, seed=3)
    b = smoothgrad(cnn, x, f"classifier:{CLASS}", samples=4, sigma=sigma, seed=3)
    assert torch.equal(a, b) and not torch.equal(a, smoothgrad(cnn, x, f"classifier:{CLASS}", samples=4, seed=4))


@pytest.fixture(scope="module")
def logit_model(model):
    """The bundled EfficientNet-Lite0 with its softmax dropped: the net's output is the logits, so that Captum's
    ``target=c`` is deepvis's unit ``classifier:c``."""
    import copy

    net = copy.deepcopy(model.net)
    net.prob = nn.Identity()
    return deepvis.load_model(deepvis.Model(net=net, preprocessing=model.preprocessing,
                                            spec="efficientnet-lite0 logits"))


@pytest.mark.slow
def test_smoothgrad_equals_captum_on_the_bundled_model_where_equality_is_defined(logit_model, monkeypatch):
    """SmoothGrad on EfficientNet-Lite0 equals Captum's NoiseTunnel(Saliency) with the same noise, when both run
    the same float32 kernels: the same rows per pass and the same memory layout. Not otherwise, and not because
    either is wrong: oneDNN picks its convolution kernels by batch size, layout and thread count (one thread:
    channels-last vs NCHW differ at 16 rows or more), whose float32 roundings differ in the last bits (logits
    1e-6 relative apart); those move a handful of ReLU6 inputs across a kink (6 of 2e8 on 32 samples of
    chelsea), where the derivative jumps, so a sample's gradient changes by up to 0.8% of its largest value; the
    average over noisy samples cancels to a tenth of a sample's gradient, leaving 1.8e-3 of the result's largest
    value (the difference measured before this test). The small ReLU CNN above has far fewer rectifier inputs
    and shows none of it. In float64 the kernels' roundings are 1e-16 and the two layouts agree to 1e-10: the
    only difference is float32 rounding."""
    import copy

    from captum.attr._core.noise_tunnel import NoiseTunnel

    chelsea = next(p for p in deepvis.sample_images() if p.name == "chelsea.jpg")
    x = logit_model.input(chelsea)
    samples, unit = 16, "classifier:285"
    stdev = 0.15 * float(x.max() - x.min())
    noise = torch.randn(samples, *x.shape[1:], generator=torch.Generator().manual_seed(0)) * stdev
    layout = {}

    def same_noise(inp, std, n):
        rows = inp.repeat_interleave(n, dim=0) + noise.to(inp.dtype)
        return rows.contiguous(memory_format=layout["format"])

    monkeypatch.setattr(NoiseTunnel, "_add_noise_to_input", staticmethod(same_noise))

    def captum(net, inp):
        return NoiseTunnel(captum_attr.Saliency(net)).attribute(
            inp, nt_type="smoothgrad", nt_samples=samples, stdevs=stdev, target=285, abs=False,
            nt_samples_batch_size=samples)

    # float32: the same 16 rows per pass, both channels-last (deepvis keeps the input's layout, Model.input's)
    assert x.is_contiguous(memory_format=torch.channels_last)
    layout["format"] = torch.channels_last
    ours = smoothgrad(logit_model, x, unit, noise=noise, batch_size=samples)
    close(ours, captum(logit_model.net, x))
    # float64: Captum's batch in NCHW, ours channels-last (different kernels), equal to 1e-10
    logit_model.layers()  # the catalog is read before the weights turn float64
    double = copy.deepcopy(logit_model)
    double.net.double()
    layout["format"] = torch.contiguous_format
    close(smoothgrad(double, x.double(), unit, noise=noise.double(), batch_size=samples),
          captum(double.net, x.double()), rtol=1e-10)


@pytest.mark.slow
def test_integrated_gradients_equal_captum_on_the_bundled_model(logit_model):
    """Integrated gradients on EfficientNet-Lite0 equal Captum's with the same steps and rule, run with the same
    rows per pass and memory layout (a channels-last baseline makes Captum's path channels-last, as deepvis keeps
    the input's layout): the setting where float32 results are defined, as SmoothGrad's test above explains."""
    chelsea = next(p for p in deepvis.sample_images() if p.name == "chelsea.jpg")
    x = logit_model.input(chelsea)
    base = make_baseline(logit_model, x, "black").contiguous(memory_format=torch.channels_last)
    reference = captum_attr.IntegratedGradients(logit_model.net).attribute(
        x, baselines=base, target=285, n_steps=8, method="gausslegendre", internal_batch_size=4)
    close(integrated_gradients(logit_model, x, "classifier:285", steps=8, baseline="black", batch_size=4), reference)


@pytest.mark.parametrize("method", INTEGRATIONS)
def test_integrated_gradients_equal_captum(cnn, x, method):
    baseline = make_baseline(cnn, x, "blur")
    reference = captum_attr.IntegratedGradients(cnn.net).attribute(x, baselines=baseline, target=CLASS,
                                                                   n_steps=16, method=method)
    close(integrated_gradients(cnn, x, f"classifier:{CLASS}", steps=16, baseline="blur", method=method,
                               batch_size=7), reference)


def test_integrated_gradients_complete_and_baselines(cnn, x):
    """Completeness: the attributions sum to S(x) - S(baseline), nearly, with enough steps."""
    with torch.no_grad():
        for baseline in ("black", "uniform"):
            base = make_baseline(cnn, x, baseline)
            delta = (cnn.net(x) - cnn.net(base))[0, CLASS].item()
            total = integrated_gradients(cnn, x, f"classifier:{CLASS}", steps=64, baseline=baseline).sum().item()
            assert total == pytest.approx(delta, rel=1e-2, abs=1e-4)
    black = make_baseline(cnn, x, "black")
    assert torch.allclose(cnn.preprocessing.denormalize(black[0]), torch.zeros(3, *SIZE), atol=1e-6)


# ---------------------------------------------------------------------------------------------- Grad-CAM++
def numpy_gradcam_plus_plus(activation: np.ndarray, grad: np.ndarray) -> np.ndarray:
    """Chattopadhay et al. 2018, eq. 19 with the exponential score (2nd / 3rd derivatives = powers of the 1st):
    alpha = g^2 / (2 g^2 + sum_ab A_ab g^3); w_k = sum_ij alpha_kij relu(g_kij); L = relu(sum_k w_k A_k)."""
    g2, g3 = grad ** 2, grad ** 3
    denominator = 2 * g2 + (activation * g3).sum(axis=(1, 2), keepdims=True)
    alpha = np.divide(g2, denominator, out=np.zeros_like(g2), where=denominator != 0)
    weights = (alpha * np.maximum(grad, 0)).sum(axis=(1, 2))
    return np.maximum((weights[:, None, None] * activation).sum(axis=0), 0)


def layer_and_grad(net: nn.Module, module: nn.Module, x: torch.Tensor, score) -> tuple[torch.Tensor, torch.Tensor]:
    """A layer's output and the gradient of score(net output) there, by a forward hook and plain autograd."""
    kept = {}
    handle = module.register_forward_hook(lambda m, i, o: kept.setdefault("out", o))
    try:
        with torch.enable_grad():
            out = net(x.clone().requires_grad_(True))
            (grad,) = torch.autograd.grad(score(out), kept["out"])
    finally:
        handle.remove()
    return kept["out"].detach(), grad


def test_gradcam_plus_plus_equals_the_papers_formula(cnn, x):
    act, grad = layer_and_grad(cnn.net, cnn.net.conv3, x, lambda out: out[0, CLASS])
    reference = numpy_gradcam_plus_plus(act[0].double().numpy(), grad[0].double().numpy())
    ours = gradcam(cnn, x, f"classifier:{CLASS}", "conv3", plus=True)[0, 0]
    close(ours, torch.from_numpy(reference))


# ---------------------------------------------------------------------------------------------- any unit, any layout
def test_a_conv_unit_and_a_position_score_their_own_sum_and_value(cnn, x):
    kept = {}
    handle = cnn.net.conv3.register_forward_hook(lambda m, i, o: kept.setdefault("out", o))
    try:
        with torch.enable_grad():
            xg = x.clone().requires_grad_(True)
            cnn.net(xg)
            (whole,) = torch.autograd.grad(kept["out"][0, 5].sum(), xg, retain_graph=True)
            (point,) = torch.autograd.grad(kept["out"][0, 5, 3, 4], xg)
    finally:
        handle.remove()
    close(input_x_gradient(cnn, x, "conv3:5"), x * whole)
    close(input_x_gradient(cnn, x, "conv3:5@3,4"), x * point)


def test_gradcam_on_token_and_channels_last_layers_reads_the_view():
    vit = wrap(zoo.vit(), (64, 64))
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    # the class logit reads only the CLS token: at blocks.0 (before the last attention) the grid gets gradient
    tokens, grad = layer_and_grad(vit.net, vit.net.blocks[0], x, lambda out: out[0, 2])
    view = lambda t: t[:, 1:].transpose(1, 2).reshape(1, -1, 4, 4)  # noqa: E731  (CLS first, 4x4 grid)
    weights = view(grad).mean(dim=(2, 3), keepdim=True)
    reference = (weights * view(tokens)).sum(1, keepdim=True).clamp(min=0)
    close(gradcam(vit, x, "head:2", "blocks.0"), reference)
    assert attribute(vit, x, "blocks.1:5@cls", "gradcam", layer="blocks.0").map.max() > 0  # an extra-token unit
    convnext = wrap(zoo.convnext(), (64, 64))
    layer = next(i.name for i in convnext.layers() if i.layout.kind == "nhwc" and len(i.shape) == 3)
    cam = gradcam(convnext, x, "head.fc:1", layer)
    assert cam.shape[-2:] == tuple(convnext.layers()[[i.name for i in convnext.layers()].index(layer)].shape[1:])


def test_every_method_gives_a_map_at_input_resolution_and_an_overlay(cnn, x):
    for method in METHODS:
        result = attribute(cnn, x, f"classifier:{CLASS}", method, steps=4, samples=4)
        assert result.map.shape == SIZE and result.map.dtype == np.float32 and np.isfinite(result.map).all()
        overlay = result.overlay(0.4)
        assert overlay.shape == (*SIZE, 3) and 0 <= overlay.min() and overlay.max() <= 1
    with pytest.raises(DeepvisError, match="unknown attribution method"):
        attribute(cnn, x, "classifier:1", "lime")
    with pytest.raises(DeepvisError, match="runs after"):
        attribute(cnn, x, "conv2:1", "gradcam", layer="conv3")


@pytest.mark.slow
def test_cli_attribute_writes_overlays_and_npy(tmp_path, capsys):
    images = [p for p in deepvis.sample_images() if p.name in ("chelsea.jpg", "coffee.jpg")]
    out = tmp_path / "one.png"
    assert cli.main(["attribute", str(images[0]), "--unit", "classifier:285", "--method", "gradcam",
                     "-o", str(out), "--npy"]) == 0
    assert out.is_file() and np.load(tmp_path / "one.npy").shape == (224, 224)
    folder = tmp_path / "many"
    folder.mkdir()
    assert cli.main(["attribute", *map(str, images), "--unit", "classifier:285", "--method", "input-x-gradient",
                     "-o", str(folder)]) == 0
    assert sorted(p.name for p in folder.iterdir()) == ["chelsea.png", "coffee.png"]
    assert cli.main(["attribute", *map(str, images), "--unit", "classifier:285", "--method", "gradcam",
                     "-o", str(tmp_path / "{stem}-cam.png")]) == 0
    assert (tmp_path / "coffee-cam.png").is_file()
    assert cli.main(["attribute", *map(str, images), "--unit", "classifier:285", "-o", str(out)]) == 2
    assert cli.main(["attribute", str(images[0]), "--unit", "classifier:285", "--method", "gradcam",
                     "--layer", "nope", "-o", str(out)]) == 1
    assert "unknown layer 'nope'" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- shared traces
def test_gradcam_shares_a_trace_only_where_it_gives_the_plain_gradient(cnn, x):
    """A deconv / guided trace gives the plain gradient at a layer when its rules changed no rectifier between that
    layer and the unit's: Grad-CAM then reuses it (the backward pane's trace), else it traces in gradient mode. A
    trace whose graph starts at a layer (graph_from) serves that layer, not earlier ones nor the input."""
    from deepvis.engine.attribution import gradcam_from_trace, plain_gradient_at
    from deepvis.engine.backprop import trace

    unit = f"classifier:{CLASS}"
    guided = trace(cnn, x, ["conv2", "relu3", "classifier"], "guided")
    assert plain_gradient_at(guided, "relu3", "classifier")  # relu3 -> pool -> classifier: no rectifier
    assert not plain_gradient_at(guided, "conv2", "classifier")  # relu2 and relu3 lie between
    close(gradcam_from_trace(guided, unit, "relu3"), gradcam(cnn, x, unit, "relu3"))
    with pytest.raises(DeepvisError, match="plain gradient"):
        gradcam_from_trace(guided, unit, "conv2")
    plain = gradcam(cnn, x, unit, "conv2")
    close(gradcam(cnn, x, unit, "conv2", traced=guided), plain)  # not shared: traced again, in gradient mode
    assert not torch.allclose(cam_of_rule(guided, unit, "conv2"), plain)  # what sharing it would have given
    partial = trace(cnn, x, ["conv2", "relu3", "classifier"], "gradient", graph_from="relu3")
    close(gradcam_from_trace(partial, unit, "relu3"), gradcam(cnn, x, unit, "relu3"))
    assert not plain_gradient_at(partial, "conv2", "classifier") and not partial["conv2"].requires_grad
    close(gradcam(cnn, x, unit, "conv2", traced=partial), plain)
    with pytest.raises(DeepvisError, match="no input gradient"):
        partial.backward(unit)


def cam_of_rule(traced, unit: str, layer: str) -> torch.Tensor:
    """The Grad-CAM a trace's own (deconv / guided) signal at ``layer`` would give."""
    from deepvis.engine.attribution import cam_from

    grad = traced.backward(unit, "argmax", to=[layer], to_input=False).layer_grads[layer]
    return cam_from(traced.activations[layer], grad)


@pytest.mark.parametrize("back_mode", ["gradient", "guided", "off"])
def test_live_gradcam_overlay_reuses_the_frames_trace(model, back_mode):
    """The toolbox's Grad-CAM overlay of a webcam frame runs no forward pass of its own: it reads the frame's kept
    trace, the backward pane's in either mode here (EfficientNet's head.act -> pool -> classifier has no
    rectifier) or, with the pane off, one whose graph starts at the Grad-CAM layer, and draws the same map as a
    fresh ``attribute`` call. Turning the pane on later traces the input again for its input gradient."""
    import base64
    import io

    from PIL import Image

    from deepvis.pixels import render
    from deepvis.apps.server.panes import ViewRequest
    from deepvis.apps.server.session import Toolbox

    chelsea = next(p for p in deepvis.sample_images() if p.name == "chelsea.jpg")
    toolbox = Toolbox(model)
    request = {"layer": "classifier", "channel": 285, "cursor": "grid", "overlay": "gradcam",
               "back_mode": "gradient" if back_mode == "off" else back_mode, "back_enabled": back_mode != "off"}
    first = toolbox.input_from_bytes(chelsea.read_bytes(), "frame", tab="t")
    toolbox.view(ViewRequest.from_json({"input": first.id, **request}))  # sets how the next frame is traced
    frame = Image.open(chelsea).convert("RGB").transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    buffer = io.BytesIO()
    frame.save(buffer, format="PNG")
    item = toolbox.input_from_bytes(buffer.getvalue(), "frame", tab="t")
    kept = toolbox._traces.fetch(item.id)
    assert kept.mode == request["back_mode"] and kept.graph_from == ("head.act" if back_mode == "off" else None)
    forwards = []
    handle = model.net.register_forward_pre_hook(lambda *_: forwards.append(1))
    try:
        response = toolbox.view(ViewRequest.from_json({"input": item.id, **request}))
    finally:
        handle.remove()
    overlay = response["overlay"]
    assert forwards == [] and overlay["caption"] == "gradcam of classifier:285 at head.act"
    assert (response["back"] is None) == (back_mode == "off")
    fresh = attribute(model, item.x, "classifier:285", "gradcam", layer="head.act")
    expected = render.to_uint8(render.heat_overlay(np.asarray(item.image, np.float32) / 255, fresh.map, 0.5))
    drawn = np.asarray(Image.open(io.BytesIO(base64.b64decode(overlay["png"]))).convert("RGB"))
    assert drawn.shape == expected.shape and np.abs(drawn.astype(int) - expected).max() <= 1
    if back_mode == "off":  # the pane turned on: the input gradient of a full trace, not the partial one's
        grad = toolbox.backward(item, Unit("classifier", 285), "gradient")[0]
        close(grad, deepvis.backprop(model, item.x, "classifier:285").input_grad)


# ---------------------------------------------------------------------------------------------- sanity checks
def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a.ravel(), b.ravel()).statistic)


#: Largest |Spearman rank correlation| allowed between a method's maps on the trained and on the fully randomized
#: model, per method. Measured (the 4 sample photos at their top class, 8 steps / samples; max over photos):
#: gradcam 0.50, gradcam++ 0.87, input-x-gradient 0.44, smoothgrad 0.23, integrated-gradients 0.64. Grad-CAM++
#: (non-negative weights on non-negative maps) and the methods multiplied by the input keep much of the image's own
#: structure, as Adebayo et al. report for input-multiplied methods; see docs/attribution.md.
SANITY_BOUNDS = {"gradcam": 0.6, "gradcam++": 0.95, "input-x-gradient": 0.55, "smoothgrad": 0.35,
                 "integrated-gradients": 0.75}


@pytest.mark.slow
def test_maps_of_a_randomized_model_differ_from_the_trained_ones(model):
    """Adebayo et al. 2018, cascading to full randomization: re-initialized weights must change the maps."""
    import copy

    randomized = copy.deepcopy(model)
    torch.manual_seed(0)
    for module in randomized.net.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    photos, found = deepvis.sample_images(), {}
    assert "chelsea.jpg" in [p.name for p in photos]
    for photo in photos:
        top = deepvis.predict(model, photo, top=1)[0].index
        if photo.name == "chelsea.jpg":
            assert top == 285
        for method in ("gradcam", "gradcam++", "input-x-gradient", "smoothgrad", "integrated-gradients"):
            trained = attribute(model, photo, f"classifier:{top}", method, steps=8, samples=8)
            random = attribute(randomized, photo, f"classifier:{top}", method, steps=8, samples=8)
            found[photo.name, method] = spearman(trained.map, random.map)
    print(found)
    for (name, method), rho in found.items():
        assert abs(rho) < SANITY_BOUNDS[method], (name, method, rho)
