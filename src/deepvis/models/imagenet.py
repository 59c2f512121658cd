"""The bundled ILSVRC-2012 class names: a leaf the loaders and config files share (``labels = "imagenet"``)."""

from __future__ import annotations

from importlib import resources


def imagenet_labels() -> list[str]:
    """The 1000 ILSVRC-2012 class names, index order."""
    text = resources.files("deepvis.models").joinpath("labels/imagenet.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]
