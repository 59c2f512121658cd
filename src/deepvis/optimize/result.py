"""What an optimization returns: the best and last images, and the record of every iteration (JSON, not pickle)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..render import png_bytes
from ..store import atomic_write_bytes
from .objectives import Target


@dataclass
class OptimizeResult:
    """One target's result. Images are (H, W, 3) RGB in [0, 1]: ``image`` to look at (the paper's method stretches
    it around the mean, as the original did), ``input_image`` exactly what the network saw (8-bit PNG quantization
    aside), ``last_image`` the final iterate as displayed.

    ``record`` holds per-iteration lists (``ii``, ``obj``, and for the paper's method ``idxmax``, ``ismax``,
    ``norm``, ``dist``, ``std``) and the summary (``best_obj``, ``best_ii``, ``last_obj``, ``majority_ii``,
    ``meta_result``); ``params`` every setting used.
    """

    target: Target
    method: str
    image: np.ndarray
    input_image: np.ndarray
    last_image: np.ndarray
    record: dict
    params: dict
    extra_images: list[np.ndarray] = field(default_factory=list)

    @property
    def best_obj(self) -> float:
        return self.record["best_obj"]

    def to_json(self) -> dict:
        return {"target": self.target.to_json(), "method": self.method, "params": self.params, "record": self.record}

    def save(self, folder: str | Path, info: dict | None = None) -> Path:
        """Write ``optimized.png`` (best image, displayed), ``optimized_input.png`` (what the network saw, when it
        differs), ``optimized_NN.png`` (further copies) and ``optimized.json`` into ``folder``. The old JSON goes
        first and the new one is written last, so a unit counts as done only once all its pictures are new."""
        folder = Path(folder)
        (folder / "optimized.json").unlink(missing_ok=True)
        pictures = {"optimized.png": self.image}
        if self.input_image is not self.image:
            pictures["optimized_input.png"] = self.input_image
        pictures.update({f"optimized_{n:02d}.png": image for n, image in enumerate(self.extra_images, start=1)})
        for name, image in pictures.items():
            atomic_write_bytes(folder / name, png_bytes(image))
        for stale in folder.glob("optimized_*.png"):
            if stale.name not in pictures:
                stale.unlink()
        data = {**(info or {}), **self.to_json()}
        atomic_write_bytes(folder / "optimized.json", json.dumps(data, indent=1).encode("utf-8"))
        return folder / "optimized.png"
