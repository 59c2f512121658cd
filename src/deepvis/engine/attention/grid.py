"""The patch grid of a vision transformer and its extra tokens (CLS, distillation, registers)."""

from __future__ import annotations

import torch
from torch import nn

from deepvis.core.errors import DeepvisError
from deepvis.models.layouts import patch_grid
from deepvis.models.model import Model


def token_grid(model: Model | nn.Module, input_size: tuple[int, int] | None = None) -> tuple[int, tuple[int, int]]:
    """The patch grid of a vision transformer on an ``input_size`` (H, W) input: ``(extra_tokens, (gh, gw))``.

    The grid is the output size of the patch embedding, found as the first ``Conv2d`` whose stride equals its
    kernel (as the layer catalog reads one: :func:`deepvis.models.layouts.patch_grid`) applied to the input itself (timm's ``patch_embed.proj``, torchvision's ``conv_proj``,
    Hugging Face's ``embeddings.patch_embeddings.projection``). The extra tokens (CLS, distillation, registers) are
    how many more tokens than ``gh * gw`` the largest (batch, tokens, features) tensor between modules holds, with
    features the patch embedding's channels. One forward pass of zeros, no gradients.
    """
    net = model.net if isinstance(model, Model) else model
    if input_size is None:
        if not isinstance(model, Model):
            raise DeepvisError("token_grid of a bare module needs input_size (H, W)")
        input_size = model.preprocessing.input_size
    input_size = tuple(int(v) for v in input_size)
    if isinstance(model, Model) and input_size == tuple(model.preprocessing.input_size):
        tokens = [info.layout for info in model.layers() if info.layout.kind == "tokens"]
        if tokens:  # the layer catalog read them already (deepvis.layouts)
            widest = max(tokens, key=lambda layout: layout.extra_tokens)
            return widest.extra_tokens, tuple(widest.grid)
    convs = {name: m for name, m in net.named_modules() if isinstance(m, nn.Conv2d)}
    patch_convs = [name for name in convs if _is_patch_conv(convs, name)]
    if not patch_convs:
        raise DeepvisError("no patch embedding found: the model has no Conv2d whose stride equals its kernel")
    channels = model.preprocessing.channels if isinstance(model, Model) else convs[patch_convs[0]].in_channels
    found: dict[str, object] = {}
    tokens: list[int] = []

    def on_conv(name: str):
        def hook(module, args, output):
            if "grid" not in found and args and args[0].dim() == 4 and tuple(args[0].shape[-2:]) == input_size:
                found["grid"] = patch_grid(convs, {name: tuple(output.shape[1:])}, [name])
                found["dim"] = output.shape[1]
        return hook

    def on_any(module, args, output):
        if "grid" not in found:
            return
        for t in (args[0] if args else None, output):
            if isinstance(t, torch.Tensor) and t.dim() == 3 and t.shape[0] == 1 and t.shape[2] == found["dim"]:
                tokens.append(t.shape[1])

    hooked = [convs[name] for name in patch_convs]
    handles = [convs[name].register_forward_hook(on_conv(name)) for name in patch_convs]
    handles += [m.register_forward_hook(on_any) for m in net.modules() if m not in hooked]
    device = next((p.device for p in net.parameters()), torch.device("cpu"))
    try:
        with torch.no_grad():
            net(torch.zeros(1, channels, *input_size, device=device))
    except Exception as exc:
        raise DeepvisError(f"cannot run the model on a {input_size[0]}x{input_size[1]} input to find its patch grid: "
                           f"{type(exc).__name__}: {exc}") from None
    finally:
        for handle in handles:
            handle.remove()
    if "grid" not in found:
        raise DeepvisError("no patch embedding found: no Conv2d with stride equal to its kernel is applied to the input")
    gh, gw = found["grid"]
    counts = [n for n in tokens if n >= gh * gw]
    return (max(counts) - gh * gw if counts else 0), (int(gh), int(gw))


def _is_patch_conv(convs: dict[str, nn.Conv2d], name: str) -> bool:
    """Whether a convolution is a patch embedding as the layer catalog reads one (``layouts.patch_grid``)."""
    return patch_grid(convs, {name: (0, 0, 0)}, [name]) is not None
