"""Write a store as a static site (see :mod:`deepvis.export`): pages, pictures re-encoded once, a search index.

Deterministic: no timestamps, stable ordering, JPEG encoding by Pillow with fixed settings, so exporting an unchanged
store again changes no file (a file whose bytes are already there is not rewritten). Every file is written through
a temporary file and ``os.replace``. ``SITE/export.json`` records, per unit, a hash of what its pictures were made
from (the store's crop and optimization records, the source files' sizes, the export settings): an interrupted or
repeated export re-encodes only the units whose hash changed or whose files are missing. Store paths come from
:class:`~deepvis.store.Store` only.
"""

from __future__ import annotations

import hashlib
import io
import json
import shlex
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from urllib.parse import quote

import numpy as np
from PIL import Image

from deepvis.core.errors import DeepvisError
from deepvis.core.progress import Progress
from deepvis.store import CROP_KINDS, Manifest, Store, atomic_write_bytes, layer_dirname
from deepvis.jobs.export import templates as t

#: Crops and backward images: longest side at most this many pixels (never enlarged), JPEG quality.
CROP_SIZE, CROP_QUALITY = 128, 85
#: Optimized images: longest side at most this many pixels (never enlarged), JPEG quality.
OPTIMIZED_SIZE, OPTIMIZED_QUALITY = 224, 85
#: The site manifest's format; the settings that, when changed, re-encode every picture.
SITE_FORMAT = 1
SETTINGS = {"crop_size": CROP_SIZE, "crop_quality": CROP_QUALITY, "optimized_size": OPTIMIZED_SIZE,
            "optimized_quality": OPTIMIZED_QUALITY, "encoder": "Pillow JPEG, optimize=True, 4:2:0, baseline"}
#: Channels shown in a layer's thumbnail strip on the index page.
STRIP = 16
#: Units between two writes of the site manifest during an export (what a resumed export can skip).
CHECKPOINT_UNITS = 200
ASSETS = ("site.css", "site.js")
MANIFEST_NAME = "export.json"


@dataclass
class ExportReport:
    """What an export wrote: units (pages), units whose pictures were encoded (the others' were current, or they
    have none), bytes, seconds."""

    site: Path
    units: int
    encoded: int
    bytes_total: int
    bytes_units: int
    seconds: float
    layers: list[str] = field(default_factory=list)

    @property
    def bytes_per_unit(self) -> float:
        """A unit's page and pictures, on average."""
        return self.bytes_units / self.units if self.units else 0.0

    @property
    def seconds_per_1000_units(self) -> float:
        return self.seconds / self.units * 1000 if self.units else 0.0

    def summary(self) -> str:
        return (f"exported {self.units} units of {len(self.layers)} layers into {self.site} "
                f"(pictures of {self.encoded} units encoded, the others current or without pictures): "
                f"{self.bytes_total / 1e6:.2f} MB, "
                f"{self.bytes_per_unit / 1e3:.1f} KB per unit (page and pictures), "
                f"{self.seconds_per_1000_units:.1f} s per 1000 units")


def site_unit_page(site: str | Path, layer: str, channel: int) -> Path:
    """Where a site keeps a unit's page."""
    return Path(site) / layer_dirname(layer) / f"{channel}.html"


def _href(layer: str) -> str:
    """The layer's folder as a URL path segment (its folder name, percent-encoded once more for the URL)."""
    return quote(layer_dirname(layer), safe="")


class _Writer:
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


