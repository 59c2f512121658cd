"""A layer's quality metrics per unit and method, as ``deepvis evaluate`` measured them."""

from __future__ import annotations

import json
from pathlib import Path

from deepvis.core.files import atomic_write_bytes
from deepvis.store.layout import StoreLayout


class EvaluationFiles(StoreLayout):
    """Writing and reading a layer's ``evaluation.json``."""

    def write_evaluation(self, layer: str, evaluation: dict) -> Path:
        """Save the layer's quality metrics; returns the file's path."""
        atomic_write_bytes(self.evaluation_path(layer), json.dumps(evaluation, indent=1).encode("utf-8"))
        return self.evaluation_path(layer)

    def read_evaluation(self, layer: str) -> dict | None:
        """The layer's quality metrics, or None when it has none."""
        return self._read_json(self.evaluation_path(layer))
