"""Loading models from a spec string: the bundled EfficientNet-Lite0, ``module.path:factory``, TorchScript files."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from importlib import resources
from pathlib import Path

import torch
from torch import nn

from ..errors import ModelError
from .model import Model, prepare
from .preprocessing import Preprocessing

DEFAULT_MODEL = "efficientnet-lite0"
_BUILTINS = ("efficientnet-lite0",)

__all__ = ["DEFAULT_MODEL", "Model", "Preprocessing", "imagenet_labels", "load_model"]


def imagenet_labels() -> list[str]:
    """The 1000 ILSVRC-2012 class names, index order."""
    text = resources.files("deepvis.models").joinpath("labels/imagenet.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def load_model(spec: str | nn.Module | Model = DEFAULT_MODEL, device: str | torch.device = "cpu",
               arch: str | None = None, **preprocessing) -> Model:
    """Load a model from a spec and prepare it for visualization (eval, frozen, no in-place activations).

    ``spec``: ``efficientnet-lite0`` (default, bundled ImageNet weights), ``module.path:factory`` or
    ``file.py:factory`` (a callable returning an ``nn.Module`` or a :class:`Model`), a TorchScript file, a state
    dict file together with ``arch='module:factory'``, or an ``nn.Module`` / :class:`Model` object.
    Keyword arguments override preprocessing fields (``input_size``, ``mean``, ``std``, ``channel_order``,
    ``value_scale``, ``resize``).
    """
    model = _load(spec, arch)
    if preprocessing:
        try:
            model.preprocessing = model.preprocessing.with_(**preprocessing)
        except (TypeError, ValueError) as exc:
            raise ModelError(f"bad preprocessing for model {model.spec!r}: {exc}") from None
    prepare(model.net)
    model.to(_device(device))
    try:
        model.layers()  # one forward pass at the input size: a model that cannot take it fails here, clearly
    except Exception as exc:
        pre = model.preprocessing
        first = " ".join(str(exc).split())[:300]
        raise ModelError(
            f"model {model.spec!r} fails on a {pre.channels}x{pre.input_size[0]}x{pre.input_size[1]} input "
            f"({type(exc).__name__}: {first}); set its input size / channel order (e.g. --input-size H,W, or "
            "channel_order='gray' with one mean and std)") from None
    return model


def _device(device: str | torch.device) -> torch.device:
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ModelError(f"unknown device {str(device)!r}: use 'cpu', 'cuda' or 'cuda:N'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"device {str(device)!r} asked for, but no CUDA GPU is available here; use --device cpu")
    return dev


def _load(spec: str | nn.Module | Model, arch: str | None) -> Model:
    if isinstance(spec, Model):
        return spec
    if isinstance(spec, nn.Module):
        return Model(net=spec, spec=f"<{type(spec).__name__}>")
    if not isinstance(spec, str) or not spec.strip():
        raise ModelError(f"model spec must be a non-empty string, got {spec!r}")
    spec = spec.strip()
    name = spec.removeprefix("builtin:")
    if name in _BUILTINS:
        return _efficientnet_lite0(spec)
    path = Path(spec)
    if path.suffix.lower() == ".py":
        raise ModelError(f"model spec {spec!r} names a Python file: add the factory to call, e.g. '{spec}:build'")
    if path.suffix.lower() in (".pt", ".pth", ".ts", ".bin", ".ckpt") or path.is_file():
        if not path.is_file():
            raise ModelError(f"model file not found: '{spec}'")
        return _load_file(path, arch)
    if ":" in spec:
        return _from_factory(spec)
    raise ModelError(
        f"unknown model spec {spec!r}: use 'efficientnet-lite0', 'module.path:factory', "
        "'file.py:factory' or a TorchScript file"
    )


def _efficientnet_lite0(spec: str) -> Model:
    from .efficientnet_lite import default_layers, efficientnet_lite0, pretty_names

    return Model(
        net=efficientnet_lite0(pretrained=True),
        preprocessing=Preprocessing(input_size=(224, 224), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
        labels=imagenet_labels(),
        spec=spec,
        outputs="probs",
        default_layers=default_layers(),
        pretty_names=pretty_names(),
    )


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
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ModelError(f"cannot read weights '{path}': {exc}") from None
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise ModelError(f"'{path}' does not hold a state dict (found {type(state).__name__})")
        try:
            made.net.load_state_dict(state)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()
            raise ModelError(f"weights '{path}' do not fit architecture '{arch}': {' '.join(first[:3])}") from None
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
