"""From a model spec to a :class:`Model`: the bundled EfficientNet-Lite0, ``module.path:factory`` and
``file.py:factory``, TorchScript and state-dict files, ONNX and Caffe files, ``torchvision:NAME`` / ``timm:NAME``;
and the device a model runs on. (Config files and preprocessing keywords are :func:`deepvis.models.load_model`'s.)"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import warnings
from pathlib import Path

import torch
from torch import nn

from deepvis.core.errors import ModelError
from deepvis.models import efficientnet_lite
from deepvis.models.hub import load_hub
from deepvis.models.imagenet import imagenet_labels
from deepvis.models.model import Model
from deepvis.models.onnx import load_onnx
from deepvis.models.preprocessing import Preprocessing
from deepvis.models.weights import load_weights

#: The model specs that name a bundled network.
BUILTINS = ("efficientnet-lite0",)


def torch_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch device, or a clear error (an unknown name, CUDA asked for where there is none)."""
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ModelError(f"unknown device {str(device)!r}: use 'cpu', 'cuda' or 'cuda:N'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"device {str(device)!r} asked for, but no CUDA GPU is available here; use --device cpu")
    return dev


def load_spec(spec: str | Path | nn.Module | Model, arch: str | None = None,
              weights: str | Path | None = None) -> Model:
    """The model a spec names; ``weights`` go to the loaders that read their own format (Caffe, torchvision, timm)
    or are loaded as a state dict into the network."""
    if isinstance(spec, Path):
        spec = str(spec)
    if isinstance(spec, str) and spec.strip().startswith(("torchvision:", "timm:")):
        return load_hub(spec.strip(), weights)
    if isinstance(spec, str) and Path(spec.strip()).suffix.lower() == ".prototxt":
        return _load_caffe(Path(spec.strip()).expanduser(), weights)
    model = _load_spec(spec, arch)
    if weights is not None:
        load_weights(model.net, weights, f"model {model.spec!r}")
    return model


def _load_spec(spec: str | nn.Module | Model, arch: str | None) -> Model:
    if isinstance(spec, Model):
        return spec
    if isinstance(spec, nn.Module):
        return Model(net=spec, spec=f"<{type(spec).__name__}>")
    if not isinstance(spec, str) or not spec.strip():
        raise ModelError(f"model spec must be a non-empty string, got {spec!r}")
    spec = spec.strip()
    name = spec.removeprefix("builtin:")
    if name in BUILTINS:
        return _efficientnet_lite0(spec)
    path = Path(spec).expanduser()
    if path.suffix.lower() == ".py":
        raise ModelError(f"model spec {spec!r} names a Python file: add the factory to call, e.g. '{spec}:build'")
    if path.suffix.lower() == ".onnx":
        return load_onnx(path)
    if path.suffix.lower() in (".pt", ".pth", ".ts", ".bin", ".ckpt") or path.is_file():
        if not path.is_file():
            raise ModelError(f"model file not found: '{spec}'")
        return _load_file(path, arch)
    if ":" in spec:
        return _from_factory(spec)
    raise ModelError(
        f"unknown model spec {spec!r}: use 'efficientnet-lite0', 'module.path:factory', 'file.py:factory', a "
        "TorchScript, ONNX (.onnx), Caffe (.prototxt) or config (.toml) file, or 'torchvision:NAME' / 'timm:NAME'"
    )


def _load_caffe(prototxt: Path, weights: str | Path | None) -> Model:
    if not prototxt.is_file():
        raise ModelError(f"model file not found: '{prototxt}'")
    try:
        from deepvis.models.caffe import load_caffe  # optional dependency: the importer may be left out (a clear error)
    except ImportError as exc:
        raise ModelError(f"cannot open the Caffe model '{prototxt}': the Caffe importer (deepvis.models.caffe) "
                         f"does not import here ({exc})") from None
    if weights is None:
        warnings.warn(f"no weights given for '{prototxt}': the network has random weights (structure only); give "
                      "--weights x.caffemodel", stacklevel=3)
    model = load_caffe(prototxt, weights)
    model.random_weights = weights is None
    return model


def _efficientnet_lite0(spec: str) -> Model:
    net = efficientnet_lite.efficientnet_lite0(pretrained=True)
    model = Model(
        net=net,
        preprocessing=Preprocessing(input_size=(224, 224), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
        labels=imagenet_labels(),
        spec=spec,
        outputs="probs",
        default_layers=efficientnet_lite.default_layers(),
        pretty_names=efficientnet_lite.pretty_names(),
        layouts=efficientnet_lite.layouts(net),  # stated: no second forward pass to find them
    )
    model._fields.update(efficientnet_lite.shipped_fields())  # measured once, shipped: no fixed cost in each command
    return model


def _resolve_factory(spec: str):
    target, _, attr = spec.rpartition(":")
    if not target or not attr.isidentifier():
        raise ModelError(f"model spec {spec!r} must look like 'package.module:factory' or 'file.py:factory'")
    try:
        if target.endswith(".py"):
            file = Path(target)
            if not file.is_file():
                raise ModelError(f"model file not found: '{target}'")
            module_name = f"_deepvis_user_{file.stem}"
            loader_spec = importlib.util.spec_from_file_location(module_name, file)
            module = importlib.util.module_from_spec(loader_spec)
            sys.modules[module_name] = module
            loader_spec.loader.exec_module(module)
        else:
            if "" not in sys.path and str(Path.cwd()) not in sys.path:
                sys.path.insert(0, str(Path.cwd()))  # like `python -m`: modules beside you are importable
            module = importlib.import_module(target)
    except ModelError:
        raise
    except ImportError as exc:
        raise ModelError(f"cannot import '{target}' for model spec {spec!r}: {exc} (for a file, write "
                         f"'path/to/{target.rpartition('.')[2]}.py:{attr}')") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ModelError(f"'{target}' has no callable '{attr}' (model spec {spec!r})")
    return factory


def _from_factory(spec: str) -> Model:
    factory = _resolve_factory(spec)
    try:
        made = factory()
    except Exception as exc:  # the user's code: report, don't crash
        raise ModelError(f"model factory {spec!r} failed: {type(exc).__name__}: {exc}") from exc
    if isinstance(made, Model):
        made.spec = spec
        return made
    if isinstance(made, nn.Module):
        return Model(net=made, spec=spec)
    raise ModelError(f"model factory {spec!r} returned {type(made).__name__}, expected an nn.Module or deepvis Model")


def _load_file(path: Path, arch: str | None) -> Model:
    if arch:
        made = _from_factory(arch)
        load_weights(made.net, path, f"architecture '{arch}'")
        made.spec = f"{path}"
        return made
    try:
        net = torch.jit.load(str(path), map_location="cpu")
    except Exception:
        raise ModelError(
            f"'{path}' is not a TorchScript file; for a state dict pass the architecture too "
            "(--arch module.path:factory)"
        ) from None
    return Model(net=net, spec=str(path))
