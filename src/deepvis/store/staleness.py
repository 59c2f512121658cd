"""What a re-scan makes stale: the hashes a unit's crops are checked against (its top-k, its layer's basis) and
removing exactly the derived files that no longer match the store's top-k and model."""

from __future__ import annotations

import hashlib
import json

from deepvis.store.crops import CROPS_SETTINGS
from deepvis.store.layout import CROP_KINDS
from deepvis.store.manifest import Manifest
from deepvis.store.optimized import OptimizedFiles
from deepvis.store.scan import ScanFiles
from deepvis.store.sprites import SpriteFiles


class Staleness(ScanFiles, SpriteFiles, OptimizedFiles):
    """Telling current derived files from stale ones, and removing the stale ones after a scan."""

    def topk_hashes(self, layer: str, top: dict | None = None, names: list[str] | None = None) -> list[str]:
        """Per channel, a hash of its top-k: the images (their paths in ``images.txt``) and positions, rank order.
        A unit's crops are current while this and the layer's :meth:`crops_basis` are what they were made from.
        ``top`` / ``names``: the layer's :meth:`read_topk` and :meth:`read_image_list` where the caller has them."""
        top = self.read_topk(layer) if top is None else top
        names = self.read_image_list() if names is None else names
        hashes = []
        for channel in range(top["images"].shape[0]):
            entries = [f"{names[i] if 0 <= i < len(names) else i}|{y}|{x}"
                       for i, y, x in zip(top["images"][channel].tolist(), top["y"][channel].tolist(),
                                          top["x"][channel].tolist()) if i >= 0]
            hashes.append(hashlib.sha256("\n".join(entries).encode("utf-8")).hexdigest()[:16])
        return hashes

    @staticmethod
    def crops_basis(manifest: Manifest, layer: str) -> str:
        """A hash of what every crop of a layer depends on besides its top-k: the network, the preprocessing, the
        layer's receptive field and layout (its effective field is measured from these, on the store's images), and
        how crops are drawn (:data:`CROPS_SETTINGS`: crops made before a change of these are redone)."""
        record = manifest.layers[layer]
        basis = [manifest.weights_sha256, manifest.preprocessing, record.receptive_field, record.layout]
        if CROPS_SETTINGS:
            basis.append(CROPS_SETTINGS)
        return hashlib.sha256(json.dumps(basis, sort_keys=True).encode("utf-8")).hexdigest()[:16]

    def invalidate(self, manifest: Manifest, previous: Manifest | None = None) -> dict[str, int]:
        """After a (re-)scan: remove every derived file that is no longer what the store's top-k and model would
        make — crops whose unit's top-k or layer basis changed (or whose record is missing), the crop sprites of a
        layer where any changed, optimized images of another network or input size, and everything of a layer
        the previous scan had and this one has not. Returns counts of removed units by what was removed."""
        removed = {"crops": 0, "optimized": 0}
        layers = list(manifest.layers) + [name for name in (previous.layers if previous else {})
                                          if name not in manifest.layers]
        for layer in layers:
            scanned = layer in manifest.layers
            hashes = self.topk_hashes(layer) if scanned else []
            basis = self.crops_basis(manifest, layer) if scanned else None
            changed = not scanned
            for channel in self.unit_channels(layer):
                record = self.read_crops_record(layer, channel)
                current = (record is not None and channel < len(hashes) and record.get("topk") == hashes[channel]
                           and record.get("basis") == basis and record.get("network") == manifest.weights_sha256)
                if not current and self.remove_crops(layer, channel):
                    removed["crops"] += 1
                    changed = True
                saved = self.read_optimized_record(layer, channel)
                if saved is not None and (saved.get("weights") != manifest.weights_sha256 or
                                          saved.get("input_size") != list(manifest.input_size)):
                    removed["optimized"] += self.remove_optimized(layer, channel)
                    self.remove_sprite(layer, "optimized")
            if changed:
                for kind in CROP_KINDS:
                    self.remove_sprite(layer, kind)
            if not scanned:
                self.topk_path(layer).unlink(missing_ok=True)
        return removed
