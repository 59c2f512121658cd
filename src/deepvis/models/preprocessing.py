"""How a model wants its pixels: input size, resize policy, value scale, mean (per channel or an image), std, channel
order."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import torch
from PIL import Image

from deepvis.core.errors import PreprocessingError

ResizeMode = Literal["crop", "stretch"]


@dataclass(frozen=True, eq=False)
class Preprocessing:
    """Turns an RGB image into a model input and back.

    ``input = (pixels01 * value_scale - mean) / std`` per channel, channels in ``channel_order``.
    ``mean`` and ``std`` are given in the model's channel order and in value-scale units (a Caffe model:
    ``value_scale=255``, BGR). ``mean`` is per channel, or a (C, H, W) mean image like Caffe's
    ``ilsvrc_2012_mean.npy``: it is centre-cropped to the input's size, or resized where smaller.
    """

    input_size: tuple[int, int] = (224, 224)
    mean: tuple[float, ...] | np.ndarray = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    channel_order: Literal["rgb", "bgr", "gray"] = "rgb"
    value_scale: float = 1.0
    resize: ResizeMode = "crop"
    extra: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.mean, (np.ndarray, torch.Tensor)) and np.ndim(self.mean) == 3:
            image = np.array(self.mean, dtype=np.float32)  # a private, read-only copy: the dataclass is frozen
            image.setflags(write=False)
            object.__setattr__(self, "mean", image)
        else:
            object.__setattr__(self, "mean", tuple(float(v) for v in np.ravel(self.mean)))
        object.__setattr__(self, "std", tuple(float(v) for v in np.ravel(self.std)))
        object.__setattr__(self, "input_size", tuple(int(v) for v in self.input_size))
        if self.channel_order not in ("rgb", "bgr", "gray"):
            raise PreprocessingError(f"channel_order must be 'rgb', 'bgr' or 'gray', got {self.channel_order!r}")
        if self.resize not in ("crop", "stretch"):
            raise PreprocessingError(f"resize must be 'crop' or 'stretch', got {self.resize!r}")
        for name in ("mean", "std"):
            count = len(getattr(self, name))  # a mean image: its channels
            if count not in (1, self.channels):
                what = "channels" if self.mean_is_image and name == "mean" else "values"
                raise PreprocessingError(f"{name} has {count} {what}, but channel_order {self.channel_order!r} has "
                                         f"{self.channels} channel(s)")
        if any(v == 0 for v in self.std):
            raise PreprocessingError("std must not contain 0")
        if len(self.input_size) != 2 or min(self.input_size) < 1:
            raise PreprocessingError(f"input_size must be (height, width), got {self.input_size!r}")

    @property
    def channels(self) -> int:
        return 1 if self.channel_order == "gray" else 3

    @property
    def mean_is_image(self) -> bool:
        return isinstance(self.mean, np.ndarray)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Preprocessing):
            return NotImplemented
        return self.to_json() == other.to_json() and (
            not self.mean_is_image or np.array_equal(self.mean, other.mean))

    __hash__ = None  # a mean image is mutable-looking data: not hashable

    def to_json(self) -> dict:
        """The fields as JSON data (a mean image as its shape and per-channel averages), e.g. for a manifest."""
        mean = self.mean
        if self.mean_is_image:
            mean = {"image_shape": list(mean.shape), "channel_means": [round(float(v), 4) for v in mean.mean((1, 2))]}
        return {"input_size": list(self.input_size), "mean": mean if isinstance(mean, dict) else list(mean),
                "std": list(self.std), "channel_order": self.channel_order, "value_scale": self.value_scale,
                "resize": self.resize}

    def with_(self, **changes) -> "Preprocessing":
        """A copy with some fields changed."""
        return replace(self, **changes)

    def fit(self, image: Image.Image, resize: ResizeMode | None = None) -> Image.Image:
        """Resize to the input size: ``crop`` keeps the aspect ratio (centre crop), ``stretch`` does not."""
        height, width = self.input_size
        mode = resize or self.resize
        if mode == "crop":
            image = center_crop_to_aspect(image, width / height)
        elif mode != "stretch":
            raise PreprocessingError(f"resize must be 'crop' or 'stretch', got {mode!r}")
        if image.size != (width, height):
            image = image.resize((width, height), Image.BILINEAR)
        return image

    def to_tensor(self, image: Image.Image, resize: ResizeMode | None = None) -> torch.Tensor:
        """An RGB PIL image -> a (C, H, W) float tensor ready for the model."""
        image = self.fit(image, resize)
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32).copy()).permute(2, 0, 1) / 255.0
        return self.normalize(pixels)

    def normalize(self, pixels01: torch.Tensor) -> torch.Tensor:
        """(3, H, W) RGB pixels in [0, 1] -> model input (works on batches too)."""
        x = self.from_rgb(pixels01) * self.value_scale
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        return (x - self.mean_tensor(x)) / std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Model input -> (3, H, W) RGB pixels in [0, 1] (not clipped)."""
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        return self.to_rgb(x * std + self.mean_tensor(x)) / self.value_scale

    def mean_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """The mean to subtract from ``x`` (..., C, H, W): (C, 1, 1), or the mean image fitted to H x W."""
        if not self.mean_is_image:
            return torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        return torch.tensor(fit_mean_image(self.mean, tuple(x.shape[-2:])), dtype=x.dtype, device=x.device)

    def from_rgb(self, rgb: torch.Tensor) -> torch.Tensor:
        """Reorder RGB channels (dim -3) into the model's channel order."""
        if self.channel_order == "bgr":
            return rgb.flip(-3)
        if self.channel_order == "gray":
            weights = torch.tensor([0.299, 0.587, 0.114], dtype=rgb.dtype, device=rgb.device).view(3, 1, 1)
            return (rgb * weights).sum(-3, keepdim=True)
        return rgb

    def to_rgb(self, x: torch.Tensor) -> torch.Tensor:
        """Reorder the model's channels (dim -3) back to RGB; gray is repeated (used for gradients too)."""
        if self.channel_order == "bgr":
            return x.flip(-3)
        if self.channel_order == "gray":
            return x.expand(*x.shape[:-3], 3, *x.shape[-2:])
        return x


def center_crop_to_aspect(image: Image.Image, aspect: float) -> Image.Image:
    """The largest centred crop with width / height == ``aspect``."""
    width, height = image.size
    if width / height > aspect:
        new_width = max(1, round(height * aspect))
        left = (width - new_width) // 2
        return image.crop((left, 0, left + new_width, height))
    new_height = max(1, round(width / aspect))
    top = (height - new_height) // 2
    return image.crop((0, top, width, top + new_height))


def fit_mean_image(mean: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A (C, H, W) mean image at ``size``: centre-cropped where larger (as the original toolbox did), resized
    (bilinear) where smaller."""
    height, width = size
    if mean.shape[1] < height or mean.shape[2] < width:
        scale = max(height / mean.shape[1], width / mean.shape[2])  # keeps the aspect ratio, then crops
        size_grown = (max(height, round(mean.shape[1] * scale)), max(width, round(mean.shape[2] * scale)))
        image = torch.tensor(mean)[None]
        mean = torch.nn.functional.interpolate(image, size=size_grown, mode="bilinear", align_corners=False)[0].numpy()
    top, left = (mean.shape[1] - height) // 2, (mean.shape[2] - width) // 2
    return mean[:, top:top + height, left:left + width]
