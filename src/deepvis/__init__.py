"""deepvis: a PyTorch-native Deep Visualization Toolbox.

Everything the toolbox shows is one call away::

    import deepvis
    model = deepvis.load_model()                      # bundled EfficientNet-Lite0, ImageNet
    deepvis.predict(model, "cat.jpg")                 # top-5 classes
    acts = deepvis.activations(model, "cat.jpg", ["blocks.5"])
    result = deepvis.backprop(model, "cat.jpg", "blocks.5:42", mode="guided")
    deepvis.save_image(result.image("norm"), "guided.png")
    best = deepvis.optimize(model, "classifier:285", max_iter=200)[0]  # an image the unit loves
    maps = deepvis.attention_maps(vit, "cat.jpg")     # a ViT's attention probabilities, per layer
    deepvis.save_image(deepvis.attention_map(vit, "cat.jpg", rollout=True).overlay(), "rollout.png")
    cam = deepvis.attribute(model, "cat.jpg", "classifier:285", "gradcam")  # .map (H, W), .overlay()
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from deepvis.core.version import __version__

# public name -> the module that defines it; imported on first use (PEP 562), so `import deepvis.core.units`
# loads no torch and `deepvis.optimize` stays the function while its package lives in deepvis.engine.featvis
_EXPORTS = {
    "AttentionMap": "deepvis.engine.attention",
    "AttentionMaps": "deepvis.engine.attention",
    "attention_map": "deepvis.engine.attention",
    "attention_maps": "deepvis.engine.attention",
    "attention_overlay": "deepvis.engine.attention",
    "record_attention": "deepvis.engine.attention",
    "rollout": "deepvis.engine.attention",
    "token_grid": "deepvis.engine.attention",
    "Attribution": "deepvis.engine.attribution",
    "attribute": "deepvis.engine.attribution",
    "MODES": "deepvis.engine.backprop",
    "Backward": "deepvis.engine.backprop",
    "BackpropResult": "deepvis.engine.backprop",
    "Trace": "deepvis.engine.backprop",
    "backprop": "deepvis.engine.backprop",
    "backprop_batch": "deepvis.engine.backprop",
    "rectifier_rules": "deepvis.engine.backprop",
    "start_signal": "deepvis.engine.backprop",
    "trace": "deepvis.engine.backprop",
    "DeepvisError": "deepvis.core.errors",
    "ImageError": "deepvis.core.errors",
    "ModelError": "deepvis.core.errors",
    "UnitError": "deepvis.core.errors",
    "load_image": "deepvis.pixels.images",
    "DEFAULT_MODEL": "deepvis.models",
    "Model": "deepvis.models",
    "Preprocessing": "deepvis.models",
    "imagenet_labels": "deepvis.models",
    "load_model": "deepvis.models",
    "AccentuationResult": "deepvis.engine.featvis",
    "MacoParams": "deepvis.engine.featvis",
    "ModernParams": "deepvis.engine.featvis",
    "OptimizeResult": "deepvis.engine.featvis",
    "PaperParams": "deepvis.engine.featvis",
    "accentuate": "deepvis.engine.featvis",
    "make_params": "deepvis.engine.featvis",
    "optimize": "deepvis.engine.featvis",
    "optimize_to_store": "deepvis.jobs.optimize_store",
    "evaluate_store": "deepvis.jobs.evaluate",
    "Prediction": "deepvis.engine.predict",
    "predict": "deepvis.engine.predict",
    "probabilities": "deepvis.engine.predict",
    "LayerInfo": "deepvis.engine.probe",
    "Probe": "deepvis.engine.probe",
    "activations": "deepvis.engine.probe",
    "default_layers": "deepvis.engine.probe",
    "layer_info": "deepvis.engine.probe",
    "list_layers": "deepvis.engine.probe",
    "FILTERS": "deepvis.pixels.render",
    "TileGrid": "deepvis.pixels.render",
    "back_image": "deepvis.pixels.render",
    "color_diffs": "deepvis.pixels.render",
    "montage": "deepvis.pixels.render",
    "norm01": "deepvis.pixels.render",
    "norm01c": "deepvis.pixels.render",
    "normalize_layer": "deepvis.pixels.render",
    "png_bytes": "deepvis.pixels.render",
    "save_image": "deepvis.pixels.render",
    "tile_layer": "deepvis.pixels.render",
    "to_uint8": "deepvis.pixels.render",
    "unit_image": "deepvis.pixels.render",
    "sample_images": "deepvis.pixels.samples",
    "Unit": "deepvis.core.units",
    "parse_unit": "deepvis.core.units",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    """The public name ``name``, imported from its module the first time it is asked for."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'deepvis' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # static analysers and IDEs see the eager imports
    from deepvis.engine.attention import AttentionMap, AttentionMaps, attention_map, attention_maps, attention_overlay, record_attention, rollout, token_grid  # noqa: F401
    from deepvis.engine.attribution import Attribution, attribute  # noqa: F401
    from deepvis.engine.backprop import MODES, Backward, BackpropResult, Trace, backprop, backprop_batch, rectifier_rules, start_signal, trace  # noqa: F401
    from deepvis.core.errors import DeepvisError, ImageError, ModelError, UnitError  # noqa: F401
    from deepvis.pixels.images import load_image  # noqa: F401
    from deepvis.models import DEFAULT_MODEL, Model, Preprocessing, imagenet_labels, load_model  # noqa: F401
    from deepvis.engine.featvis import AccentuationResult, MacoParams, ModernParams, OptimizeResult, PaperParams, accentuate, make_params, optimize  # noqa: F401
    from deepvis.jobs.optimize_store import optimize_to_store  # noqa: F401
    from deepvis.jobs.evaluate import evaluate_store  # noqa: F401
    from deepvis.engine.predict import Prediction, predict, probabilities  # noqa: F401
    from deepvis.engine.probe import LayerInfo, Probe, activations, default_layers, layer_info, list_layers  # noqa: F401
    from deepvis.pixels.render import FILTERS, TileGrid, back_image, color_diffs, montage, norm01, norm01c, normalize_layer, png_bytes, save_image, tile_layer, to_uint8, unit_image  # noqa: F401
    from deepvis.pixels.samples import sample_images  # noqa: F401
    from deepvis.core.units import Unit, parse_unit  # noqa: F401
