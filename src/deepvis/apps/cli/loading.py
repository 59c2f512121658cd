"""The model a command works with: the one its flags name, or a store's own (from its manifest's recipe)."""

from __future__ import annotations

import argparse
from pathlib import Path

from deepvis.apps.cli.arguments import PREPROCESSING_FLAGS
from deepvis.jobs.provenance import check_model, model_from_manifest
from deepvis.models import DEFAULT_MODEL, Model, load_model
from deepvis.store import Manifest, Store


def command_model(args: argparse.Namespace) -> Model:
    """The model the flags name (--model, default the bundled one; --arch, --weights, --labels, preprocessing)."""
    overrides = {key: getattr(args, key) for key in PREPROCESSING_FLAGS if getattr(args, key, None) is not None}
    return load_model(args.model or DEFAULT_MODEL, device=args.device, arch=getattr(args, "arch", None),
                      weights=getattr(args, "weights", None), labels=getattr(args, "labels", None), **overrides)


def store_model(args: argparse.Namespace, store: str | Path | Store, force: bool = False,
                manifest: Manifest | None = None) -> Model:
    """The model of a command that works on a store: the store's own, loaded from its manifest's recipe (files and
    network checked against its hashes), unless --model is given; other model flags change the recipe's settings.
    Any model other than the store's is refused unless ``force``. A folder without a manifest: the flags' model.
    ``manifest``: the store's, when the command has read it already (read once)."""
    store = store if isinstance(store, Store) else Store(store)
    if manifest is None:
        if not store.exists():
            return command_model(args)
        manifest = store.read_manifest()
    if args.model is None:
        given = {key: getattr(args, key) for key in ("arch", "weights", "labels") + PREPROCESSING_FLAGS
                 if getattr(args, key, None) is not None}
        return model_from_manifest(store, device=args.device, force=force, manifest=manifest, **given)
    if args.input_size is None:
        args.input_size = manifest.input_size
    model = command_model(args)
    check_model(store, model, force=force, manifest=manifest)
    return model
