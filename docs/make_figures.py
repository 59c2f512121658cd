"""Regenerate the pictures in docs/ from the bundled model and sample image: python docs/make_figures.py"""

from pathlib import Path

import numpy as np

import deepvis

OUT = Path(__file__).resolve().parent / "images"


def modes_figure(model, image, unit: str) -> np.ndarray:
    """Rows: gradient, deconv, guided; columns: raw, gray, norm, normblur."""
    rows = []
    for mode in deepvis.MODES:
        result = deepvis.backprop(model, image, unit, mode=mode)
        rows.append([result.image(f) for f in deepvis.FILTERS])
    return deepvis.montage([img for row in rows for img in row], cols=len(deepvis.FILTERS))


def main() -> None:
    OUT.mkdir(exist_ok=True)
    model = deepvis.load_model()
    image = next(p for p in deepvis.sample_images() if p.stem == "chelsea")
    deepvis.save_image(modes_figure(model, image, "classifier:285"), OUT / "modes-chelsea-285.png")
    acts = deepvis.activations(model, image, ["blocks.5"])
    grid = deepvis.tile_layer(acts["blocks.5"], boost_indiv=0.5).image
    deepvis.save_image(np.kron(grid, np.ones((3, 3, 1), np.float32)), OUT / "tiles-blocks5.png")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
