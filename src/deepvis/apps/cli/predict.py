"""``deepvis predict``: top-k class predictions for images."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from deepvis.apps.cli.arguments import (UsageError, add_command, common_flags, parameter_defaults, positive_int,
                                       resize_flags)
from deepvis.apps.cli.loading import command_model
from deepvis.core.errors import DeepvisError, one_line
from deepvis.engine.predict import predict_images
from deepvis.pixels.images import image_arguments

DEFAULTS = parameter_defaults(predict_images)


def add_parser(subparsers) -> None:
    p = add_command(subparsers, "predict", parents=[common_flags(), resize_flags()])
    p.add_argument("images", nargs="*", metavar="IMAGE")
    p.add_argument("--samples", action="store_true", help="also predict the bundled sample images")
    p.add_argument("--top", type=positive_int, default=DEFAULTS["top"],
                   help="how many classes (default %(default)s)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    images = image_arguments(args.images, samples=args.samples)
    if not images:
        raise UsageError("give at least one IMAGE, or --samples for the bundled sample images")
    failures = []

    def report(_image: str, exc: DeepvisError) -> None:  # each bad image on its own line; the others still go
        failures.append(exc)
        print(f"deepvis: error: {one_line(exc)}", file=sys.stderr)

    predicted = predict_images(command_model(args), images, top=args.top, resize=args.resize, on_error=report)
    # the bundled samples are named by file name, the user's images as given
    results = [{"image": Path(image).name if args.samples and image not in args.images else image,
                "top": [p.to_json() for p in top]} for image, top in predicted]
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for result in results:
            print(result["image"])
            for p in result["top"]:
                print(f"  {p['prob']:7.2%}  {p['index']:4d}  {p['label']}")
    return 1 if failures else 0
