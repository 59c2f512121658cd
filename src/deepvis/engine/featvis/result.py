"""What an optimization returns: the best and last images, and the record of every iteration (JSON, not pickle)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from deepvis.engine.featvis.objectives import Target


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
    #: MACO's transparency map (H, W) in [0, 1]: where the accumulated input gradient was large; else None.
    alpha: np.ndarray | None = None

    @property
    def best_obj(self) -> float:
        return self.record["best_obj"]

    def to_json(self) -> dict:
        return {"target": self.target.to_json(), "method": self.method, "params": self.params, "record": self.record}
