"""The kinds of crops pictures, and the default ones for a network: whether it max-pools decides deconv's worth."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from deepvis.models.model import Model
from deepvis.store import CROP_KINDS

KINDS = CROP_KINDS
_MAX_POOL_MODULES = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
                     nn.AdaptiveMaxPool3d, nn.FractionalMaxPool2d, nn.FractionalMaxPool3d)
_MAX_POOL_FUNCTIONS = {F.max_pool1d, F.max_pool2d, F.max_pool3d, F.max_pool1d_with_indices, F.max_pool2d_with_indices,
                       F.max_pool3d_with_indices, F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d,
                       F.adaptive_max_pool1d_with_indices, F.adaptive_max_pool2d_with_indices,
                       F.adaptive_max_pool3d_with_indices, F.fractional_max_pool2d, F.fractional_max_pool3d,
                       torch.max_pool1d, torch.max_pool2d, torch.max_pool3d, torch.max_pool1d_with_indices,
                       torch.adaptive_max_pool1d}


class _MaxPoolSeen(TorchFunctionMode):
    """Notes whether a forward pass calls a max-pooling function."""

    seen = False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in _MAX_POOL_FUNCTIONS:
            self.seen = True
        return func(*args, **(kwargs or {}))


def has_max_pooling(model: Model) -> bool:
    """Whether the network max-pools anywhere: a max-pooling module, or a max-pooling function called in a forward
    pass (Caffe imports and functional code)."""
    names = {cls.__name__ for cls in _MAX_POOL_MODULES}
    for module in model.net.modules():
        if isinstance(module, _MAX_POOL_MODULES) or getattr(module, "original_name", None) in names:
            return True
    height, width = model.preprocessing.input_size
    x = torch.zeros(1, model.preprocessing.channels, height, width, device=model.device)
    watch = _MaxPoolSeen()
    try:
        with torch.no_grad(), watch:
            model.net(x)
    except Exception:  # a network that cannot run here: its modules said no max pooling
        return False
    return watch.seen


def default_kinds(model: Model) -> tuple[str, ...]:
    """``image deconv`` for a network with max pooling, else ``image guided``: without max-pooling switches,
    deconv has no image-specific information and draws about the same picture for every top image."""
    return ("image", "deconv") if has_max_pooling(model) else ("image", "guided")
