"""The site's files: written atomically and only when their bytes change (:class:`SiteWriter`), the site manifest
(``export.json``: per unit what its pictures were made from, so a rerun re-encodes only what changed), and the
removal of files an earlier export wrote that this one did not."""

from __future__ import annotations

import json
from pathlib import Path

from deepvis.core.files import atomic_write_bytes
from deepvis.jobs.export.config import MANIFEST_NAME, SITE_FORMAT, SETTINGS
from deepvis.store import Manifest, layer_dirname


class SiteWriter:
    """Writes files under the site root atomically, leaving a file alone when its bytes are already there."""

    def __init__(self, root: Path):
        self.root = root
        self.sizes: dict[str, int] = {}

    def put(self, relative: str, data: bytes) -> None:
        path = self.root / relative
        self.sizes[relative] = len(data)
        try:
            if path.stat().st_size == len(data) and path.read_bytes() == data:
                return
        except OSError:
            pass
        atomic_write_bytes(path, data, durable=False)  # a site is made again from its store: no fsync per file

    def text(self, relative: str, text: str) -> None:
        self.put(relative, text.encode("utf-8"))


def canonical_json(data) -> str:
    """``data`` as compact JSON with sorted keys: the same bytes for the same data (hashes, page text)."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def read_site_manifest(path: Path) -> dict:
    """An earlier export's manifest, or ``{}`` when there is none, it is unreadable or made with other settings."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("format") != SITE_FORMAT or data.get("settings") != SETTINGS:
        return {}
    return data


def write_site_manifest(writer: SiteWriter, manifest: Manifest, units: dict, settings: dict,
                        budget: dict | None) -> None:
    """Write ``export.json``: the format, settings, source store, per-unit records (sorted) and the budget."""
    data = {"format": SITE_FORMAT, "settings": settings,
            "source": {"model": manifest.model, "weights": manifest.weights_sha256, "k": manifest.k},
            "units": {key: units[key] for key in sorted(units)},
            "budget": budget,
            "note": "budget: bytes per unit are a unit's page and pictures; the time an export takes is printed "
                    "by deepvis export (not kept here: two exports of one store are byte-identical)"}
    writer.text(MANIFEST_NAME, json.dumps(data, indent=1, sort_keys=True) + "\n")


def remove_stale(root: Path, old: dict, units: dict, layers: list[str]) -> None:
    """Remove the files an earlier export wrote that this one did not (units or pictures no longer there)."""
    keep = {name for entry in units.values() for name in entry["files"]}
    stale = {name for entry in old.get("units", {}).values() for name in entry.get("files", [])} - keep
    old_layers = {key.rpartition(":")[0] for key in old.get("units", {})} - set(layers)
    stale |= {f"{layer_dirname(layer)}/index.html" for layer in old_layers}
    for name in sorted(stale):
        path = (root / name)
        if ".." not in Path(name).parts:
            path.unlink(missing_ok=True)
