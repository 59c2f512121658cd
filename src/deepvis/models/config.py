"""Model config files (``--model mymodel.toml``), the modern ``settings_local.py``, and the preprocessing options
that both config files and command-line flags give: per-channel or image means, ``scale``, labels files.

A config names a model spec and everything the toolbox should know about it; relative paths are read from the
config's folder, ``~`` is expanded. See ``docs/model-config.md`` for every key.
"""

from __future__ import annotations

import difflib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deepvis.core.errors import ModelError
from deepvis.core.files import read_text
from deepvis.models.caffe.weights import read_mean  # one reader of mean files: .npy and Caffe's .binaryproto
from deepvis.models.catalog import unknown_layer_error
from deepvis.models.imagenet import imagenet_labels

#: Spec prefixes that are not paths (a config's ``model`` is otherwise resolved against its folder).
_NOT_PATHS = ("builtin:", "torchvision:", "timm:")

#: Preprocessing keys of a config's ``[preprocessing]`` table (and of ``load_model``'s keyword arguments).
PREPROCESSING_KEYS = ("input_size", "mean", "std", "scale", "channel_order", "resize")
#: The keys of a config file; those holding lists of layer names first.
_LAYER_LISTS = ("default_layers", "hidden_layers", "label_layers")
_KEYS = ("model", "weights", "arch", "labels", "outputs", "prob_layer", "store", "store_remap", "pretty_names",
         "pretty_replace", "preprocessing", "layouts") + _LAYER_LISTS


@dataclass
class ModelConfig:
    """A parsed config file: what to load (``model``, ``weights``, ``arch``), how to feed it (``preprocessing``,
    keyword arguments of ``load_model``) and how to show it (``settings``: :class:`Model` attributes)."""

    path: Path
    model: str
    weights: str | None = None
    arch: str | None = None
    labels: str | None = None
    preprocessing: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    pretty_replace: list[tuple[str, str]] = field(default_factory=list)
    mean_file: str | None = None

    def error(self, message: str) -> ModelError:
        return ModelError(f"config '{self.path}': {message}")


def is_config(spec: object) -> bool:
    return isinstance(spec, (str, Path)) and str(spec).strip().lower().endswith(".toml")


def read_config(path: str | Path) -> ModelConfig:
    """Parse and check a model config file; every relative path in it is made relative to its folder."""
    path = Path(path).expanduser()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"model config not found: '{path}'") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ModelError(f"cannot read model config '{path}': {exc}") from None
    base = path.parent
    config = ModelConfig(path=path, model="")
    _check_keys(config, data, _KEYS, "")
    if not isinstance(data.get("model"), str) or not data["model"].strip():
        raise config.error("'model' (the model spec, e.g. \"deploy.prototxt\" or \"net.onnx\") is required")
    config.model = _resolve_spec(data["model"].strip(), base)
    config.weights = _file(config, data, "weights", base)
    config.arch = _string(config, data, "arch")
    labels = _string(config, data, "labels")
    config.labels = labels if labels in (None, "imagenet") else str(base / Path(labels).expanduser())
    config.preprocessing = _preprocessing(config, data.get("preprocessing", {}), base)
    settings = {name: _string_list(config, data, name) for name in _LAYER_LISTS if name in data}
    for name in ("prob_layer", "outputs"):
        if name in data:
            settings[name] = _string(config, data, name)
    if settings.get("outputs") not in (None, "logits", "probs"):
        raise config.error(f"'outputs' must be \"logits\" or \"probs\", got {settings['outputs']!r}")
    if "store" in data:
        settings["store"] = _file(config, data, "store", base)
    for name in ("pretty_names", "store_remap", "layouts"):
        if name in data:
            settings[name] = _string_table(config, data, name)
    config.settings = settings
    config.pretty_replace = _replacements(config, data.get("pretty_replace", []))
    return config


def apply_settings(model, config: ModelConfig) -> None:
    """Set the config's :class:`Model` attributes (before the layer catalog is made: it reads them)."""
    for name, value in config.settings.items():
        setattr(model, name, value)
    model._catalog = None


def check_layer_names(model, config: ModelConfig) -> None:
    """Every layer the config names must exist; then ``pretty_replace`` is applied to the layer names."""
    names = set(model.layer_names())
    settings = config.settings
    named = {"prob_layer": [settings.get("prob_layer")], "pretty_names": list(settings.get("pretty_names", {})),
             "store_remap": list(settings.get("store_remap", {})), "layouts": list(settings.get("layouts", {})),
             **{key: settings.get(key) or [] for key in ("default_layers", "label_layers")}}
    for key, layers in named.items():
        for layer in layers:
            if layer is not None and layer not in names:
                raise config.error(f"{key}: {unknown_layer_error(layer, sorted(names))}")
    if config.pretty_replace:
        model.pretty_names = {**{name: pretty_name(name, config.pretty_replace) for name in names},
                              **settings.get("pretty_names", {})}


def pretty_name(name: str, replacements: list[tuple[str, str]]) -> str:
    """``name`` with each (old, new) substring replacement applied in order, as the original's
    ``caffevis_layer_pretty_name_fn`` chains of ``str.replace`` did."""
    for old, new in replacements:
        name = name.replace(old, new)
    return name


