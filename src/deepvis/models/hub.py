"""``torchvision:NAME`` and ``timm:NAME``: the architectures of those optional packages, with their weights' own
preprocessing and labels, and weights from a file (``--weights``) or the local cache; nothing is downloaded."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from deepvis.core.errors import ModelError, one_line
from deepvis.models.imagenet import imagenet_labels
from deepvis.models.model import Model
from deepvis.models.preprocessing import Preprocessing
from deepvis.models.weights import load_weights


def load_hub(spec: str, weights: str | Path | None = None) -> Model:
    """A ``torchvision:NAME`` or ``timm:NAME`` model; ``weights``: a state-dict file, else the local cache."""
    package, _, name = spec.partition(":")
    if not name:
        raise ModelError(f"model spec {spec!r} names no architecture: write e.g. '{package}:resnet18'")
    loader = _torchvision if package == "torchvision" else _timm
    net, cached, preprocessing, labels = loader(_import(package, spec), name)
    source = weights or (cached if cached is not None and cached.is_file() else None)
    if source is None:
        where = f" (looked for '{cached}')" if cached is not None else ""
        raise ModelError(f"no weights for {spec!r} in the local cache{where}: give a state-dict file with "
                         "--weights FILE (nothing is downloaded at run time)")
    load_weights(net, source, f"'{spec}'")
    return Model(net=net, preprocessing=preprocessing, labels=labels, spec=spec)


def _import(package: str, spec: str):
    try:
        return importlib.import_module(package)
    except ImportError:
        raise ModelError(f"model spec {spec!r} needs the {package} package, which is not installed here "
                         f"(pip install {package}); or use another model spec") from None
    except Exception as exc:  # installed but broken, e.g. built for another torch
        raise ModelError(f"model spec {spec!r} needs the {package} package, which fails to import: "
                         f"{type(exc).__name__}: {one_line(exc, 200)}") from None


def _preprocessing(size: tuple[int, int], channels: int, mean, std) -> Preprocessing:
    return Preprocessing(input_size=size, mean=tuple(mean), std=tuple(std),
                         channel_order="gray" if channels == 1 else "rgb")


def _torchvision(torchvision, name: str):
    """(net without weights, where its weights are cached (or None), preprocessing, labels) of a torchvision
    model."""
    try:
        builder = torchvision.models.get_model_builder(name)
    except ValueError:
        raise ModelError(f"torchvision has no model {name!r} (torchvision.models.list_models() lists them)") \
            from None
    net: nn.Module = builder(weights=None)
    try:
        pretrained = torchvision.models.get_model_weights(name).DEFAULT
    except (ValueError, AttributeError):
        return net, None, Preprocessing(), None
    transform = pretrained.transforms()
    crop = transform.crop_size
    size = (crop[0], crop[-1]) if isinstance(crop, (list, tuple)) else (crop, crop)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(pretrained.url).path).name
    preprocessing = _preprocessing(size, 3, transform.mean, transform.std)
    return net, cached, preprocessing, pretrained.meta.get("categories")


def _timm(timm, name: str):
    """(net without weights, where its weights are cached (or None), preprocessing, labels) of a timm model."""
    if not timm.is_model(name):
        raise ModelError(f"timm has no model {name!r} (timm.list_models('*{name[:8]}*') lists similar ones)")
    net: nn.Module = timm.create_model(name, pretrained=False)
    data = timm.data.resolve_data_config({}, model=net)
    channels, height, width = data["input_size"]
    preprocessing = _preprocessing((height, width), channels, data["mean"], data["std"])
    config = getattr(net, "pretrained_cfg", None) or {}
    labels = None
    if getattr(net, "num_classes", None) == 1000:
        labels = imagenet_labels()
    return net, _huggingface_cached(config.get("hf_hub_id")), preprocessing, labels


def _huggingface_cached(repo_id: str | None) -> Path | None:
    """The weights file of a Hugging Face model repository in the local cache (the newest snapshot), or the
    folder where it would be."""
    if not repo_id:
        return None
    home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")).expanduser()
    cache = Path(os.environ.get("HF_HUB_CACHE", home / "hub")).expanduser()
    snapshots = cache / f"models--{repo_id.replace('/', '--')}" / "snapshots"
    found = [p for pattern in ("model.safetensors", "pytorch_model.bin") for p in snapshots.glob(f"*/{pattern}")]
    return max(found, key=lambda p: p.stat().st_mtime) if found else snapshots
