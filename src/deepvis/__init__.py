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

from .attention import (AttentionMap, AttentionMaps, attention_map, attention_maps, attention_overlay, record_attention,
                        rollout, token_grid)
from .attribution import Attribution, attribute
from .backprop import MODES, Backward, BackpropResult, Trace, backprop, backprop_batch, rectifier_rules, start_signal, trace
from .errors import DeepvisError, ImageError, ModelError, UnitError
from .images import load_image
from .models import DEFAULT_MODEL, Model, Preprocessing, imagenet_labels, load_model
from .optimize import (AccentuationResult, MacoParams, ModernParams, OptimizeResult, PaperParams, accentuate,
                       make_params, optimize, optimize_to_store)
from .optimize.evaluate import evaluate_store
from .predict import Prediction, predict, probabilities
from .probe import LayerInfo, Probe, activations, default_layers, layer_info, list_layers
from .render import (FILTERS, TileGrid, back_image, color_diffs, montage, norm01, norm01c, normalize_layer,
                     png_bytes, save_image, tile_layer, to_uint8, unit_image)
from .samples import sample_images
from .units import Unit, parse_unit

__version__ = "0.1.0"

__all__ = [
    "Attribution", "attribute", "AttentionMap", "AttentionMaps", "attention_map", "attention_maps", "attention_overlay", "record_attention", "rollout", "token_grid",
    "AccentuationResult", "MacoParams", "accentuate", "evaluate_store",
    "DEFAULT_MODEL", "FILTERS", "MODES", "Backward", "BackpropResult", "DeepvisError", "ImageError", "LayerInfo", "Model",
    "ModelError", "ModernParams", "OptimizeResult", "PaperParams", "Prediction", "Preprocessing", "Probe",
    "TileGrid", "Unit", "UnitError", "activations", "back_image", "backprop", "backprop_batch", "color_diffs",
    "default_layers", "imagenet_labels", "layer_info", "list_layers", "load_image", "load_model", "make_params",
    "montage", "norm01", "norm01c", "normalize_layer", "optimize", "optimize_to_store", "parse_unit", "png_bytes",
    "predict", "probabilities", "rectifier_rules", "sample_images", "save_image", "start_signal", "tile_layer",
    "to_uint8", "Trace", "trace", "unit_image", "__version__",
]
