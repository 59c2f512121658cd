"""``deepvis attribute``: attribution maps of a unit (Grad-CAM and the others) drawn over each image."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from deepvis.apps.cli.arguments import (UsageError, add_command, check_folder, common_flags, parameter_defaults,
                                       positive_int, ratio, resize_flags, unit, writing)
from deepvis.apps.cli.loading import command_model
from deepvis.engine.attribution import BASELINES, INTEGRATIONS, METHODS, Attribution, attribute
from deepvis.engine.backprop import MODES
from deepvis.pixels.render import save_image

DEFAULTS = parameter_defaults(attribute)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp")


def add_parser(subparsers) -> None:
    p = add_command(subparsers, "attribute", parents=[common_flags(), resize_flags()],
                    description="What a unit's score (a class logit such as classifier:285, a channel's sum, a "
                    "value at @y,x or @cls) draws on in each image, drawn in jet colours over it. -o OUT: a file "
                    "for one image; an existing folder (OUT/<stem>.png) or a pattern with {stem} (e.g. "
                    "cams/{stem}-cam.png) for several. See docs/attribution.md.")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--unit", required=True, type=unit, help="layer:channel, layer:channel@y,x or layer:channel@cls")
    p.add_argument("--method", choices=METHODS, default=DEFAULTS["method"], help="default %(default)s")
    p.add_argument("--layer", metavar="L", help="Grad-CAM layer (default: the last spatial layer before the unit's)")
    p.add_argument("--steps", type=positive_int, default=DEFAULTS["steps"],
                   help="integrated gradients: path points (default %(default)s)")
    p.add_argument("--integration", choices=INTEGRATIONS, default=DEFAULTS["integration"],
                   help="integrated gradients: the rule (default %(default)s)")
    p.add_argument("--baseline", choices=BASELINES, default=DEFAULTS["baseline"],
                   help="integrated gradients: start image (default %(default)s)")
    p.add_argument("--samples", type=positive_int, default=DEFAULTS["samples"],
                   help="SmoothGrad: noisy copies (default %(default)s)")
    p.add_argument("--sigma", type=float, default=DEFAULTS["sigma"],
                   help="SmoothGrad: noise standard deviation as a fraction of the input range (default %(default)s)")
    p.add_argument("--base", choices=MODES, default=DEFAULTS["mode"],
                   help="SmoothGrad: the base mode (default %(default)s)")
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"],
                   help="SmoothGrad noise and uniform baseline seed (default %(default)s)")
    p.add_argument("--batch-size", type=positive_int, default=DEFAULTS["batch_size"],
                   help="rows per forward pass of SmoothGrad and integrated gradients (default %(default)s)")
    p.add_argument("--alpha", type=ratio, default=parameter_defaults(Attribution.overlay)["alpha"], metavar="A",
                   help="opacity of the colour map over the image (default %(default)s)")
    p.add_argument("--npy", action="store_true", help="also save the map (H x W float32) as OUT.npy")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="file, folder, or pattern with {stem}")
    p.set_defaults(run=run)


def outputs(images: list[str], output: str) -> list[Path]:
    """Where each image's overlay goes: OUT itself for one image (a file), OUT/{stem}.png in a folder, or OUT with
    {stem} replaced by each image's file name stem."""
    out = Path(output)
    if "{stem}" in output:
        paths = [Path(output.replace("{stem}", Path(image).stem)) for image in images]
    elif out.is_dir():
        paths = [out / f"{Path(image).stem}.png" for image in images]
    elif len(images) == 1:
        paths = [out]
    else:
        raise UsageError(f"{len(images)} images need -o FOLDER (existing) or a pattern with {{stem}}, got {output!r}")
    if len(set(paths)) != len(paths):
        raise UsageError(f"two images would write the same file under -o {output!r}: their names share a stem")
    for path in paths:
        check_folder(path)
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            raise UsageError(f"output {str(path)!r} needs an image extension such as .png")
    return paths


def run(args: argparse.Namespace) -> int:
    paths = outputs(args.images, args.output)
    model = command_model(args)
    for image, path in zip(args.images, paths):
        result = attribute(model, image, args.unit, args.method, layer=args.layer, steps=args.steps,
                           samples=args.samples, sigma=args.sigma, mode=args.base, baseline=args.baseline,
                           integration=args.integration, seed=args.seed, batch_size=args.batch_size,
                           resize=args.resize)
        with writing(path):
            save_image(result.overlay(args.alpha), path)
            if args.npy:
                np.save(path.with_suffix(".npy"), result.map)
        if not args.quiet:
            settings = ", ".join(f"{k} {v}" for k, v in result.settings.items())
            print(f"wrote {path}{' (+ .npy)' if args.npy else ''}: {args.method} of {result.unit}"
                  f"{f' ({settings})' if settings else ''}")
    return 0
