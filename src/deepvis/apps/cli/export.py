"""``deepvis export``: a static, shareable site of a store, one page per unit."""

from __future__ import annotations

import argparse
import warnings

from deepvis.apps.cli.arguments import add_command, channel_range, common_flags
from deepvis.apps.cli.loading import store_model
from deepvis.core.errors import DeepvisError, one_line
from deepvis.jobs.export import export_site
from deepvis.store import Store


def add_parser(subparsers) -> None:
    p = add_command(subparsers, "export", parents=[common_flags()],
                    description="Write a folder of HTML, CSS, a little JS and the store's pictures (re-encoded "
                    "once) that opens from disk or any static host. Rerunning on an unchanged store changes no "
                    "file; an interrupted export resumes.")
    p.add_argument("store", metavar="STORE")
    p.add_argument("--out", metavar="SITE", help="the site folder (default STORE/site, which deepvis serve --store "
                   "STORE links from each unit)")
    p.add_argument("--title", help="the site's title (default: deepvis · MODEL)")
    p.add_argument("--layers", nargs="+", metavar="L", help="layers (default: all in the store)")
    p.add_argument("--units", metavar="FIRST-LAST", type=channel_range, help="only these channels, e.g. 0-63")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    store = Store(args.store)
    manifest = store.read_manifest()  # a clear error for a folder that is not a store, before any model loads
    try:  # the store's model gives the labels of label layers; a site without them is still a site
        model = store_model(args, store, manifest=manifest)
    except DeepvisError as exc:
        warnings.warn(f"exporting without labels: the store's model does not load ({one_line(exc)})")
        model = None
    report = export_site(store, args.out or store.site_path, layers=args.layers, channels=args.units,
                         title=args.title, model=model, progress=not args.quiet)
    if not args.quiet:
        print(report.summary())
    return 0