# ------------------------------------------------------------------------------------ preprocessing options
def preprocessing_options(options: dict, base: Path | None = None) -> dict:
    """``load_model`` keyword arguments -> :class:`Preprocessing` fields.

    ``scale`` multiplies 0-255 pixel values (Caffe's ``raw_scale`` / ``scale`` before the mean: 1 for Caffe
    models, 1/255 for models fed [0, 1] pixels) and becomes ``value_scale = 255 * scale``; a ``mean`` given as a
    string is per-channel values (``"104,117,123"``) or a ``.npy`` / ``.binaryproto`` mean-image file.
    """
    options = dict(options)
    if "scale" in options:
        scale = options.pop("scale")
        if not isinstance(scale, (int, float)) or isinstance(scale, bool) or not scale > 0:
            raise ModelError(f"scale must be a positive number (multiplier of 0-255 pixel values), got {scale!r}")
        options["value_scale"] = 255.0 * scale
    if isinstance(options.get("mean"), (str, Path)) and not (base is not None and Path(options["mean"]).is_absolute()
                                                             and not _numbers(str(options["mean"]))):
        options["mean"] = parse_mean(options["mean"], base)
    return options


def parse_mean(value: str | Path, base: Path | None = None) -> tuple[float, ...] | np.ndarray:
    """Per-channel values (``"104,117,123"``) or a mean-image file (``.npy`` (C, H, W), ``.binaryproto``)."""
    text = str(value).strip()
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        pass
    path = (base or Path.cwd()) / Path(text).expanduser()
    if not path.is_file():
        raise ModelError(f"mean file not found: '{path}' (give per-channel values like 104,117,123 or a "
                         ".npy / .binaryproto file)")
    mean = read_mean(path)
    if mean.shape[1:] == (1, 1):
        return tuple(float(v) for v in mean.reshape(-1))
    if not np.isfinite(mean).all():
        raise ModelError(f"mean file '{path}' holds values that are not finite numbers")
    return mean


def read_labels(path: str | Path) -> list[str]:
    """One label per line (empty lines dropped); ``"imagenet"`` is the bundled ILSVRC-2012 list."""
    if str(path) == "imagenet":
        return imagenet_labels()
    path = Path(path).expanduser()
    text = read_text(path, "labels")
    labels = [line.strip() for line in text.splitlines() if line.strip()]
    if not labels:
        raise ModelError(f"labels file '{path}' has no labels (one per line expected)")
    return labels


# ------------------------------------------------------------------------------------ checking the file
def _check_keys(config: ModelConfig, data: dict, known: tuple[str, ...], table: str) -> None:
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; known keys: {', '.join(known)}"
            raise config.error(f"unknown key '{table}{key}'{hint}")


def _resolve_spec(spec: str, base: Path) -> str:
    """A config's model spec with its file part made relative to the config's folder."""
    if spec.startswith(_NOT_PATHS) or spec in ("efficientnet-lite0",):
        return spec
    target, colon, factory = spec.rpartition(":")
    if colon and target.endswith(".py"):
        return f"{base / Path(target).expanduser()}:{factory}"
    if colon and not Path(spec).suffix:
        return spec  # package.module:factory
    return str(base / Path(spec).expanduser())


def _string(config: ModelConfig, data: dict, key: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise config.error(f"'{key}' must be a string, got {value!r}")
    return value


def _file(config: ModelConfig, data: dict, key: str, base: Path) -> str | None:
    value = _string(config, data, key)
    return None if value is None else str(base / Path(value).expanduser())


def _string_list(config: ModelConfig, data: dict, key: str) -> list[str]:
    value = data[key]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise config.error(f"'{key}' must be a list of layer names, got {value!r}")
    return value


def _string_table(config: ModelConfig, data: dict, key: str) -> dict[str, str]:
    value = data[key]
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise config.error(f"'{key}' must be a table of layer = \"name\" entries, got {value!r}")
    return dict(value)


def _replacements(config: ModelConfig, value) -> list[tuple[str, str]]:
    pairs = value if isinstance(value, list) else [None]
    if not all(isinstance(p, list) and len(p) == 2 and all(isinstance(s, str) for s in p) for p in pairs):
        raise config.error(f"'pretty_replace' must be a list of [\"old\", \"new\"] pairs, got {value!r}")
    return [(old, new) for old, new in pairs]


def _preprocessing(config: ModelConfig, table, base: Path) -> dict:
    if not isinstance(table, dict):
        raise config.error("'preprocessing' must be a table: [preprocessing]")
    _check_keys(config, table, PREPROCESSING_KEYS, "preprocessing.")
    options = dict(table)
    if isinstance(options.get("input_size"), int):
        options["input_size"] = (options["input_size"],) * 2
    if isinstance(options.get("std"), (int, float)):
        options["std"] = (options["std"],)
    for key in ("input_size", "mean", "std"):
        value = options.get(key)
        if isinstance(value, list):
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
                raise config.error(f"'preprocessing.{key}' must be numbers, got {value!r}")
            options[key] = tuple(value)
    mean = options.get("mean")
    if isinstance(mean, str) and not _numbers(mean):
        # a mean file: read by load_model after the model and its weights, the order a user fixes missing files in
        options["mean"] = str(base / Path(mean).expanduser())
        config.mean_file = options["mean"]
    try:
        return preprocessing_options(options, base)
    except ModelError as exc:
        raise config.error(str(exc)) from None


def _numbers(text: str) -> bool:
    try:
        [float(v) for v in text.split(",")]
        return True
    except ValueError:
        return False
