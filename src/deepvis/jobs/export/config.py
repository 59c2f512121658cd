"""An export's settings (:class:`ExportConfig`, the one place for their defaults), what it wrote
(:class:`ExportReport`), and the fixed encoding settings every site records."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

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


@dataclass(frozen=True)
class ExportConfig:
    """What to export and how: every setting of :func:`~deepvis.jobs.export.export_site` with its default (the CLI's
    ``deepvis export`` flags take theirs from here).

    ``layers``: the store's layers to export (None: all of them, in the store's order); ``channels``: only these
    channels, where a layer has them (None: all); ``title``: the site's title (None: ``deepvis · MODEL``);
    ``progress``: show a progress bar.
    """

    layers: tuple[str, ...] | None = None
    channels: tuple[int, ...] | None = None
    title: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:  # lists and ranges are accepted, kept as tuples (the config stays immutable)
        object.__setattr__(self, "layers", _tuple(self.layers))
        object.__setattr__(self, "channels", _tuple(self.channels))


def _tuple(values: Iterable | None) -> tuple | None:
    return None if values is None else tuple(values)


@dataclass(frozen=True)
class ExportReport:
    """What an export wrote: ``site`` (the folder, also :attr:`path`), HTML pages, units (one page each), units whose
    pictures were encoded (the others' were current, or they have none), bytes, seconds."""

    site: Path
    units: int
    encoded: int
    bytes_total: int
    bytes_units: int
    seconds: float
    layers: list[str] = field(default_factory=list)
    pages: int = 0

    @property
    def path(self) -> Path:
        """The site folder (:attr:`site`)."""
        return self.site

    @property
    def bytes_per_unit(self) -> float:
        """A unit's page and pictures, on average."""
        return self.bytes_units / self.units if self.units else 0.0

    @property
    def seconds_per_1000_units(self) -> float:
        """The export's time for a thousand units, at this one's pace."""
        return self.seconds / self.units * 1000 if self.units else 0.0

    def summary(self) -> str:
        """One line for the CLI: units, layers, where, bytes per unit and time per 1000 units."""
        return (f"exported {self.units} units of {len(self.layers)} layers into {self.site} "
                f"(pictures of {self.encoded} units encoded, the others current or without pictures): "
                f"{self.bytes_total / 1e6:.2f} MB, "
                f"{self.bytes_per_unit / 1e3:.1f} KB per unit (page and pictures), "
                f"{self.seconds_per_1000_units:.1f} s per 1000 units")
