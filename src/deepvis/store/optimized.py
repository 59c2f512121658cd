"""A unit's optimized images (the best one, what the network saw, further copies, MACO's transparency map) with
their record, written last, and the store's MACO magnitude spectrum."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from deepvis.core.files import atomic_write_bytes
from deepvis.store.layout import StoreLayout


class OptimizedFiles(StoreLayout):
    """Writing, reading and removing a unit's optimization results, and the store's spectrum."""

    def write_optimized(self, layer: str, channel: int, best: bytes, record: dict, input_image: bytes | None = None,
                        copies: list[bytes] = (), alpha: bytes | None = None) -> Path:
        """Write a unit's optimization result (PNG bytes): the best image, what the network saw (when it differs),
        further copies, and the JSON ``record``. The old record goes first and the new one is written last, so a
        unit counts as done (:meth:`read_optimized_record`) only once all its pictures are new. Returns the best
        image's path."""
        self.optimized_file(layer, channel, "record").unlink(missing_ok=True)
        pictures = {self.optimized_file(layer, channel): best}
        if input_image is not None:
            pictures[self.optimized_file(layer, channel, "input")] = input_image
        pictures.update({self.optimized_file(layer, channel, n): data for n, data in enumerate(copies, start=1)})
        if alpha is not None:
            pictures[self.optimized_file(layer, channel, "alpha")] = alpha
        for path, data in pictures.items():
            atomic_write_bytes(path, data)
        for stale in self.unit_dir(layer, channel).glob("optimized_*.png"):
            if stale not in pictures:
                stale.unlink()
        atomic_write_bytes(self.optimized_file(layer, channel, "record"), json.dumps(record, indent=1).encode("utf-8"))
        return self.optimized_file(layer, channel)

    def read_optimized_record(self, layer: str, channel: int) -> dict | None:
        """A unit's optimization record, or None when it has none (not done, or an unreadable record)."""
        try:
            return json.loads(self.optimized_file(layer, channel, "record").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def write_spectrum(self, magnitude: np.ndarray, made_from: dict) -> None:
        """Save MACO's magnitude spectrum (and what it was estimated from)."""
        buffer = io.BytesIO()
        np.savez(buffer, magnitude=np.asarray(magnitude, np.float32), made_from=np.asarray(json.dumps(made_from)))
        atomic_write_bytes(self.spectrum_path, buffer.getvalue())

    def read_spectrum(self) -> dict | None:
        """``{"magnitude": (3, H, W//2+1) array, "made_from": dict}``, or None when the store has none."""
        try:
            with np.load(self.spectrum_path, allow_pickle=False) as data:
                return {"magnitude": data["magnitude"], "made_from": json.loads(str(data["made_from"]))}
        except (OSError, KeyError, ValueError):
            return None

    def remove_optimized(self, layer: str, channel: int) -> bool:
        """Remove a unit's optimized images and record; True if there was anything."""
        folder = self.unit_dir(layer, channel)
        files = list(folder.glob("optimized*.png")) + list(folder.glob("optimized.json")) if folder.is_dir() else []
        self.optimized_file(layer, channel, "record").unlink(missing_ok=True)
        for path in files:
            path.unlink(missing_ok=True)
        return bool(files)
