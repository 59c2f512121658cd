"""The on-disk store of per-unit results; the one package that knows its layout (no other module, and no JavaScript,
spells a store file name: the server hands the browser URLs from :meth:`Store.url`). Every write is atomic.

```
STORE/manifest.json                          Manifest: format, model, preprocessing, image source, k, layers, ...
STORE/images.txt                             image index -> path relative to the image root
STORE/.find-max-checkpoint-R-of-W.pt         an interrupted scan's progress, per process
STORE/<layer>/topk.npz                       values, images, y, x: (C, k) arrays, rank 0 = highest
STORE/<layer>/<channel:04d>/<kind>.jpg       montage of the unit's k pictures of one kind, by rank: the crops
                                             (kind image) or backward images (deconv, gradient, guided); the only
                                             picture file of a kind (one rank's: :meth:`Store.unit_crop`)
STORE/<layer>/<channel:04d>/crops.json       what the unit's crops were made from (top-k hash, basis, network,
                                             kinds) and each kind's tiles by rank (x, y, width, height in its
                                             montage), written last; no record or another top-k: stale
STORE/<layer>/<channel:04d>/optimized.png    best optimized image (+ optimized_input.png, optimized_NN.png copies,
                                             optimized_alpha.png: MACO's transparency map, optimized.json: the
                                             record, written last)
STORE/<layer>/evaluation.json                deepvis evaluate: quality metrics per unit and method
STORE/spectrum.npz                           MACO's fixed magnitude spectrum, estimated from the store's images
STORE/<layer>/sprite_<kind>.jpg              every channel of one kind in a square grid (pattern mode)
STORE/<layer>/sprites.json                   what each sprite was made from
STORE/<layer>/crops_plan.json                how the layer's crops are made (effective receptive field, backward
                                             window), measured once and kept while its network and images are
STORE/site/                                  the static site deepvis export writes by default (deepvis.jobs.export)
```
The manifest's ``recipe`` reloads the store's model (:func:`deepvis.jobs.provenance.model_from_manifest`);
:func:`deepvis.jobs.provenance.check_model` refuses another. A re-scan (:meth:`Store.invalidate`) removes exactly
the derived files it made stale.
``<layer>`` is the layer name with every character outside ``[A-Za-z0-9._-]`` percent-encoded. Readers also accept
stores of earlier deepvis versions, which wrote each rank's picture as its own file ``<kind>_<rank:02d>.jpg`` (and
no tiles in the record), and the original toolbox's ``unit_jpg_vis`` layout (``max_im/``, ``max_deconv/``,
``regularized_opt/``; its montages cannot be cut by rank).
"""

from __future__ import annotations

from deepvis.core.files import atomic_write_bytes
from deepvis.store.crops import CROPS_SETTINGS, CropFiles
from deepvis.store.evaluation import EvaluationFiles
from deepvis.store.layout import CROP_KINDS, SPRITE_KINDS, StoreLayout, layer_dirname
from deepvis.store.manifest import FORMAT_VERSION, LayerRecord, Manifest, SkippedImage
from deepvis.store.optimized import OptimizedFiles
from deepvis.store.pictures import UNIT_PICTURES, Pictures
from deepvis.store.scan import ScanFiles
from deepvis.store.sprites import SPRITE_TILE, SpriteFiles, sprite_tile
from deepvis.store.staleness import Staleness

__all__ = ["CROP_KINDS", "CROPS_SETTINGS", "FORMAT_VERSION", "SPRITE_KINDS", "SPRITE_TILE", "UNIT_PICTURES",
           "LayerRecord", "Manifest", "SkippedImage", "Store", "atomic_write_bytes", "layer_dirname", "sprite_tile",
           "CropFiles", "EvaluationFiles", "OptimizedFiles", "Pictures", "ScanFiles", "SpriteFiles", "Staleness",
           "StoreLayout"]


class Store(Staleness, Pictures, EvaluationFiles):
    """A directory of precomputed per-unit results for one model (also reads the original toolbox's
    ``unit_jpg_vis`` layout: ``max_im/``, ``max_deconv/``, ``regularized_opt/``), made of one part per idea:
    its paths (:class:`StoreLayout`), the scan's files (:class:`ScanFiles`), crops (:class:`CropFiles`), sprites
    (:class:`SpriteFiles`), optimized results (:class:`OptimizedFiles`), evaluations (:class:`EvaluationFiles`),
    what a re-scan makes stale (:class:`Staleness`) and what viewers find (:class:`Pictures`)."""
