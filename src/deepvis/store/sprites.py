"""A layer's sprites: every channel's picture of one kind (its best optimized image, or a crop kind's rank 0) as a
tile of a square grid, the picture of a whole layer in pattern mode, and the record of what each was made from."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

from PIL import Image

from deepvis.core.files import atomic_write_bytes
from deepvis.store.crops import CropFiles

#: Side of one channel's cell in a layer sprite, pixels.
SPRITE_TILE = 64


def sprite_tile(picture: Image.Image) -> Image.Image:
    """A picture as one channel's tile of a layer sprite (:data:`SPRITE_TILE` pixels a side, RGB)."""
    if picture.size == (SPRITE_TILE, SPRITE_TILE) and picture.mode == "RGB":
        return picture
    return picture.convert("RGB").resize((SPRITE_TILE, SPRITE_TILE), Image.BILINEAR)


class SpriteFiles(CropFiles):
    """Writing, reading and removing a layer's sprites and their record."""

    def write_sprite(self, layer: str, count: int, kind: str, channels=None, made_from: str | None = None,
                     tiles: dict | None = None) -> Path | None:
        """Every channel's picture of ``kind`` (the best optimized image, or the rank-0 crop kind) in a square grid
        (row-major, no spacing), the picture of a whole layer in pattern mode; channels without one (or not in
        ``channels``, when given: the units whose pictures are current) stay black. None, and no sprite left, if no
        channel has one. ``made_from`` (what the pictures were made from) goes into the layer's sprites record.
        ``tiles``: channel -> its tile (:func:`sprite_tile`) where the caller has it already (not read back)."""
        target = self.sprite_path(layer, kind)
        side = math.ceil(math.sqrt(count))
        sprite = Image.new("RGB", (side * SPRITE_TILE, side * SPRITE_TILE))
        found = False
        tiles = tiles or {}
        for channel in range(count) if channels is None else sorted(channels):
            if channel in tiles:
                tile = tiles[channel]
            elif kind == "optimized":
                path = self.optimized_file(layer, channel)
                tile = None
                if path.exists():
                    with Image.open(path) as image:
                        tile = image.convert("RGB")
            else:
                tile = self.unit_crop(layer, channel, kind, 0)
            if tile is not None:
                tile = sprite_tile(tile)
                row, col = divmod(channel, side)
                sprite.paste(tile, (col * SPRITE_TILE, row * SPRITE_TILE))
                found = True
        if not found:
            self.remove_sprite(layer, kind)
            return None
        buffer = io.BytesIO()
        sprite.save(buffer, format="JPEG", quality=90)
        # made again from the store's pictures at will, like them: not flushed to the disk (that took longer than the
        # rest of a sprite)
        atomic_write_bytes(target, buffer.getvalue(), durable=False)
        records = self.read_sprites_record(layer)
        records[kind] = {"made_from": made_from}
        atomic_write_bytes(self.sprites_record_path(layer), json.dumps(records, indent=1).encode("utf-8"),
                           durable=False)
        return target

    def read_sprites_record(self, layer: str) -> dict:
        """What each of the layer's sprites was made from, by kind (empty when none was recorded)."""
        return self._read_json(self.sprites_record_path(layer)) or {}

    def remove_sprite(self, layer: str, kind: str) -> None:
        self.sprite_path(layer, kind).unlink(missing_ok=True)
        records = self._read_json(self.sprites_record_path(layer))
        if records and kind in records:
            del records[kind]
            atomic_write_bytes(self.sprites_record_path(layer), json.dumps(records, indent=1).encode("utf-8"))
