"""Write a store as a static site (see :mod:`deepvis.jobs.export`): pages, pictures re-encoded once, a search index.

Deterministic: no timestamps, stable ordering, JPEG encoding by Pillow with fixed settings, so exporting an unchanged
store again changes no file (a file whose bytes are already there is not rewritten). Every file is written through
a temporary file and ``os.replace``. ``SITE/export.json`` records, per unit, a hash of what its pictures were made
from (the store's crop and optimization records, the source files' sizes, the export settings): an interrupted or
repeated export re-encodes only the units whose hash changed or whose files are missing. Store paths come from
:class:`~deepvis.store.Store` only.
"""

from __future__ import annotations

import io
import time
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from deepvis.core.errors import DeepvisError
from deepvis.core.progress import Progress
from deepvis.jobs.export import pages
from deepvis.jobs.export.config import (ASSETS, CHECKPOINT_UNITS, CROP_QUALITY, CROP_SIZE, MANIFEST_NAME,
                                        OPTIMIZED_QUALITY, OPTIMIZED_SIZE, SETTINGS, ExportConfig, ExportReport)
from deepvis.jobs.export.site_files import SiteWriter, read_site_manifest, remove_stale, write_site_manifest
from deepvis.jobs.export.units import UnitSources, labels_of, unit_sources
from deepvis.store import Manifest, Store, layer_dirname


def export_site(store: str | Path | Store, out: str | Path, model=None, **settings: Any) -> ExportReport:
    """Write the static site of ``store`` into ``out``: :func:`run_export` with the settings given as keywords
    (``layers``, ``channels``, ``title``, ``progress``: see :class:`ExportConfig`). ``model`` (optional) gives the
    labels of label layers. Returns an :class:`ExportReport` (bytes per unit, time)."""
    return run_export(store, out, ExportConfig(**settings), model)


def run_export(store: str | Path | Store, out: str | Path, config: ExportConfig = ExportConfig(),
               model=None) -> ExportReport:
    """Write the static site of ``store`` into ``out``: every channel of ``config.layers`` (default: all the store's
    layers; ``config.channels``: only these, where a layer has them). ``model`` (optional) gives the labels of label
    layers. Returns an :class:`ExportReport` (what was written: pages, units, bytes, the folder; time)."""
    start = time.perf_counter()
    store = store if isinstance(store, Store) else Store(store)
    manifest = store.read_manifest()
    chosen = list(manifest.layers) if not config.layers else list(dict.fromkeys(config.layers))
    unknown = [name for name in chosen if name not in manifest.layers]
    if unknown:
        raise DeepvisError(f"layer {unknown[0]!r} is not in the store '{store.root}' (it has "
                           f"{', '.join(manifest.layers)}): run deepvis find-max with --layers {unknown[0]}")
    root = Path(out)
    if root.resolve() == store.root.resolve():
        raise DeepvisError(f"the site would overwrite the store '{store.root}': give another --out (e.g. "
                           f"{store.root / 'site'})")
    root.mkdir(parents=True, exist_ok=True)
    writer = SiteWriter(root)
    old = read_site_manifest(root / MANIFEST_NAME)
    old_units = old.get("units", {}) if old.get("source", {}).get("weights") == manifest.weights_sha256 else {}
    names = store.read_image_list()
    title = config.title or f"deepvis · {manifest.model}"

    wanted = None if config.channels is None else set(config.channels)
    plan = {layer: [c for c in range(manifest.layers[layer].channels) if wanted is None or c in wanted]
            for layer in chosen}
    bar = Progress(sum(len(v) for v in plan.values()), "export", unit="units", enabled=config.progress)
    units: dict[str, dict] = {}
    encoded = 0
    layer_info = []
    try:
        for li, layer in enumerate(chosen):
            top = store.read_topk(layer)
            labels = labels_of(model, manifest, layer)
            maxima = top["values"][:, 0].astype(np.float64) if top["values"].size else np.zeros(0)
            finite = maxima[np.isfinite(maxima)]
            edges = (np.histogram_bin_edges(finite, bins=20) if finite.size else np.zeros(0))
            counts = np.histogram(finite, bins=edges)[0] if finite.size else np.zeros(0, int)
            tiles, kinds, methods = [], {"auto"}, set()
            exported = plan[layer]
            for position, channel in enumerate(exported):
                unit = unit_sources(store, layer, channel, manifest.k)
                key = f"{layer}:{channel}"
                previous = old_units.get(key)
                if not (previous and previous.get("source") == unit.source and
                        all((root / name).is_file() for name in unit.pictures)):
                    _encode_pictures(store, writer, unit)
                    encoded += bool(unit.pictures)
                else:
                    for name in unit.pictures:
                        writer.sizes[name] = (root / name).stat().st_size
                neighbours = (exported[position - 1] if position > 0 else None,
                              exported[position + 1] if position + 1 < len(exported) else None)
                page = pages.unit_page(manifest, layer, channel, unit, top, names, labels, neighbours, title,
                                       (finite, edges, counts))
                page_name = f"{layer_dirname(layer)}/{channel}.html"
                writer.text(page_name, page)
                files = sorted([page_name, *unit.pictures])
                units[key] = {"source": unit.source, "files": files,
                              "bytes": sum(writer.sizes[name] for name in files)}
                pics = _tile_pictures(unit, kinds, methods)
                tiles.append((channel, pics, labels[channel] if labels else None))
                bar.update(1)
                if len(units) % CHECKPOINT_UNITS == 0:
                    write_site_manifest(writer, manifest, {**old_units, **units}, SETTINGS, None)
            order = [k for k in ("auto", "optimized", "image", "deconv", "guided", "gradient") if k in kinds]
            writer.text(f"{layer_dirname(layer)}/index.html",
                        pages.layer_page(manifest, chosen, li, tiles, order, title, labels is not None))
            pictures = [f"optimized ({', '.join(sorted(methods))})" if k == "optimized" and methods else k
                        for k in order[1:]]
            layer_info.append((layer, tiles, labels, ", ".join(pictures) or "top-k only"))
    except BaseException:  # interrupted (Ctrl-C, a bad picture): keep what is done, so a rerun resumes there
        write_site_manifest(writer, manifest, {**old_units, **units}, SETTINGS, None)
        raise
    bar.close()
    return _finish(writer, manifest, old, units, chosen, layer_info, title, encoded, start)


