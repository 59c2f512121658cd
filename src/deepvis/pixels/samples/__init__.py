"""Sample photographs shipped with deepvis (licences in LICENSES.md beside them)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def sample_images() -> list[Path]:
    """Paths of the bundled sample images, sorted by name."""
    folder = resources.files("deepvis.pixels.samples")
    return sorted(Path(str(entry)) for entry in folder.iterdir() if entry.name.endswith(".jpg"))
