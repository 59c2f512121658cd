"""What a viewer shows, found on disk: a unit's pictures by caption and a layer's sprites, in this layout or, failing
that, the original toolbox's ``unit_jpg_vis`` layout (``max_im/``, ``max_deconv/``, ``regularized_opt/``; its
montages cannot be cut by rank)."""

from __future__ import annotations

from pathlib import Path

from deepvis.store.layout import SPRITE_KINDS, StoreLayout, layer_dirname

#: The pictures a unit's pane shows, by caption: (the kind in this layout, the file of the original toolbox's
#: unit_jpg_vis layout relative to the store root, with {layer} and {channel}, or None).
UNIT_PICTURES = {
    "optimized": ("optimized", "regularized_opt/{layer}/{layer}_{channel:04d}_montage.jpg"),
    "attribution": ("optimized_alpha", None),
    "images": ("image", "max_im/{layer}/{layer}_{channel:04d}.jpg"),
    "deconv": ("deconv", "max_deconv/{layer}/{layer}_{channel:04d}.jpg"),
    "guided": ("guided", None),
    "gradient": ("gradient", None),
}
#: The original toolbox's folders (any of them: the folder holds its layout) and its picture of a whole layer.
_ORIGINAL_FOLDERS = ("max_im", "max_deconv", "regularized_opt")

_ORIGINAL_SPRITE = "regularized_opt/{layer}/whole_layer.jpg"


class Pictures(StoreLayout):
    """Finding the pictures that exist for a unit or a layer, for viewers (the server, the export)."""

    def has_pictures(self) -> bool:
        """Whether the folder holds per-unit pictures without a manifest (an optimize-only store) or the original
        toolbox's ``unit_jpg_vis`` layout."""
        if any((self.root / name).is_dir() for name in _ORIGINAL_FOLDERS):
            return True
        try:
            layers = [p for p in self.root.iterdir() if p.is_dir()]
            return any(unit.is_dir() and len(unit.name) == 4 and unit.name.isdigit()
                       for layer in layers for unit in layer.iterdir())
        except OSError:
            return False

    def unit_pictures(self, layer: str, channel: int) -> dict[str, Path]:
        """The per-unit pictures that exist for a unit, by caption (``optimized``, ``images``, ``deconv``,
        ``guided``, ``gradient``), in this project's layout or, failing that, the original toolbox's."""
        found = {}
        for caption, (kind, original) in UNIT_PICTURES.items():
            mine = (self.optimized_file(layer, channel) if kind == "optimized" else
                    self.optimized_file(layer, channel, "alpha") if kind == "optimized_alpha" else
                    self.unit_file(layer, channel, kind))
            for path in (mine, self._original(original, layer, channel) if original else None):
                if path is not None and path.is_file():
                    found[caption] = path
                    break
        return found

    def sprites(self, layer: str) -> dict[str, Path]:
        """The layer's sprites that exist, by kind; the original toolbox's ``regularized_opt/<layer>/whole_layer.jpg``
        counts as ``optimized`` when there is no other."""
        found = {kind: self.sprite_path(layer, kind) for kind in SPRITE_KINDS if self.sprite_path(layer, kind).is_file()}
        original = self._original(_ORIGINAL_SPRITE, layer)
        if "optimized" not in found and original.is_file():
            found = {"optimized": original, **found}
        return found

    def sprite(self, layer: str, kinds: tuple[str, ...] = ("optimized", "image")) -> Path | None:
        """The layer's sprite for pattern mode: the first of ``kinds`` that exists, else the original toolbox's
        ``regularized_opt/<layer>/whole_layer.jpg``."""
        for kind in kinds:
            path = self.sprite_path(layer, kind)
            if path.is_file():
                return path
        original = self._original(_ORIGINAL_SPRITE, layer)
        return original if original.is_file() else None

    def _original(self, pattern: str, layer: str, channel: int = 0) -> Path:
        """A file of the original toolbox's layout: ``pattern`` with the layer's folder name and the channel."""
        return self.root / pattern.format(layer=layer_dirname(layer), channel=channel)
