"""``deepvis crops``: each unit's receptive-field crops of its top images and their backward images."""

from __future__ import annotations

import argparse

from deepvis.apps.cli.arguments import add_command, channel_range, common_flags
from deepvis.apps.cli.loading import store_model
from deepvis.jobs.crops import default_kinds, make_crops
from deepvis.store import Store


def add_parser(subparsers) -> None:
    p = add_command(subparsers, "crops", parents=[common_flags()])
    p.add_argument("store", metavar="STORE")
    p.add_argument("--layers", nargs="+", metavar="L", help="layers (default: all in the store)")
    p.add_argument("--kinds", nargs="+", choices=["image", "deconv", "gradient", "guided"],
                   help="pictures to make (default: image deconv for a network with max pooling, else image guided: "
                        "deconv without max-pooling switches looks the same for every image)")
    p.add_argument("--units", metavar="FIRST-LAST", type=channel_range, help="only these channels, e.g. 0-63")
    p.add_argument("--force", action="store_true",
                   help="rewrite units already written, and use --model even where it is not the store's model")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    store = Store(args.store)
    manifest = store.read_manifest()  # a clear error for a folder that is not a store, before any model loads
    model = store_model(args, store, force=args.force, manifest=manifest)
    kinds = tuple(args.kinds) if args.kinds else default_kinds(model)
    make_crops(model, args.store, layers=args.layers, kinds=kinds, channels=args.units, force=args.force,
               progress=not args.quiet)
    if not args.quiet:
        print(f"wrote crops ({', '.join(kinds)}) into {args.store}")
    return 0
