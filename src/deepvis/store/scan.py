"""What a find-max scan writes into a store and everything else reads: the manifest, the image list and each layer's
top-k arrays."""

from __future__ import annotations

import io
import json

import numpy as np

from deepvis.core.errors import DeepvisError
from deepvis.core.files import atomic_write_bytes
from deepvis.store.layout import StoreLayout
from deepvis.store.manifest import Manifest


class ScanFiles(StoreLayout):
    """Reading and writing a scan's files: ``manifest.json``, ``images.txt``, ``<layer>/topk.npz``."""

    def exists(self) -> bool:
        """Whether the folder is a deepvis store (it has a manifest)."""
        return self.manifest_path.is_file()

    def read_manifest(self) -> Manifest:
        """The store's manifest; a missing, unreadable or damaged one is a DeepvisError."""
        try:
            data = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DeepvisError(f"'{self.root}' is not a deepvis store (no manifest.json): "
                               "make one with deepvis find-max IMAGES --out STORE") from None
        except (OSError, ValueError) as exc:
            raise DeepvisError(f"cannot read '{self.manifest_path}': {exc}") from None
        return Manifest.from_json(data, f"'{self.manifest_path}'")

    def write_manifest(self, manifest: Manifest) -> None:
        atomic_write_bytes(self.manifest_path, json.dumps(manifest.to_json(), indent=2).encode("utf-8"))

    def write_image_list(self, relative_paths: list[str]) -> None:
        """Save the scan's images, one path (relative to the manifest's ``image_root``) a line, by index."""
        atomic_write_bytes(self.image_list_path, "".join(f"{p}\n" for p in relative_paths).encode("utf-8"))

    def read_image_list(self) -> list[str]:
        """The scan's images by index (paths relative to the manifest's ``image_root``)."""
        if not self.image_list_path.is_file():
            raise DeepvisError(f"'{self.root}' has no images.txt")
        return self.image_list_path.read_text(encoding="utf-8").splitlines()

    def write_topk(self, layer: str, values, images, ys, xs) -> None:
        """Save a layer's top-k: (C, k) arrays of values, image indices and positions, rank 0 = highest."""
        buffer = io.BytesIO()
        np.savez(buffer, values=np.asarray(values, np.float32), images=np.asarray(images, np.int64),
                 y=np.asarray(ys, np.int64), x=np.asarray(xs, np.int64))
        atomic_write_bytes(self.topk_path(layer), buffer.getvalue())

    def read_topk(self, layer: str) -> dict[str, np.ndarray]:
        """A layer's top-k arrays (``values``, ``images``, ``y``, ``x``); a layer not scanned is a DeepvisError."""
        path = self.topk_path(layer)
        if not path.is_file():
            raise DeepvisError(f"the store '{self.root}' has no top-k for layer '{layer}': "
                               f"run deepvis find-max IMAGES --out {self.root} --layers {layer}")
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in ("values", "images", "y", "x")}
