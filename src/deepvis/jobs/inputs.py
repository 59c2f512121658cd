"""A store's images as the model sees them, decoded once: the input cache the jobs that read a find-max store's
images share (crops, evaluate)."""

from __future__ import annotations

import os
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from deepvis.core.errors import DeepvisError
from deepvis.models.model import Model
from deepvis.pixels.images import load_image

#: The cores this process may use (a container's limit), not the host's.
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 2


class StoreInputs:
    """Preprocessed images by index, with a small cache (a unit's top images often repeat across channels): each
    the model's input tensor and the fitted picture (HxWx3, floats in [0, 1])."""

    def __init__(self, model: Model, files: list[Path], size: int = 256):
        self.model, self.files, self.cache, self.size = model, files, OrderedDict(), size

    def get(self, index: int) -> tuple[torch.Tensor, np.ndarray]:
        """The image ``index`` of ``files``: its input tensor and fitted picture (an unreadable one raises)."""
        if index in self.cache:
            self.cache.move_to_end(index)
            return self.cache[index]
        return self._keep(index, self._load(index))

    def _load(self, index: int) -> tuple[torch.Tensor, np.ndarray]:
        fitted = self.model.preprocessing.fit(load_image(self.files[index]))
        return self.model.preprocessing.to_tensor(fitted, "stretch"), np.asarray(fitted, np.float32) / 255.0

    def _keep(self, index: int, item: tuple[torch.Tensor, np.ndarray]) -> tuple[torch.Tensor, np.ndarray]:
        self.cache[index] = item
        if len(self.cache) > self.size:
            self.cache.popitem(last=False)
        return item

    def prefetch(self, indices: list[int]) -> None:
        """Decode ``indices`` into the cache, on a thread per core (decoding and resizing free the GIL). An image
        that cannot be read raises, as :meth:`get` does, once the others are decoded: before any work is done."""
        missing = [i for i in indices if i not in self.cache]

        def load(index: int):
            try:
                return self._load(index)
            except DeepvisError as exc:
                return exc

        with ThreadPoolExecutor(max_workers=max(1, min(4, CORES)), thread_name_prefix="deepvis-decode") as pool:
            loaded = list(pool.map(load, missing))
        for index, item in zip(missing, loaded):
            if isinstance(item, DeepvisError):
                raise item
            self._keep(index, item)
