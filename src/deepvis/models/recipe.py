"""A model's recipe: the ``load_model`` arguments that made it, with every file as an absolute path, so a store's
manifest can load exactly that model again from any folder (:func:`deepvis.jobs.provenance.model_from_manifest`).

``model.recipe`` (set by :func:`deepvis.load_model`) is JSON data::

    {"spec": "/abs/deploy.prototxt", "arch": null, "weights": "/abs/x.caffemodel", "labels": "imagenet",
     "preprocessing": {"scale": 0.00392157, "mean": "/abs/mean.npy"}, "cwd": "/where/it/was/loaded",
     "files": {"spec": "/abs/deploy.prototxt", "weights": "/abs/x.caffemodel", "mean": "/abs/mean.npy"}}

``files`` names every file the model was read from by its role; :func:`hashed` adds their SHA-256 content hashes
(and a config file's text) when a store records the recipe. A model made in Python from a module or a mean array
has no file to reload from: its recipe says why (``unreloadable``).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

#: Spec prefixes and names that are not paths.
_NOT_PATHS = ("builtin:", "torchvision:", "timm:")
_BUILTINS = ("efficientnet-lite0",)
#: The ``load_model`` arguments a recipe holds (``preprocessing`` is its keyword arguments).
LOAD_KEYS = ("spec", "arch", "weights", "labels", "preprocessing")
_HASHES: dict[tuple, str] = {}


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's content (remembered per path, size and modification time)."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


def _absolute(path: str | Path) -> str:
    return str(Path(path).expanduser().absolute())


def _spec(spec: str, files: dict) -> str:
    """The spec with its file part absolute (the file recorded in ``files``)."""
    if spec.startswith(_NOT_PATHS) or spec in _BUILTINS:
        return spec
    target, colon, factory = spec.rpartition(":")
    if colon and target.endswith(".py"):
        files["spec"] = _absolute(target)
        return f"{files['spec']}:{factory}"
    if colon and not Path(spec).suffix and not Path(spec).expanduser().exists():
        return spec  # package.module:factory, imported from the recipe's cwd
    role = "config" if spec.lower().endswith(".toml") else "spec"
    files[role] = _absolute(spec)
    return files[role]


def _is_numbers(text: str) -> bool:
    try:
        [float(v) for v in text.split(",")]
        return True
    except ValueError:
        return False


def make_recipe(spec, arch, weights, labels, preprocessing: dict) -> dict:
    """The recipe of ``load_model(spec, arch=, weights=, labels=, **preprocessing)``, paths made absolute."""
    if not isinstance(spec, (str, Path)):
        return {"unreloadable": f"the model was made in Python ({type(spec).__name__}), not from a spec"}
    files: dict[str, str] = {}
    recipe = {"spec": _spec(str(spec).strip(), files), "arch": None, "weights": None, "labels": None,
              "preprocessing": {}, "cwd": os.getcwd()}
    if arch is not None:
        recipe["arch"] = _spec(str(arch).strip(), {}) if str(arch).strip().rpartition(":")[0].endswith(".py") \
            else str(arch)
    if weights is not None:
        recipe["weights"] = files["weights"] = _absolute(weights)
    if isinstance(labels, (str, Path)):
        recipe["labels"] = labels if str(labels) == "imagenet" else _absolute(labels)
    elif labels is not None:
        recipe["labels"] = [str(v) for v in labels]
    for key, value in preprocessing.items():
        if isinstance(value, (np.ndarray,)) or hasattr(value, "detach"):
            recipe["unreloadable"] = f"its {key} was given as an array in Python"
            continue
        if key == "mean" and isinstance(value, (str, Path)) and not _is_numbers(str(value)):
            value = files["mean"] = _absolute(value)
        elif isinstance(value, (tuple, list)):
            value = [float(v) if not isinstance(v, (int, np.integer)) else int(v) for v in value]
        elif isinstance(value, Path):
            value = str(value)
        recipe["preprocessing"][key] = value
    recipe["files"] = files
    return recipe


def add_file(recipe: dict | None, role: str, path: str | Path | None) -> None:
    """Record one more file the model was read from (a config's model, weights or mean)."""
    if recipe is not None and path is not None and role not in recipe.get("files", {}):
        recipe.setdefault("files", {})[role] = _absolute(path)


def hashed(recipe: dict | None) -> dict | None:
    """The recipe with each file as ``{"path", "sha256"}`` (a config file with its ``text`` too): what a store
    records. Files that are gone are recorded without a hash."""
    if recipe is None:
        return None
    out = {**recipe, "files": {}}
    for role, path in recipe.get("files", {}).items():
        path = path["path"] if isinstance(path, dict) else path
        entry = {"path": path, "sha256": None}
        try:
            entry["sha256"] = file_sha256(path)
            if role == "config":
                entry["text"] = Path(path).read_text(encoding="utf-8")
        except OSError:
            pass
        out["files"][role] = entry
    return out


def load_arguments(recipe: dict) -> dict:
    """The ``load_model`` keyword arguments of a recipe."""
    arguments = {key: recipe.get(key) for key in LOAD_KEYS if key != "preprocessing"}
    preprocessing = dict(recipe.get("preprocessing") or {})
    if isinstance(preprocessing.get("input_size"), list):
        preprocessing["input_size"] = tuple(preprocessing["input_size"])
    for key in ("std",):
        if isinstance(preprocessing.get(key), list):
            preprocessing[key] = tuple(preprocessing[key])
    if isinstance(preprocessing.get("mean"), list):
        preprocessing["mean"] = tuple(preprocessing["mean"])
    return {**arguments, **preprocessing}


def describe(recipe: dict | None) -> str:
    """``'spec' with weights 'file'`` for messages."""
    if not recipe or "spec" not in recipe:
        return "a model made in Python"
    weights = f" with weights '{recipe['weights']}'" if recipe.get("weights") else ""
    return f"'{recipe['spec']}'{weights}"
