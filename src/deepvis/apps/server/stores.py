"""What the toolbox needs to know about its store: whether it can serve it, the images it was made from, and the
hint that names the commands making a unit's missing pictures."""

from __future__ import annotations

from pathlib import Path

from deepvis.core.errors import DeepvisError
from deepvis.store import Store


def store_hint(store: Store | None, layer: str, channel: int) -> str:
    """What is missing for a unit's pictures, and the command that makes each."""
    if store is None:
        return (f"not computed yet — run `deepvis find-max IMAGES --out STORE --layers {layer}` "
                f"then `deepvis crops STORE --layers {layer}`, and/or `deepvis optimize --out STORE --layers "
                f"{layer}`, and restart with `deepvis serve --store STORE`")
    root = store.root
    try:
        scanned = store.exists() and layer in store.read_manifest().layers
    except DeepvisError:
        scanned = False
    steps = []
    if not scanned:
        steps.append(f"the store has no top-k images of layer {layer}: run `deepvis find-max IMAGES --out "
                     f"{root} --layers {layer} ...` (--force: a new scan, with every layer it should hold)")
    else:
        steps.append(f"no crops of {layer}:{channel}: run `deepvis crops {root} --layers {layer}`")
    steps.append(f"no optimized image: run `deepvis optimize --out {root} --layers {layer}`")
    return "not computed yet — " + "; ".join(steps)


def check_store(store: Store) -> None:
    """A store to serve must be there and hold something: a manifest, per-unit pictures (an optimize-only store),
    or the original toolbox's unit_jpg_vis layout."""
    if not store.root.is_dir():
        raise DeepvisError(f"store '{store.root}' not found: give the folder deepvis find-max --out wrote")
    if not store.exists() and not store.has_pictures():
        raise DeepvisError(f"'{store.root}' is not a deepvis store (no manifest.json, no per-unit pictures): make "
                           f"one with deepvis find-max IMAGES --out {store.root}")


def store_images(store: Store) -> tuple[Path, list[Path]] | None:
    """The image root and images a store was made from (its manifest and images.txt), or None."""
    if not store.exists():
        return None
    manifest = store.read_manifest()
    skipped = {entry.index for entry in manifest.skipped}
    root = Path(manifest.image_root)
    files = [root / p for n, p in enumerate(store.read_image_list()) if n not in skipped]
    return (root, files) if files else None
