"""Loading models from a spec string: the bundled EfficientNet-Lite0, ``module.path:factory``, TorchScript and
state-dict files, ONNX and Caffe files, ``torchvision:NAME`` / ``timm:NAME``, and model config files (``.toml``)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from deepvis.core.errors import ModelError, PreprocessingError, one_line
from deepvis.models.config import (apply_settings, check_layer_names, is_config, preprocessing_options, read_config,
                                   read_labels)
from deepvis.models.imagenet import imagenet_labels
from deepvis.models.model import Model, prepare, prepared_view
from deepvis.models.preprocessing import Preprocessing
from deepvis.models.recipe import add_file, make_recipe
from deepvis.models.specs import load_spec, torch_device

DEFAULT_MODEL = "efficientnet-lite0"

__all__ = ["DEFAULT_MODEL", "Model", "Preprocessing", "imagenet_labels", "load_model"]


def load_model(spec: str | Path | nn.Module | Model = DEFAULT_MODEL, device: str | torch.device = "cpu",
               arch: str | None = None, weights: str | Path | None = None, labels: str | Path | list[str] | None = None,
               **preprocessing) -> Model:
    """Load a model from a spec and prepare it for visualization (eval, frozen, no in-place activations).
    A module (or :class:`Model`) of the caller's is left as it was: the model runs a view of it that shares its
    weights (see :func:`deepvis.models.model.prepared_view`), so training it on shows in the next visualization.

    ``spec``: ``efficientnet-lite0`` (default, bundled ImageNet weights), ``module.path:factory`` or
    ``file.py:factory`` (a callable returning an ``nn.Module`` or a :class:`Model`), a TorchScript file, a state
    dict file together with ``arch='module:factory'``, an ONNX file, a Caffe ``deploy.prototxt``,
    ``torchvision:NAME`` / ``timm:NAME``, a model config file (``.toml``), or an ``nn.Module`` / :class:`Model`.
    ``weights``: the ``.caffemodel`` of a prototxt, or a state-dict file for any other module (torchvision/timm
    included). ``labels``: a file with one label per line (or a list).
    Keyword arguments override preprocessing fields (``input_size``, ``mean`` (values, a (C, H, W) array, or a
    ``.npy`` / ``.binaryproto`` file), ``std``, ``channel_order``, ``value_scale`` or ``scale`` (multiplier of 0-255
    pixel values), ``resize``); they also override a config file's.
    """
    recipe = make_recipe(spec, arch, weights, labels, preprocessing)
    callers = isinstance(spec, (nn.Module, Model))  # the caller goes on using it: prepare a view, not it
    config = read_config(spec) if is_config(spec) else None
    if config is not None:
        spec, arch, weights = config.model, arch or config.arch, weights or config.weights
        if not str(spec).startswith(("builtin:", "torchvision:", "timm:")) and Path(str(spec)).suffix:
            add_file(recipe, "spec", spec)
        add_file(recipe, "weights", weights)
        if config.mean_file and "mean" not in preprocessing:
            add_file(recipe, "mean", config.mean_file)
        labels = labels if labels is not None else config.labels
        preprocessing = {**config.preprocessing, **preprocessing}
        _check_config_files(config, spec, weights)
    model = load_spec(spec, arch, weights)
    if model.recipe is None and isinstance(recipe, dict) and "spec" in recipe:
        model.recipe = recipe
    if labels is not None:
        model.labels = read_labels(labels) if isinstance(labels, (str, Path)) else list(labels)
    if config is not None:
        apply_settings(model, config)
        model.spec = str(config.path)
    if preprocessing:
        try:
            model.preprocessing = model.preprocessing.with_(**preprocessing_options(preprocessing))
        except PreprocessingError as exc:  # the settings themselves, wherever they came from
            raise ModelError(f"bad preprocessing for model {model.spec!r}: {exc}") from None
        except ModelError as exc:
            if config is not None and not str(exc).startswith("config "):
                raise config.error(str(exc)) from None
            raise
        except (TypeError, ValueError) as exc:
            raise ModelError(f"bad preprocessing for model {model.spec!r}: {exc}") from None
    model.net = prepared_view(model.net) if callers else prepare(model.net)
    model.to(torch_device(device))
    try:
        model.layers()  # one forward pass at the input size: a model that cannot take it fails here, clearly
    except Exception as exc:
        pre = model.preprocessing
        first = one_line(exc, 300)
        raise ModelError(
            f"model {model.spec!r} fails on a {pre.channels}x{pre.input_size[0]}x{pre.input_size[1]} input "
            f"({type(exc).__name__}: {first}); set its input size / channel order (e.g. --input-size H,W, or "
            "channel_order='gray' with one mean and std)") from None
    if config is not None:
        check_layer_names(model, config)
    elif model.prob_layer and model.prob_layer not in model.layer_names():
        raise ModelError(f"model {model.spec!r}: its prob_layer '{model.prob_layer}' is not one of its layers")
    return model


def _check_config_files(config, spec, weights) -> None:
    """A config's files, in the order a user fixes them: the model file, then the weights (the mean is read
    later, when the preprocessing is applied)."""
    spec = str(spec)
    target = spec.rpartition(":")[0] if spec.rpartition(":")[0].endswith(".py") else spec
    if not spec.startswith(("builtin:", "torchvision:", "timm:")) and Path(target).suffix \
            and not Path(target).expanduser().exists():
        raise config.error(f"model file not found: '{target}'")
    if weights is not None and not Path(weights).expanduser().exists():
        raise config.error(f"weights file not found: '{weights}' (fetch it: the comments at the top of "
                           f"{config.path.name} say where from)")
