"""Regenerate the pictures in docs/ from the bundled model and sample image: python docs/make_figures.py

The optimized-images figure is made from stores written by ``deepvis optimize`` (commands in docs/optimize.md):
python docs/make_figures.py --optimized STORE [STORE...] [--layers L...]
"""

import argparse
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


def optimized_figure(stores: list[Path], layers: list[str]) -> np.ndarray:
    """One row per store and layer: the layer's optimized.png pictures side by side, channel order."""
    rows = []
    for root in stores:
        store = deepvis.store.Store(root)
        for layer in layers:
            pictures = sorted(store.layer_dir(layer).glob("*/optimized.png"))
            rows.append([np.asarray(deepvis.load_image(p), np.float32) / 255 for p in pictures])
    cols = max(len(row) for row in rows)
    blank = np.ones_like(rows[0][0])
    return deepvis.montage([image for row in rows for image in row + [blank] * (cols - len(row))], cols=cols)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--optimized", nargs="+", type=Path, metavar="STORE",
                        help="only the optimized-images figure, from these stores")
    parser.add_argument("--layers", nargs="+", default=["blocks.4", "blocks.10", "classifier"])
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    if args.optimized:
        deepvis.save_image(optimized_figure(args.optimized, args.layers), OUT / "optimized.jpg")
        print(f"wrote {OUT / 'optimized.jpg'}")
        return
    model = deepvis.load_model()
    image = next(p for p in deepvis.sample_images() if p.stem == "chelsea")
    deepvis.save_image(modes_figure(model, image, "classifier:285"), OUT / "modes-chelsea-285.png")
    acts = deepvis.activations(model, image, ["blocks.5"])
    grid = deepvis.tile_layer(acts["blocks.5"], boost_indiv=0.5).image
    deepvis.save_image(np.kron(grid, np.ones((3, 3, 1), np.float32)), OUT / "tiles-blocks5.png")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