def _json(data) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def _read_site_manifest(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("format") != SITE_FORMAT or data.get("settings") != SETTINGS:
        return {}
    return data


@dataclass
class _Unit:
    layer: str
    channel: int
    pictures: dict[str, Path | tuple[str, int]]  # site file (relative to the root) -> what it is made from, in display
    # order: an optimized image's store file, or a crop's (kind, rank)
    optimized: list[tuple[str, str]]  # (caption, site file)
    crops: dict[str, list[str | None]]  # kind -> site file by rank
    record: dict | None  # the optimization record
    source: str  # hash of what its pictures are made from


def _unit_sources(store: Store, layer: str, channel: int, k: int) -> _Unit:
    """What a unit's pictures are in the store, and the site files they become."""
    folder = f"{layer_dirname(layer)}/{channel}"
    pictures: dict[str, Path | tuple[str, int]] = {}
    optimized = []
    record = store.read_optimized_record(layer, channel)
    if store.optimized_file(layer, channel).is_file():
        candidates = [("best", "optimized", "optimized.jpg"), ("input", "what the network saw", "optimized_input.jpg")]
        n = 1
        while store.optimized_file(layer, channel, n).is_file():
            candidates.append((n, f"copy {n}", f"optimized_{n:02d}.jpg"))
            n += 1
        for which, caption, name in candidates:
            path = store.optimized_file(layer, channel, which)
            if path.is_file():
                pictures[f"{folder}/{name}"] = path
                optimized.append((caption, f"{folder}/{name}"))
    crops: dict[str, list[str | None]] = {}
    crops_record, crop_files = store.read_crops_record(layer, channel), store.crop_files(layer, channel)
    have = store.crop_ranks(layer, channel, crops_record, crop_files)
    for kind in CROP_KINDS:
        ranks = [f"{folder}/{kind}_{rank:02d}.jpg" if rank in have.get(kind, ()) else None for rank in range(k)]
        for rank, name in enumerate(ranks):
            if name:
                pictures[name] = (kind, rank)
        if any(ranks):
            crops[kind] = ranks
    sizes = {name: path.stat().st_size for name, path in pictures.items() if isinstance(path, Path)}
    sizes.update({path.name: path.stat().st_size for path in crop_files})
    made_from = [SETTINGS, crops_record, record, sizes]
    source = hashlib.sha256(_json(made_from).encode("utf-8")).hexdigest()[:16]
    return _Unit(layer, channel, pictures, optimized, crops, record, source)


def _labels_of(model, manifest: Manifest, layer: str) -> list[str] | None:
    if model is None or not getattr(model, "labels", None):
        return None
    shape = tuple(manifest.layers[layer].shape)
    return list(model.labels) if model.is_label_layer(layer, shape) else None


def _field_text(field_json: dict | None) -> str:
    if not field_json:
        return "the whole input"
    def text(value):
        return "×".join(str(v) for v in dict.fromkeys(value)) if isinstance(value, (list, tuple)) else str(value)

    size, stride = field_json.get("size"), field_json.get("stride")
    return f"{text(size)} px" + (f", stride {text(stride)}" if stride is not None else "")


def export_site(store: str | Path, out: str | Path, layers: list[str] | None = None, channels=None,
                title: str | None = None, model=None, progress: bool = True) -> ExportReport:
    """Write the static site of ``store`` into ``out``: every channel of ``layers`` (default: all the store's layers;
    ``channels``: only these, where a layer has them). ``model`` (optional) gives the labels of label layers.
    Returns an :class:`ExportReport` (bytes per unit, time)."""
    start = time.perf_counter()
    store = store if isinstance(store, Store) else Store(store)
    manifest = store.read_manifest()
    chosen = list(manifest.layers) if not layers else list(dict.fromkeys(layers))
    unknown = [name for name in chosen if name not in manifest.layers]
    if unknown:
        raise DeepvisError(f"layer {unknown[0]!r} is not in the store '{store.root}' (it has "
                           f"{', '.join(manifest.layers)}): run deepvis find-max with --layers {unknown[0]}")
    root = Path(out)
    if root.resolve() == store.root.resolve():
        raise DeepvisError(f"the site would overwrite the store '{store.root}': give another --out (e.g. "
                           f"{store.root / 'site'})")
    root.mkdir(parents=True, exist_ok=True)
    writer = _Writer(root)
    old = _read_site_manifest(root / MANIFEST_NAME)
    old_units = old.get("units", {}) if old.get("source", {}).get("weights") == manifest.weights_sha256 else {}
    names = store.read_image_list()
    title = title or f"deepvis · {manifest.model}"

    plan: dict[str, list[int]] = {}
    wanted = None if channels is None else set(channels)
    for layer in chosen:
        count = manifest.layers[layer].channels
        plan[layer] = [c for c in range(count) if wanted is None or c in wanted]
    total = sum(len(v) for v in plan.values())
    bar = Progress(total, "export", unit="units", enabled=progress)
    units: dict[str, dict] = {}
    encoded = 0
    layer_info = []
    try:
        for li, layer in enumerate(chosen):
            top = store.read_topk(layer)
            labels = _labels_of(model, manifest, layer)
            maxima = top["values"][:, 0].astype(np.float64) if top["values"].size else np.zeros(0)
            finite = maxima[np.isfinite(maxima)]
            edges = (np.histogram_bin_edges(finite, bins=20) if finite.size else np.zeros(0))
            counts = np.histogram(finite, bins=edges)[0] if finite.size else np.zeros(0, int)
            tiles, kinds, methods = [], {"auto"}, set()
            exported = plan[layer]
            for position, channel in enumerate(exported):
                unit = _unit_sources(store, layer, channel, manifest.k)
                key = f"{layer}:{channel}"
                previous = old_units.get(key)
                if not (previous and previous.get("source") == unit.source and
                        all((root / name).is_file() for name in unit.pictures)):
                    crops_by_kind: dict[str, dict] = {}  # a kind's montage is read once for all its ranks
                    for name, source in unit.pictures.items():
                        try:
                            if isinstance(source, Path):
                                with Image.open(source) as image:
                                    data = _jpeg(image, OPTIMIZED_SIZE, OPTIMIZED_QUALITY)
                            else:
                                kind, rank = source
                                if kind not in crops_by_kind:
                                    crops_by_kind[kind] = store.unit_crops(layer, channel, kind)
                                data = _jpeg(crops_by_kind[kind][rank], CROP_SIZE, CROP_QUALITY)
                        except (OSError, ValueError, KeyError) as exc:
                            what = f"'{source}'" if isinstance(source, Path) else f"{source[0]} (rank {source[1]})"
                            raise DeepvisError(f"cannot read the picture {what} of {key} ({exc}): make it again "
                                               "(deepvis crops / optimize with --force)") from None
                        writer.put(name, data)
                    encoded += bool(unit.pictures)
                else:
                    for name in unit.pictures:
                        writer.sizes[name] = (root / name).stat().st_size
                neighbours = (exported[position - 1] if position > 0 else None,
                              exported[position + 1] if position + 1 < len(exported) else None)
                page = _unit_page(manifest, layer, channel, unit, top, names, labels, neighbours, title,
                                  (finite, edges, counts))
                page_name = f"{layer_dirname(layer)}/{channel}.html"
                writer.text(page_name, page)
                files = sorted([page_name, *unit.pictures])
                units[key] = {"source": unit.source, "files": files,
                              "bytes": sum(writer.sizes[name] for name in files)}
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
                tiles.append((channel, {k: v for k, v in pics.items() if v}, labels[channel] if labels else None))
                bar.update(1)
                if len(units) % CHECKPOINT_UNITS == 0:
                    _write_manifest(writer, manifest, {**old_units, **units}, SETTINGS, None)
            order = [k for k in ("auto", "optimized", "image", "deconv", "guided", "gradient") if k in kinds]
            writer.text(f"{layer_dirname(layer)}/index.html",
                        _layer_page(manifest, chosen, li, tiles, order, title, labels is not None))
            pictures = [f"optimized ({', '.join(sorted(methods))})" if k == "optimized" and methods else k
                        for k in order[1:]]
            layer_info.append((layer, tiles, labels, ", ".join(pictures) or "top-k only"))
    except BaseException:  # interrupted (Ctrl-C, a bad picture): keep what is done, so a rerun resumes there
        _write_manifest(writer, manifest, {**old_units, **units}, SETTINGS, None)
        raise
    bar.close()

    writer.text("index.html", _index_page(manifest, layer_info, title))
    writer.text("search-index.js", _search_index(layer_info))
    for name in ASSETS:
        writer.put(f"assets/{name}", resources.files("deepvis.jobs.export").joinpath("assets", name).read_bytes())
    bytes_units = sum(entry["bytes"] for entry in units.values())
    budget = {"units": len(units), "bytes_units": bytes_units,
              "bytes_per_unit": round(bytes_units / len(units)) if units else 0,
              "bytes_site_without_manifest": sum(writer.sizes.values())}
    _remove_stale(root, old, units, chosen)
    _write_manifest(writer, manifest, units, SETTINGS, budget)
    return ExportReport(root, len(units), encoded, sum(writer.sizes.values()), bytes_units,
                        time.perf_counter() - start, chosen)


def _write_manifest(writer: _Writer, manifest: Manifest, units: dict, settings: dict, budget: dict | None) -> None:
    data = {"format": SITE_FORMAT, "settings": settings,
            "source": {"model": manifest.model, "weights": manifest.weights_sha256, "k": manifest.k},
            "units": {key: units[key] for key in sorted(units)},
            "budget": budget,
            "note": "budget: bytes per unit are a unit's page and pictures; the time an export takes is printed "
                    "by deepvis export (not kept here: two exports of one store are byte-identical)"}
    writer.text(MANIFEST_NAME, json.dumps(data, indent=1, sort_keys=True) + "\n")


def _remove_stale(root: Path, old: dict, units: dict, layers: list[str]) -> None:
    """Remove the files an earlier export wrote that this one did not (units or pictures no longer there)."""
    keep = {name for entry in units.values() for name in entry["files"]}
    stale = {name for entry in old.get("units", {}).values() for name in entry.get("files", [])} - keep
    old_layers = {key.rpartition(":")[0] for key in old.get("units", {})} - set(layers)
    stale |= {f"{layer_dirname(layer)}/index.html" for layer in old_layers}
    for name in sorted(stale):
        path = (root / name)
        if ".." not in Path(name).parts:
            path.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------------- pages
def _unit_page(manifest: Manifest, layer: str, channel: int, unit: _Unit, top: dict, names: list[str],
               labels: list[str] | None, neighbours, title: str, layer_maxima) -> str:
    strip = len(layer_dirname(layer)) + 1  # site file -> relative to the layer folder
    label = labels[channel] if labels and channel < len(labels) else None
    parts = []
    facts = [("layer", t.code(layer)), ("channel", str(channel)),
             ("shape", t.code(" × ".join(str(v) for v in manifest.layers[layer].shape))),
             ("receptive field", t.escape(_field_text(manifest.layers[layer].receptive_field)))]
    if label:
        facts.append(("label", t.escape(label)))
    parts.append(t.table(facts))
    if unit.optimized:
        figures = "".join(t.figure(name[strip:], caption, 224, "optimized") for caption, name in unit.optimized)
        parts.append(f'<section id="optimized"><h2>Optimized images</h2><div class="row">{figures}</div>')
        if unit.record:
            settings = [("method", t.escape(str(unit.record.get("method", "?")))),
                        ("objective", t.escape(str(unit.record.get("objective", "?"))))]
            target = unit.record.get("target")
            if isinstance(target, dict) and target.get("target"):
                settings.append(("target", t.code(str(target["target"]))))
            for key, value in sorted((unit.record.get("params") or {}).items()):
                settings.append((key, t.code(json.dumps(value))))
            for key in ("iterations", "best_obj"):
                value = unit.record.get(key, (unit.record.get("record") or {}).get(key))
                if value is not None:
                    settings.append((key.replace("_", " "), t.code(json.dumps(value))))
            parts.append("<details><summary>settings</summary>" + t.table(settings) + "</details>")
        parts.append("</section>")
    values = top["values"][channel].tolist()
    images = top["images"][channel].tolist()
    ys, xs = top["y"][channel].tolist(), top["x"][channel].tolist()
    ranks = [r for r, i in enumerate(images) if i >= 0]
    rows = []
    for r in ranks:
        cells = []
        for kind, pictures in unit.crops.items():
            name = pictures[r] if r < len(pictures) else None
            cells.append(t.figure(name[strip:], kind, CROP_SIZE, "crop") if name else "")
        source = names[images[r]] if images[r] < len(names) else f"image {images[r]}"
        where = f" at y={ys[r]}, x={xs[r]}" if ys[r] >= 0 else ""
        rows.append(f'<tr><td class="rank">{r + 1}</td><td>{"".join(cells)}</td><td><code>{t.escape(source)}</code>'
                    f"{where}<br>activation {values[r]:.4g}</td></tr>")
    if rows:
        heading = "Top dataset examples" + ("" if unit.crops else " (no crops made: run deepvis crops)")
        parts.append(f'<section id="top"><h2>{heading}</h2><table class="examples">{"".join(rows)}</table></section>')
    finite, edges, counts = layer_maxima
    mark = None
    if ranks and edges.size and np.isfinite(values[0]):
        mark = int(min(max(np.searchsorted(edges, values[0], side="right") - 1, 0), len(counts) - 1))
    names_r = [f"#{r + 1}" for r in ranks]
    parts.append(
        '<section id="distribution"><h2>Maximum activation</h2>'
        f"<p>The store keeps each unit's top {manifest.k} activations over the dataset ({manifest.images} images), "
        "not every value: these are the top-k values, highest first.</p>" + t.bars([values[r] for r in ranks], names_r)
        + (f"<p>The top activation of each of the layer's {len(finite)} channels, this unit's bin marked:</p>"
           + t.histogram(counts.tolist(), edges.tolist(), mark) if finite.size > 1 else "") + "</section>")
    prev, next_ = neighbours
    links = [f'<a rel="prev" href="{prev}.html">← {t.escape(layer)}:{prev}</a>' if prev is not None else "",
             '<a rel="up" href="index.html">↑ layer</a>',
             f'<a rel="next" href="{next_}.html">{t.escape(layer)}:{next_} →</a>' if next_ is not None else ""]
    parts.append(f'<nav class="pager">{" ".join(link for link in links if link)}</nav>')
    heading = f"{layer}:{channel}" + (f" — {label}" if label else "")
    nav = {"prev": f"{prev}.html" if prev is not None else None, "next": f"{next_}.html" if next_ is not None else None,
           "up": "index.html"}
    return t.page("../", f"{heading} · {title}", heading, [(title, "../index.html"), (layer, "index.html"),
                                                          (str(channel), None)], "\n".join(parts), nav, "unit")


def _layer_page(manifest: Manifest, layers: list[str], index: int, tiles, kinds: list[str], title: str,
                labelled: bool) -> str:
    layer = layers[index]
    record = manifest.layers[layer]
    facts = t.table([("layout", t.escape((record.layout or {}).get("kind", "?"))),
                     ("shape", t.code(" × ".join(str(v) for v in record.shape))),
                     ("receptive field", t.escape(_field_text(record.receptive_field))),
                     ("units here", f"{len(tiles)} of {record.channels}")])
    cut = len(layer_dirname(layer)) + 1  # site files -> relative to the layer folder
    grid = "".join(t.tile(f"{channel}.html", channel, {k: v[cut:] for k, v in pics.items()}, label, 96)
                   for channel, pics, label in tiles)
    body = f'{facts}\n{t.kind_switch(kinds)}\n<div class="grid{" labelled" if labelled else ""}">{grid}</div>'
    nav = {"prev": f"../{_href(layers[index - 1])}/index.html" if index > 0 else None,
           "next": f"../{_href(layers[index + 1])}/index.html" if index + 1 < len(layers) else None,
           "up": "../index.html", "down": f"{tiles[0][0]}.html" if tiles else None}
    return t.page("../", f"{layer} · {title}", f"layer {layer}", [(title, "../index.html"), (layer, None)], body, nav,
                  "layer")


def _index_page(manifest: Manifest, layer_info, title: str) -> str:
    prov = manifest.provenance or {}
    command = prov.get("command")
    command_text = shlex.join(str(v) for v in command) if isinstance(command, list) else str(command or "?")
    recipe = manifest.recipe or {}
    facts = [("model", t.code(manifest.model)), ("weights (network hash)", t.code(manifest.weights_sha256)),
             ("preprocessing", t.code(_json(manifest.preprocessing)))]
    if recipe:
        facts.append(("recipe", t.code(_json({k: v for k, v in recipe.items() if k != "cwd"}))))
    facts += [("dataset", f"{manifest.images} images in {t.code(manifest.image_root)}"
               + (f", {len(manifest.skipped)} skipped" if manifest.skipped else "")),
              ("top-k", str(manifest.k)), ("find-max command", t.code(command_text))]
    for key in ("deepvis", "torch", "started", "finished"):
        if key in prov:
            facts.append((key, t.escape(str(prov[key]))))
    rows = []
    for layer, tiles, labels, pictures in layer_info:
        record = manifest.layers[layer]
        href = f"{_href(layer)}/"
        strip = "".join(t.tile(href + f"{channel}.html", channel,
                               {k: href + v[len(layer_dirname(layer)) + 1:] for k, v in pics.items()}, None, 48)
                        for channel, pics, _ in tiles[:STRIP])
        rows.append(f'<tr><td><a href="{href}index.html">{t.escape(layer)}</a></td>'
                    f"<td>{t.escape((record.layout or {}).get('kind', '?'))}</td>"
                    f"<td>{' × '.join(str(v) for v in record.shape)}</td>"
                    f"<td>{t.escape(_field_text(record.receptive_field))}</td><td>{len(tiles)}</td>"
                    f"<td>{t.escape(pictures)}</td>"
                    f'<td><div class="strip">{strip}</div></td></tr>')
    body = (t.table(facts) + '\n<h2>Layers</h2>\n<table class="layers"><tr><th>layer</th><th>layout</th><th>shape</th>'
            "<th>receptive field</th><th>units</th><th>pictures</th><th>first units</th></tr>" + "".join(rows) + "</table>")
    first = f"{_href(layer_info[0][0])}/index.html" if layer_info else None
    return t.page("", title, title, [(title, None)], body, {"next": first, "down": first}, "index")


def _search_index(layer_info) -> str:
    data = {"layers": [{"name": layer, "dir": _href(layer), "channels": [c for c, _, _ in tiles]}
                       for layer, tiles, _, _ in layer_info],
            "labels": [[li, channel, label] for li, (_, tiles, labels, _) in enumerate(layer_info) if labels
                       for channel, _, label in tiles]}
    return ("// deepvis export: the layers and labels, for the search box (a script, not JSON: file:// pages cannot "
            "fetch)\nwindow.DEEPVIS_SEARCH = " + json.dumps(data, sort_keys=True, separators=(",", ":")) + ";\n")


def site_page_url(store: Store, layer: str, channel: int) -> str | None:
    """The URL path of a unit's page in the store's own site (:attr:`Store.site_path`), relative to the site root
    and percent-encoded once, or None when no export there has the unit."""
    page = site_unit_page(store.site_path, layer, channel)
    return f"{_href(layer)}/{channel}.html" if page.is_file() else None
