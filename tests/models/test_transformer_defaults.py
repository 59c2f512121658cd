"""Default layers of real vision transformers (timm, torchvision, Hugging Face transformers; seeded random weights):
each block's output (the residual stream) and its MLP activation; q/k/v and a fused qkv stay addressable, not
defaults."""

from __future__ import annotations

import pytest
import torch

import deepvis
from tests.conftest import import_real


def _timm_vit():
    timm = import_real("timm")
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64), "blocks.{}", 12, "blocks.{}.mlp.act"


def _torchvision_vit():
    torchvision = import_real("torchvision")
    torch.manual_seed(0)
    net = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=3, num_heads=2, hidden_dim=32,
                                               mlp_dim=64, num_classes=5)
    return net, "encoder.layers.encoder_layer_{}", 3, "encoder.layers.encoder_layer_{}.mlp.1"


def _hf_vit(head: bool):
    import_real("torchvision")  # transformers' image utilities import it: through the test shim first
    transformers = import_real("transformers")
    torch.manual_seed(0)
    config = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=3,
                                    num_attention_heads=2, intermediate_size=64, num_labels=5)
    net = transformers.ViTForImageClassification(config) if head else transformers.ViTModel(config)
    prefix = "vit." if head else ""
    return net, prefix + "layers.{}", 3, prefix + "layers.{}.mlp.activation_fn"


@pytest.mark.parametrize("build", [_timm_vit, _torchvision_vit, lambda: _hf_vit(True), lambda: _hf_vit(False)],
                         ids=["timm-vit_tiny", "torchvision-VisionTransformer", "hf-ViTForImageClassification",
                              "hf-ViTModel"])
def test_a_transformers_defaults_are_its_blocks_and_mlp_activations(build, single_thread_torch):
    net, block, depth, act = build()
    size = 64 if "blocks" in block else 32
    model = deepvis.load_model(net, input_size=(size, size))
    defaults = set(deepvis.models.model.default_layers(model))
    names = set(model.layer_names())
    for k in range(depth):
        assert {block.format(k), act.format(k)} <= defaults
    inside = {d for d in defaults if any(d.startswith(block.format(k) + ".") for k in range(depth))}
    assert inside == {act.format(k) for k in range(depth)}  # nothing else of a block: no projection
    projections = {n for n in names if n.rpartition(".")[2] in ("qkv", "q_proj", "k_proj", "v_proj", "fc1", "fc2")}
    assert projections or "encoder_layer" in block  # torchvision's attention is one module (out_proj unhooked)
    assert not projections & defaults
    middle = block.format(depth // 2)
    assert deepvis.activations(model, torch.rand(1, 3, size, size), [middle])[middle].dim() == 3  # the stream
    for name in projections:
        deepvis.models.model.layer_info(model, name)  # still addressable