def _encode_pictures(store: Store, writer: SiteWriter, unit: UnitSources) -> None:
    """Re-encode a unit's pictures from the store into the site (a kind's montage read once for all its ranks)."""
    crops_by_kind: dict[str, dict] = {}
    for name, source in unit.pictures.items():
        try:
            if isinstance(source, Path):
                with Image.open(source) as image:
                    data = _jpeg(image, OPTIMIZED_SIZE, OPTIMIZED_QUALITY)
            else:
                kind, rank = source
                if kind not in crops_by_kind:
                    crops_by_kind[kind] = store.unit_crops(unit.layer, unit.channel, kind)
                data = _jpeg(crops_by_kind[kind][rank], CROP_SIZE, CROP_QUALITY)
        except (OSError, ValueError, KeyError) as exc:
            what = f"'{source}'" if isinstance(source, Path) else f"{source[0]} (rank {source[1]})"
            raise DeepvisError(f"cannot read the picture {what} of {unit.layer}:{unit.channel} ({exc}): make it "
                               "again (deepvis crops / optimize with --force)") from None
        writer.put(name, data)


def _tile_pictures(unit: UnitSources, kinds: set[str], methods: set[str]) -> dict[str, str]:
    """The site file a unit's tile shows for each kind (``auto``: optimized, else the top image); notes the kinds
    and optimization methods the layer has in ``kinds`` and ``methods``."""
    pics = {"auto": None}
    for kind, ranks in unit.crops.items():
        if ranks[0]:
            pics[kind] = ranks[0]
            kinds.add(kind)
    if unit.optimized:
        pics["optimized"] = unit.optimized[0][1]
        kinds.add("optimized")
        if unit.record and unit.record.get("method"):
            methods.add(str(unit.record["method"]))
    pics["auto"] = pics.get("optimized") or pics.get("image")
    return {k: v for k, v in pics.items() if v}


def _finish(writer: SiteWriter, manifest: Manifest, old: dict, units: dict, chosen: list[str], layer_info,
            title: str, encoded: int, start: float) -> ExportReport:
    """The index page, search index and assets; stale files removed; the site manifest with its budget; the report."""
    writer.text("index.html", pages.index_page(manifest, layer_info, title))
    writer.text("search-index.js", pages.search_index(layer_info))
    for name in ASSETS:
        writer.put(f"assets/{name}", resources.files("deepvis.jobs.export").joinpath("assets", name).read_bytes())
    bytes_units = sum(entry["bytes"] for entry in units.values())
    budget = {"units": len(units), "bytes_units": bytes_units,
              "bytes_per_unit": round(bytes_units / len(units)) if units else 0,
              "bytes_site_without_manifest": sum(writer.sizes.values())}
    remove_stale(writer.root, old, units, chosen)
    write_site_manifest(writer, manifest, units, SETTINGS, budget)
    return ExportReport(writer.root, len(units), encoded, sum(writer.sizes.values()), bytes_units,
                        time.perf_counter() - start, chosen, sum(name.endswith(".html") for name in writer.sizes))


def _jpeg(image: Image.Image, size: int, quality: int) -> bytes:
    """``image`` encoded as a baseline JPEG, its longest side at most ``size`` (never enlarged)."""
    image = image.convert("RGB")
    if max(image.size) > size:
        scale = size / max(image.size)
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                             Image.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality, optimize=True, progressive=False, subsampling=2)
    return buffer.getvalue()
