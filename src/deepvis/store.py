"""The on-disk store of per-unit results; the one module that knows its layout. Every write is atomic.

```
STORE/manifest.json                 format, model, preprocessing, image source, k, layers, skipped images, provenance
STORE/images.txt                    image index -> path relative to the image root
STORE/<layer>/topk.npz              values, images, y, x: (C, k) arrays, rank 0 = highest
STORE/<layer>/<channel:04d>/...     crops, backward images, montages, optimized images
```
"""

from __future__ import annotations

import io
import json
import math
import os
import string
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import DeepvisError

FORMAT_VERSION = 1
#: Side of one channel's cell in a layer sprite, pixels.
SPRITE_TILE = 64
_SAFE = set(string.ascii_letters + string.digits + "._-")


def layer_dirname(layer: str) -> str:
    """The layer name with every character outside ``[A-Za-z0-9._-]`` percent-encoded (UTF-8)."""
    return "".join(c if c in _SAFE else "".join(f"%{b:02X}" for b in c.encode("utf-8")) for c in layer)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace``: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


#: Per-unit pictures, by kind: (file in a unit's folder, file pattern of the original toolbox's unit_jpg_vis
#: layout relative to the store root, with {layer} and {channel}).
UNIT_PICTURES = {
    "optimized": ("optimized.png", "regularized_opt/{layer}/{layer}_{channel:04d}_montage.jpg"),
    "images": ("image.jpg", "max_im/{layer}/{layer}_{channel:04d}.jpg"),
    "deconv": ("deconv.jpg", "max_deconv/{layer}/{layer}_{channel:04d}.jpg"),
}


class Store:
    """A directory of precomputed per-unit results for one model (also reads the original toolbox's
    ``unit_jpg_vis`` layout: ``max_im/``, ``max_deconv/``, ``regularized_opt/``)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    # ------------------------------------------------------------ paths
    def layer_dir(self, layer: str) -> Path:
        return self.root / layer_dirname(layer)

    def unit_dir(self, layer: str, channel: int) -> Path:
        return self.layer_dir(layer) / f"{channel:04d}"

    def unit_pictures(self, layer: str, channel: int) -> dict[str, Path]:
        """The per-unit pictures that exist for a unit, by kind (``optimized``, ``images``, ``deconv``), in this
        project's layout or, failing that, the original toolbox's."""
        found = {}
        for kind, (name, original) in UNIT_PICTURES.items():
            for path in (self.unit_dir(layer, channel) / name,
                         self.root / original.format(layer=layer_dirname(layer), channel=channel)):
                if path.is_file():
                    found[kind] = path
                    break
        return found

    def sprite(self, layer: str, kinds: tuple[str, ...] = ("optimized", "image")) -> Path | None:
        """The layer's sprite for pattern mode: the first of ``kinds`` that exists, else the original toolbox's
        ``regularized_opt/<layer>/whole_layer.jpg``."""
        for kind in kinds:
            path = self.layer_dir(layer) / f"sprite_{kind}.jpg"
            if path.is_file():
                return path
        original = self.root / "regularized_opt" / layer_dirname(layer) / "whole_layer.jpg"
        return original if original.is_file() else None

    def write_sprite(self, layer: str, count: int, kind: str, tile_file: str) -> Path | None:
        """Every channel's ``tile_file`` in a square grid (row-major, no spacing) as ``sprite_<kind>.jpg``, the
        picture of a whole layer in pattern mode; channels without the file stay black. None if no channel has it."""
        side = math.ceil(math.sqrt(count))
        sprite = Image.new("RGB", (side * SPRITE_TILE, side * SPRITE_TILE))
        found = False
        for channel in range(count):
            path = self.unit_dir(layer, channel) / tile_file
            if path.exists():
                with Image.open(path) as tile:
                    tile = tile.convert("RGB").resize((SPRITE_TILE, SPRITE_TILE), Image.BILINEAR)
                row, col = divmod(channel, side)
                sprite.paste(tile, (col * SPRITE_TILE, row * SPRITE_TILE))
                found = True
        if not found:
            return None
        buffer = io.BytesIO()
        sprite.save(buffer, format="JPEG", quality=90)
        target = self.layer_dir(layer) / f"sprite_{kind}.jpg"
        atomic_write_bytes(target, buffer.getvalue())
        return target

    # ------------------------------------------------------------ manifest and image list
    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    def exists(self) -> bool:
        return self.manifest_path.is_file()

    def read_manifest(self) -> dict:
        try:
            return json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DeepvisError(f"'{self.root}' is not a deepvis store (no manifest.json): "
                               "make one with deepvis find-max IMAGES --out STORE") from None
        except (OSError, ValueError) as exc:
            raise DeepvisError(f"cannot read '{self.manifest_path}': {exc}") from None

    def write_manifest(self, manifest: dict) -> None:
        manifest = {"format": FORMAT_VERSION, **manifest}
        atomic_write_bytes(self.manifest_path, json.dumps(manifest, indent=2, sort_keys=False).encode("utf-8"))

    def write_image_list(self, relative_paths: list[str]) -> None:
        atomic_write_bytes(self.root / "images.txt", "".join(f"{p}\n" for p in relative_paths).encode("utf-8"))

    def read_image_list(self) -> list[str]:
        path = self.root / "images.txt"
        if not path.is_file():
            raise DeepvisError(f"'{self.root}' has no images.txt")
        return path.read_text(encoding="utf-8").splitlines()

    # ------------------------------------------------------------ top-k
    def write_topk(self, layer: str, values, images, ys, xs) -> None:
        buffer = io.BytesIO()
        np.savez(buffer, values=np.asarray(values, np.float32), images=np.asarray(images, np.int64),
                 y=np.asarray(ys, np.int64), x=np.asarray(xs, np.int64))
        atomic_write_bytes(self.layer_dir(layer) / "topk.npz", buffer.getvalue())

    def read_topk(self, layer: str) -> dict[str, np.ndarray]:
        path = self.layer_dir(layer) / "topk.npz"
        if not path.is_file():
            raise DeepvisError(f"the store '{self.root}' has no top-k for layer '{layer}': "
                               f"run deepvis find-max IMAGES --out {self.root} --layers {layer}")
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in ("values", "images", "y", "x")}
