"""Per-unit pictures from a find-max store: the receptive-field crop of each top image and its backward images.

For unit ``layer:channel`` and each of its k top images, the crop is the part of the input (as the network saw
it) inside the unit's receptive field at the recorded position, padded black where the field leaves the image;
its ``deconv`` / ``gradient`` / ``guided`` images start from a one-hot at that position. Montages of the k crops
per kind, and a sprite of every channel's best crop per layer and kind (the toolbox's pattern mode), complete it.

Zeiler & Fergus's deconv takes its image-specific information only from max-pooling switches, so in a network
without max pooling every top image of a unit gets nearly the same deconv picture: there the default kinds are
``image guided`` (see :func:`default_kinds`).

The modules, one idea each: :mod:`~deepvis.jobs.crops.kinds` (the kinds and their defaults),
:mod:`~deepvis.jobs.crops.plan` (a layer's fields, windows and counted work), :mod:`~deepvis.jobs.crops.records`
(whether a unit's crops are current), :mod:`~deepvis.jobs.crops.pictures` (a group of units' pictures),
:mod:`~deepvis.jobs.crops.writer` (the writer threads and the sprites), :mod:`~deepvis.jobs.crops.config` (the
settings and the report) and :mod:`~deepvis.jobs.crops.run` (the run itself).
"""

from deepvis.core.boxes import context_box, crop_box
from deepvis.jobs.crops.config import BATCH_ROWS, CropsConfig, CropsReport, LayerCrops
from deepvis.jobs.crops.kinds import KINDS, default_kinds, has_max_pooling
from deepvis.jobs.crops.pictures import OUTLINE_COLOUR, draw_outline
from deepvis.jobs.crops.plan import Plan, layer_plan, local_unit, windows
from deepvis.jobs.crops.records import is_current
from deepvis.jobs.crops.run import interleave, make_crops, run_crops
from deepvis.jobs.fields import effective_field, unit_box
from deepvis.jobs.inputs import StoreInputs

# the names of the single-module crops of earlier versions (tests and benchmarks reach for them)
_Inputs = StoreInputs
_plan = layer_plan
_windows = windows
_local = local_unit
_effective_field = effective_field

__all__ = ["BATCH_ROWS", "KINDS", "OUTLINE_COLOUR", "CropsConfig", "CropsReport", "LayerCrops", "Plan",
           "StoreInputs", "context_box", "crop_box", "default_kinds", "draw_outline", "effective_field",
           "has_max_pooling", "interleave", "is_current", "layer_plan", "local_unit", "make_crops", "run_crops",
           "unit_box", "windows"]
