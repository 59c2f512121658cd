"""The site's HTML: small functions of plain data returning strings (every value escaped here, once).

Every page links ``assets/site.css``, ``search-index.js`` and ``assets/site.js`` relative to the site root
(``root``: ``""`` or ``"../"``), and carries its neighbours in ``data-`` attributes of ``<body>`` for the
keyboard (``prev``, ``next``, ``up``), so the pages work from ``file://`` and from any static host.
"""

from __future__ import annotations

import json
from html import escape

KIND_NAMES = {"auto": "optimized, else top image", "optimized": "optimized", "image": "top image",
              "deconv": "deconv", "gradient": "gradient", "guided": "guided"}


def _attr(value) -> str:
    return escape(str(value), quote=True)


def _number(value: float) -> str:
    return f"{value:.4g}"


def page(root: str, title: str, heading: str, crumbs: list[tuple[str, str | None]], body: str,
         nav: dict[str, str | None], kind: str) -> str:
    """A whole page: ``crumbs`` (text, href or None), the search box, ``body``; ``nav`` the keyboard's targets."""
    data = "".join(f' data-{key}="{_attr(href)}"' for key, href in sorted(nav.items()) if href)
    trail = " › ".join(f'<a href="{_attr(href)}">{escape(text)}</a>' if href else f"<span>{escape(text)}</span>"
                       for text, href in crumbs)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>{escape(title)}</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{root}assets/site.css">
</head>
<body class="{kind}" data-root="{_attr(root)}"{data}>
<header>
<nav class="crumbs">{trail}</nav>
<form class="search" role="search" autocomplete="off">
<input id="search" type="search" placeholder="layer:channel or a label  ( / )" aria-label="search units">
<ol id="search-results" hidden></ol>
</form>
</header>
<main>
<h1>{escape(heading)}</h1>
{body}
</main>
<footer>Keys: ← → previous / next, ↑ up, ↓ into, / search{', k kind' if kind == 'layer' else ''}. Made by deepvis export.</footer>
<script src="{root}search-index.js"></script>
<script src="{root}assets/site.js"></script>
</body>
</html>
"""


def table(rows: list[tuple[str, str]]) -> str:
    """A two-column table of (name, HTML value)."""
    return "<table class=\"facts\">\n" + "".join(
        f"<tr><th>{escape(name)}</th><td>{value}</td></tr>\n" for name, value in rows) + "</table>"


def tile(href: str, channel: int, pictures: dict[str, str], label: str | None, size: int) -> str:
    """One channel in a grid: its picture of the default kind (``pictures['auto']``), the others for switching."""
    src = pictures.get("auto")
    data = _attr(json.dumps(pictures, sort_keys=True, separators=(",", ":")))
    image = (f'<img src="{_attr(src)}" alt="" width="{size}" height="{size}" loading="lazy">' if src
             else f'<img alt="" width="{size}" height="{size}" hidden>')
    caption = f"{channel}" + (f" {escape(label)}" if label else "")
    return (f'<a class="tile{"" if src else " empty"}" href="{_attr(href)}" data-pics="{data}" '
            f'title="{_attr(caption)}">{image}<span>{caption}</span></a>')


def kind_switch(kinds: list[str]) -> str:
    on = ' class="on"'
    buttons = "".join(f'<button type="button" data-kind="{k}"{on if k == kinds[0] else ""}>'
                      f"{escape(KIND_NAMES.get(k, k))}</button>" for k in kinds)
    return f'<div class="kinds" role="toolbar" aria-label="picture kind">{buttons}</div>'


def bars(values: list[float], names: list[str], width: int = 320) -> str:
    """Horizontal bars of the top-k values (an inline SVG)."""
    if not values:
        return "<p>no top-k values</p>"
    top = max(max(values), 1e-12)
    low = min(0.0, min(values))
    span = top - low or 1.0
    row, label = 18, 92
    parts = [f'<svg class="bars" width="{width}" height="{row * len(values) + 4}" role="img" '
             f'aria-label="top-k activations">']
    for i, (value, name) in enumerate(zip(values, names)):
        w = max(1.0, (value - low) / span * (width - label - 60))
        y = i * row + 2
        parts.append(f'<text x="0" y="{y + 13}">{escape(name)}</text>'
                     f'<rect x="{label}" y="{y}" width="{w:.1f}" height="{row - 4}"></rect>'
                     f'<text x="{label + w + 4:.1f}" y="{y + 13}">{_number(value)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def histogram(counts: list[int], edges: list[float], mark: int | None, width: int = 320, height: int = 80) -> str:
    """A histogram (inline SVG) with bin ``mark`` highlighted."""
    if not counts:
        return ""
    top = max(counts) or 1
    w = width / len(counts)
    parts = [f'<svg class="hist" width="{width}" height="{height + 16}" role="img" aria-label="histogram">']
    for i, count in enumerate(counts):
        h = count / top * height
        cls = ' class="mark"' if i == mark else ""
        parts.append(f'<rect{cls} x="{i * w:.1f}" y="{height - h:.1f}" width="{max(w - 1, 1):.1f}" height="{h:.1f}">'
                     f"<title>{_number(edges[i])} – {_number(edges[i + 1])}: {count}</title></rect>")
    parts.append(f'<text x="0" y="{height + 13}">{_number(edges[0])}</text>'
                 f'<text x="{width}" y="{height + 13}" text-anchor="end">{_number(edges[-1])}</text></svg>')
    return "".join(parts)


def figure(src: str, caption: str, size: int, klass: str = "") -> str:
    return (f'<figure class="{klass}"><img src="{_attr(src)}" alt="{_attr(caption)}" width="{size}" '
            f'height="{size}"><figcaption>{escape(caption)}</figcaption></figure>')


def code(text: str) -> str:
    return f"<code>{escape(text)}</code>"
