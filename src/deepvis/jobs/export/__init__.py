"""A static, shareable site of a store ("Microscope" of your own model): :func:`export_site`.

```
SITE/index.html                 the model, its provenance and its layers (layout, shape, receptive field, thumbnails)
SITE/search-index.js            a global DEEPVIS_SEARCH: layers and labels (a script, so file:// pages can load it)
SITE/assets/site.css, site.js   the style, keyboard navigation, search and kind switching
SITE/export.json                what the site was made from (per unit a hash of its store records), settings, budget
SITE/<layer>/index.html         the grid of the layer's channels, switchable between kinds
SITE/<layer>/<channel>.html     one page per unit
SITE/<layer>/<channel>/         its pictures: optimized.jpg (+ optimized_input.jpg, optimized_NN.jpg),
                                <kind>_<rank:02d>.jpg (image, deconv, gradient, guided: cut from the store's
                                montage of the kind, Store.unit_crops)
```
``<layer>`` is the store's folder name of the layer (:func:`deepvis.store.layer_dirname`). No server code, no
external requests, no build step: the folder opens from disk or from any static host.

The job is :func:`run_export` (a frozen :class:`ExportConfig` in, an :class:`ExportReport` out); :func:`export_site`
takes the same settings as keywords. Modules: ``config`` (settings, report), ``writer`` (the job), ``units`` (a
unit's pictures in the store), ``pages`` and ``templates`` (the HTML), ``site_files`` (writing, the site manifest).
"""

from deepvis.jobs.export.config import (CROP_QUALITY, CROP_SIZE, OPTIMIZED_QUALITY, OPTIMIZED_SIZE, ExportConfig,
                                        ExportReport)
from deepvis.jobs.export.pages import site_page_url, site_unit_page
from deepvis.jobs.export.writer import export_site, run_export

__all__ = ["CROP_QUALITY", "CROP_SIZE", "OPTIMIZED_QUALITY", "OPTIMIZED_SIZE", "ExportConfig", "ExportReport",
           "export_site", "run_export", "site_page_url", "site_unit_page"]
