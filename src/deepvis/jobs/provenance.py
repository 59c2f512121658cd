"""What a store was made by: the model it records (weights hash, preprocessing, the recipe that reloads it), the
check that refuses another model, and reloading the store's own model."""

from __future__ import annotations

import contextlib
import json
import sys
import warnings
from pathlib import Path

from deepvis.core.errors import DeepvisError
from deepvis.models import load_model
from deepvis.models.model import weights_hash
from deepvis.models.recipe import describe, file_sha256, load_arguments
from deepvis.store import Manifest, Store

def model_differences(manifest: Manifest, model, network: str | None = None) -> list[str]:
    """How ``model`` differs from the model a store was made by: its network (weights hash; ``network`` when the
    caller has it already) and preprocessing."""
    differences = []
    network = network or weights_hash(model)
    if network != manifest.weights_sha256:
        random = " (random weights: no --weights given)" if getattr(model, "random_weights", False) else ""
        differences.append(f"weights (network hash {network}{random}, the store's {manifest.weights_sha256})")
    now = json.loads(json.dumps(model.preprocessing.to_json()))
    for key in sorted(set(now) | set(manifest.preprocessing)):
        if now.get(key) != manifest.preprocessing.get(key):
            differences.append(f"{key} {json.dumps(now.get(key))} (the store's {json.dumps(manifest.preprocessing.get(key))})")
    return differences


def _made_by(manifest: Manifest) -> str:
    made = describe(manifest.recipe) if manifest.recipe else repr(manifest.model)
    return f"{made} (network hash {manifest.weights_sha256})"


def check_model(store: "Store | str | Path", model, force: bool = False, manifest: Manifest | None = None,
                network: str | None = None) -> None:
    """Refuse (a :class:`DeepvisError` naming what differs) a model other than the one the store was made by, unless
    ``force`` (then a warning). ``network``: the model's weights hash, when the caller has it already."""
    store = store if isinstance(store, Store) else Store(store)
    manifest = manifest or store.read_manifest()
    differences = model_differences(manifest, model, network)
    if not differences:
        return
    message = (f"the store '{store.root}' was made by {_made_by(manifest)}; the model given differs in "
               f"{'; '.join(differences)}")
    if not force:
        raise DeepvisError(f"{message}: leave out --model to use the store's own model, or add --force to use this "
                           "one anyway")
    warnings.warn(f"{message} (used anyway: --force)", stacklevel=2)


def model_from_manifest(store: "Store | str | Path", device: str = "cpu", force: bool = False,
                        manifest: Manifest | None = None, **overrides):
    """Load the model a store was made by, from its manifest's recipe (files checked against their recorded hashes
    first, the loaded network against the store's weights hash after); ``overrides`` (``load_model`` arguments, e.g.
    ``weights=``) replace the recipe's. A missing or changed file, or a different network, is a
    :class:`DeepvisError` naming it, unless ``force``. A store of an older deepvis has no recipe: its recorded spec
    and input size are tried, and the network checked. ``manifest``: the store's, when the caller has read it."""
    store = store if isinstance(store, Store) else Store(store)
    manifest = manifest or store.read_manifest()
    recipe = manifest.recipe
    cwd = None
    if recipe is None:
        arguments = {"spec": manifest.model, "input_size": tuple(manifest.input_size)}
        path = Path(manifest.model)
        if path.suffix and not path.expanduser().exists():
            raise DeepvisError(
                f"the store '{store.root}' (made by an older deepvis) names its model only as '{manifest.model}', "
                "relative to the folder find-max ran in, without its weights or preprocessing: give them with "
                "--model, --weights and the preprocessing flags it was made with")
    elif recipe.get("unreloadable"):
        raise DeepvisError(f"the store '{store.root}' was made by a model that cannot be loaded again "
                           f"({recipe['unreloadable']}): give it with --model")
    else:
        changed = []
        for role, entry in recipe.get("files", {}).items():
            path = Path(entry["path"] if isinstance(entry, dict) else entry)
            if role in overrides or (role == "spec" and "spec" in overrides):
                continue
            if not path.is_file():
                raise DeepvisError(f"the {role} file '{path}' the store '{store.root}' was made with is missing "
                                   f"(model {describe(recipe)}): restore it, or give the model with --model")
            if isinstance(entry, dict) and entry.get("sha256") and file_sha256(path) != entry["sha256"]:
                changed.append(f"{role} file '{path}' (sha256 {file_sha256(path)[:12]}, recorded "
                               f"{entry['sha256'][:12]})")
        if changed and not force:
            raise DeepvisError(f"the store '{store.root}' was made by {describe(recipe)}, but its "
                               f"{'; '.join(changed)} changed since: add --force to use the files as they are now, "
                               "or make the store again")
        arguments = load_arguments(recipe)
        cwd = recipe.get("cwd")
    arguments.update(overrides)
    spec = arguments.pop("spec")
    with contextlib.ExitStack() as stack:
        if cwd and cwd not in sys.path:  # a module.path:factory spec imports from where the store was made
            sys.path.append(cwd)
            stack.callback(lambda: cwd in sys.path and sys.path.remove(cwd))
        model = load_model(spec, device=device, **arguments)
    check_model(store, model, force=force, manifest=manifest)
    return model
