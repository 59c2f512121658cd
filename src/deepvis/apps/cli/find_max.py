"""``deepvis find-max``: the dataset images that excite each unit most, into a store."""

from __future__ import annotations

import argparse
import sys

from deepvis.apps.cli.arguments import add_command, common_flags, positive_int
from deepvis.apps.cli.loading import command_model, store_model
from deepvis.jobs.findmax import FindMaxConfig, FindMaxReport, run_find_max
from deepvis.store import Store


def add_parser(subparsers) -> None:
    p = add_command(subparsers, "find-max", parents=[common_flags()])
    p.add_argument("images", metavar="IMAGES", help="a folder of images (recursive) or a list file")
    p.add_argument("--out", required=True, metavar="STORE", help="the store directory to write")
    p.add_argument("--layers", nargs="+", metavar="L", help="layers to scan (default: the model's default layers)")
    p.add_argument("--k", type=positive_int, default=FindMaxConfig.k, help="images kept per unit (default %(default)s)")
    p.add_argument("--batch-size", type=positive_int, default=FindMaxConfig.batch_size)
    p.add_argument("--workers", type=int, default=FindMaxConfig.workers,
                   help="image-decoding worker processes (default %(default)s)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted scan")
    p.add_argument("--force", action="store_true", help="replace an existing store (re-scanned with its own model "
                   "and layers unless --model / --layers) or interrupted scan")
    p.add_argument("--checkpoint-every", type=positive_int, default=FindMaxConfig.checkpoint_every, metavar="N",
                   help="save progress every N images (default %(default)s)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    store = Store(args.out)
    manifest = store.read_manifest() if args.model is None and args.force and store.exists() else None
    layers = args.layers
    if manifest is not None:
        # a re-scan keeps what made the store (its model, from the manifest's recipe, and its layers), as every
        # later command does; --model scans with another
        model = store_model(args, store, force=True, manifest=manifest)
        layers = layers or list(manifest.layers)
        if not args.quiet:
            print(f"find-max: re-scanning the store with {'its model' if args.layers else 'its model and layers'} "
                  f"('{model.spec}'; --model, --layers change them)", file=sys.stderr, flush=True)
    else:
        model = command_model(args)
    config = FindMaxConfig(args.images, args.out, layers=layers, k=args.k, batch_size=args.batch_size,
                           workers=args.workers, resume=args.resume, force=args.force,
                           checkpoint_every=args.checkpoint_every, progress=not args.quiet)
    print_report(run_find_max(model, config, manifest=manifest), args.quiet)
    return 0


def print_report(report: FindMaxReport, quiet: bool) -> None:
    """What the scan removed as stale (stderr, always), and what the store holds (rank 0, unless -q)."""
    if any(report.removed.values()):
        print(f"find-max: removed what the new scan made stale: crops of {report.removed['crops']} units, optimized "
              f"images of {report.removed['optimized']} units (deepvis crops / optimize redo them)", file=sys.stderr)
    if report.rank == 0 and not quiet:
        print(f"wrote {report.store.root}: top-{report.k} of {report.images} images for {len(report.layers)} layers; "
              f"{report.skipped} images skipped")

