"""deepvis export budget: bytes per unit and time per 1000 units.

    python benchmarks/bench_export.py [--units 32] [--steps 64] [--labels-layer]

Builds a store in a temporary folder the way a user would: find-max with k=9 over the bundled samples plus
scikit-image's photographs (at least 9 images), crops of ``--units`` units of ``blocks.5`` with two backward kinds
(deconv, guided), one optimized image per unit (``modern``, ``--steps`` steps; a barely optimized image is smoother
and compresses better than a real one), then exports it twice (cold: every picture encoded; warm: nothing changed,
nothing written) and reports what the export itself reports: bytes per unit (page and pictures) and time per 1000
units. ``classifier`` (1000 units, top-k only, labels) is exported too, as the pages-only case.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

import deepvis
from deepvis.jobs.crops import make_crops
from deepvis.jobs.export import export_site
from deepvis.jobs.findmax import find_max
from deepvis.engine.featvis import make_params
from deepvis.jobs.optimize_store import optimize_to_store


def photos(folder: Path) -> None:
    folder.mkdir(parents=True)
    for path in deepvis.sample_images():
        shutil.copy(path, folder / path.name)
    from skimage import data

    for name in ("astronaut", "chelsea", "coffee", "rocket", "cat", "immunohistochemistry", "motorcycle_left",
                 "hubble_deep_field", "retina", "colorwheel", "camera", "coins", "page", "moon", "horse"):
        try:
            image = getattr(data, name)()
        except Exception:  # some need pooch downloads
            continue
        image = np.asarray(image)
        if image.dtype == bool:
            image = image.astype(np.uint8) * 255
        if image.ndim == 3 and image.shape[2] == 4:
            image = image[..., :3]
        Image.fromarray(image).convert("RGB").save(folder / f"sk_{name}.jpg", quality=92)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=32)
    parser.add_argument("--steps", type=int, default=64)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    model = deepvis.load_model()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        photos(tmp / "images")
        count = len(list((tmp / "images").iterdir()))
        t = time.perf_counter()
        store = find_max(model, tmp / "images", tmp / "store", layers=["blocks.5", "classifier"], k=9, progress=False)
        make_crops(model, store.root, layers=["blocks.5"], kinds=("image", "deconv", "guided"),
                   channels=range(args.units), progress=False)
        optimize_to_store(model, store.root, ["blocks.5"], make_params("modern", steps=args.steps),
                          channels=range(args.units), progress=False)
        print(f"store: {count} images, k=9, {args.units} units of blocks.5 with 9 crops + deconv + guided + 1 "
              f"optimized image ({time.perf_counter() - t:.0f} s to make)")
        for label, kwargs in (("blocks.5, full units", {"layers": ["blocks.5"], "channels": range(args.units)}),
                              ("classifier, top-k only (pages)", {"layers": ["classifier"]})):
            out = tmp / label.split(",")[0]
            cold = export_site(store, out, model=model, progress=False, **kwargs)
            warm = export_site(store, out, model=model, progress=False, **kwargs)
            pics = sum(p.stat().st_size for p in out.rglob("*.jpg"))
            print(f"{label}: {cold.units} units, {cold.bytes_per_unit / 1e3:.1f} KB per unit (pictures "
                  f"{pics / cold.units / 1e3:.1f} KB), {cold.seconds_per_1000_units:.1f} s per 1000 units cold, "
                  f"{warm.seconds_per_1000_units:.1f} s warm (encoded {warm.encoded})")


if __name__ == "__main__":
    main()
