"""The manifest's schema: what a find-max scan was made from (``manifest.json``), typed, with its format check."""

from __future__ import annotations

from dataclasses import dataclass, field

from deepvis.core.errors import DeepvisError

FORMAT_VERSION = 1


@dataclass
class LayerRecord:
    """One scanned layer: its channel count, output shape (C, H, W) or (C,), receptive field (JSON, None where a
    unit sees the whole input), layout (JSON, see :mod:`deepvis.models.layouts`)."""

    channels: int
    shape: list[int]
    receptive_field: dict | None = None
    layout: dict | None = None

    def to_json(self) -> dict:
        data = {"channels": self.channels, "shape": list(self.shape), "receptive_field": self.receptive_field}
        if self.layout is not None:
            data["layout"] = self.layout
        return data

    @classmethod
    def from_json(cls, data: dict) -> "LayerRecord":
        return cls(int(data["channels"]), [int(v) for v in data["shape"]], data.get("receptive_field"),
                   data.get("layout"))


@dataclass
class SkippedImage:
    """An image the scan could not read: its index in ``images.txt``, its path there, and why."""

    index: int
    path: str
    reason: str

    def to_json(self) -> dict:
        return {"index": self.index, "path": self.path, "reason": self.reason}

    @classmethod
    def from_json(cls, data: dict) -> "SkippedImage":
        return cls(int(data["index"]), str(data["path"]), str(data["reason"]))


@dataclass
class Manifest:
    """What a find-max scan was made from: ``manifest.json`` (``format`` is checked when read).

    ``model`` the model spec, ``weights_sha256`` its weights' hash, ``preprocessing`` its JSON, ``image_root`` the
    folder ``images.txt`` is relative to, ``images`` how many, ``k`` images per unit, ``layers`` by name,
    ``skipped`` unreadable images, ``config`` the settings a resumed scan must match, ``provenance`` how it was run,
    ``recipe`` how to load the model again (:mod:`deepvis.models.recipe`: spec, weights, config, mean and labels
    files as absolute paths with their SHA-256 hashes, ``--arch``, every preprocessing setting given; absent in
    stores of older deepvis versions, which still read: format 1 gains only this optional key).
    """

    model: str
    weights_sha256: str
    preprocessing: dict
    image_root: str
    images: int
    k: int
    layers: dict[str, LayerRecord]
    skipped: list[SkippedImage] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    recipe: dict | None = None
    format: int = FORMAT_VERSION

    @property
    def input_size(self) -> tuple[int, int]:
        """The model input size (height, width) the store was made at."""
        return tuple(self.preprocessing["input_size"])

    def to_json(self) -> dict:
        return {"format": self.format, "model": self.model, "weights_sha256": self.weights_sha256,
                "preprocessing": self.preprocessing, "image_root": self.image_root, "images": self.images,
                "k": self.k, "layers": {name: layer.to_json() for name, layer in self.layers.items()},
                "skipped": [s.to_json() for s in self.skipped], "config": self.config, "provenance": self.provenance,
                **({"recipe": self.recipe} if self.recipe is not None else {})}

    @classmethod
    def from_json(cls, data: dict, source: str = "the manifest") -> "Manifest":
        """Read a manifest's JSON; a format newer than this deepvis reads, or a missing field, is a DeepvisError."""
        if not isinstance(data, dict):
            raise DeepvisError(f"{source} is not a deepvis manifest (not a JSON object)")
        version = data.get("format", 1)
        if not isinstance(version, int) or version < 1:
            raise DeepvisError(f"{source} has an unknown format {version!r}")
        if version > FORMAT_VERSION:
            raise DeepvisError(f"{source} was written in store format {version} by a newer deepvis; this one reads "
                               f"format {FORMAT_VERSION} and older: upgrade deepvis (pip install -U deepvis)")
        try:
            return cls(model=data["model"], weights_sha256=data["weights_sha256"],
                       preprocessing=data["preprocessing"], image_root=data["image_root"], images=int(data["images"]),
                       k=int(data["k"]),
                       layers={name: LayerRecord.from_json(v) for name, v in data["layers"].items()},
                       skipped=[SkippedImage.from_json(s) for s in data.get("skipped", [])],
                       config=data.get("config", {}), provenance=data.get("provenance", {}),
                       recipe=data.get("recipe"), format=version)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DeepvisError(f"{source} is damaged ({type(exc).__name__}: {exc}): make the store again with "
                               "deepvis find-max") from None
