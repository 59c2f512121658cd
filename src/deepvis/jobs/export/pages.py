"""The site's pages as HTML strings (a unit's, a layer's, the index) and its search index, from the store's manifest
and top-k records and a unit's :class:`~deepvis.jobs.export.units.UnitSources`; :func:`site_page_url` is where a
unit's page is, for the toolbox's link."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from urllib.parse import quote

import numpy as np

from deepvis.jobs.export import templates as t
from deepvis.jobs.export.config import CROP_SIZE, STRIP
from deepvis.jobs.export.site_files import canonical_json
from deepvis.jobs.export.units import UnitSources
from deepvis.store import Manifest, Store, layer_dirname


def site_unit_page(site: str | Path, layer: str, channel: int) -> Path:
    """Where a site keeps a unit's page."""
    return Path(site) / layer_dirname(layer) / f"{channel}.html"


def site_page_url(store: Store, layer: str, channel: int) -> str | None:
    """The URL path of a unit's page in the store's own site (:attr:`Store.site_path`), relative to the site root
    and percent-encoded once, or None when no export there has the unit."""
    page = site_unit_page(store.site_path, layer, channel)
    return f"{layer_href(layer)}/{channel}.html" if page.is_file() else None


def layer_href(layer: str) -> str:
    """The layer's folder as a URL path segment (its folder name, percent-encoded once more for the URL)."""
    return quote(layer_dirname(layer), safe="")


def field_text(field_json: dict | None) -> str:
    """A receptive field for people: ``"11×11 px, stride 4"``, or the whole input when unknown."""
    if not field_json:
        return "the whole input"
    def text(value):
        return "×".join(str(v) for v in dict.fromkeys(value)) if isinstance(value, (list, tuple)) else str(value)

    size, stride = field_json.get("size"), field_json.get("stride")
    return f"{text(size)} px" + (f", stride {text(stride)}" if stride is not None else "")


def unit_page(manifest: Manifest, layer: str, channel: int, unit: UnitSources, top: dict, names: list[str],
              labels: list[str] | None, neighbours, title: str, layer_maxima) -> str:
    """A unit's page: facts, optimized images and their settings, top examples with crops, maxima."""
    strip = len(layer_dirname(layer)) + 1  # site file -> relative to the layer folder
    label = labels[channel] if labels and channel < len(labels) else None
    parts = []
    facts = [("layer", t.code(layer)), ("channel", str(channel)),
             ("shape", t.code(" × ".join(str(v) for v in manifest.layers[layer].shape))),
             ("receptive field", t.escape(field_text(manifest.layers[layer].receptive_field)))]
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


def layer_page(manifest: Manifest, layers: list[str], index: int, tiles, kinds: list[str], title: str,
               labelled: bool) -> str:
    """A layer's page: its facts and the grid of its exported channels, switchable between kinds."""
    layer = layers[index]
    record = manifest.layers[layer]
    facts = t.table([("layout", t.escape((record.layout or {}).get("kind", "?"))),
                     ("shape", t.code(" × ".join(str(v) for v in record.shape))),
                     ("receptive field", t.escape(field_text(record.receptive_field))),
                     ("units here", f"{len(tiles)} of {record.channels}")])
    cut = len(layer_dirname(layer)) + 1  # site files -> relative to the layer folder
    grid = "".join(t.tile(f"{channel}.html", channel, {k: v[cut:] for k, v in pics.items()}, label, 96)
                   for channel, pics, label in tiles)
    body = f'{facts}\n{t.kind_switch(kinds)}\n<div class="grid{" labelled" if labelled else ""}">{grid}</div>'
    nav = {"prev": f"../{layer_href(layers[index - 1])}/index.html" if index > 0 else None,
           "next": f"../{layer_href(layers[index + 1])}/index.html" if index + 1 < len(layers) else None,
           "up": "../index.html", "down": f"{tiles[0][0]}.html" if tiles else None}
    return t.page("../", f"{layer} · {title}", f"layer {layer}", [(title, "../index.html"), (layer, None)], body, nav,
                  "layer")


def index_page(manifest: Manifest, layer_info, title: str) -> str:
    """The site's index: the model, its provenance and a row per layer with a strip of thumbnails."""
    prov = manifest.provenance or {}
    command = prov.get("command")
    command_text = shlex.join(str(v) for v in command) if isinstance(command, list) else str(command or "?")
    recipe = manifest.recipe or {}
    facts = [("model", t.code(manifest.model)), ("weights (network hash)", t.code(manifest.weights_sha256)),
             ("preprocessing", t.code(canonical_json(manifest.preprocessing)))]
    if recipe:
        facts.append(("recipe", t.code(canonical_json({k: v for k, v in recipe.items() if k != "cwd"}))))
    facts += [("dataset", f"{manifest.images} images in {t.code(manifest.image_root)}"
               + (f", {len(manifest.skipped)} skipped" if manifest.skipped else "")),
              ("top-k", str(manifest.k)), ("find-max command", t.code(command_text))]
    for key in ("deepvis", "torch", "started", "finished"):
        if key in prov:
            facts.append((key, t.escape(str(prov[key]))))
    rows = []
    for layer, tiles, labels, pictures in layer_info:
        record = manifest.layers[layer]
        href = f"{layer_href(layer)}/"
        strip = "".join(t.tile(href + f"{channel}.html", channel,
                               {k: href + v[len(layer_dirname(layer)) + 1:] for k, v in pics.items()}, None, 48)
                        for channel, pics, _ in tiles[:STRIP])
        rows.append(f'<tr><td><a href="{href}index.html">{t.escape(layer)}</a></td>'
                    f"<td>{t.escape((record.layout or {}).get('kind', '?'))}</td>"
                    f"<td>{' × '.join(str(v) for v in record.shape)}</td>"
                    f"<td>{t.escape(field_text(record.receptive_field))}</td><td>{len(tiles)}</td>"
                    f"<td>{t.escape(pictures)}</td>"
                    f'<td><div class="strip">{strip}</div></td></tr>')
    body = (t.table(facts) + '\n<h2>Layers</h2>\n<table class="layers"><tr><th>layer</th><th>layout</th><th>shape</th>'
            "<th>receptive field</th><th>units</th><th>pictures</th><th>first units</th></tr>" + "".join(rows) + "</table>")
    first = f"{layer_href(layer_info[0][0])}/index.html" if layer_info else None
    return t.page("", title, title, [(title, None)], body, {"next": first, "down": first}, "index")


def search_index(layer_info) -> str:
    """The search index script (``window.DEEPVIS_SEARCH``: layers and labels)."""
    data = {"layers": [{"name": layer, "dir": layer_href(layer), "channels": [c for c, _, _ in tiles]}
                       for layer, tiles, _, _ in layer_info],
            "labels": [[li, channel, label] for li, (_, tiles, labels, _) in enumerate(layer_info) if labels
                       for channel, _, label in tiles]}
    return ("// deepvis export: the layers and labels, for the search box (a script, not JSON: file:// pages cannot "
            "fetch)\nwindow.DEEPVIS_SEARCH = " + json.dumps(data, sort_keys=True, separators=(",", ":")) + ";\n")
