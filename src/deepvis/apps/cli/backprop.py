"""``deepvis backprop``: a gradient, deconv or guided-backprop image of a unit with respect to the input."""

from __future__ import annotations

import argparse

from deepvis.apps.cli.arguments import (UsageError, add_command, check_folder, common_flags, output_image,
                                       parameter_defaults, resize_flags, unit, writing)
from deepvis.apps.cli.loading import command_model
from deepvis.engine.backprop import MODES, SIGNALS, BackpropResult, backprop
from deepvis.pixels.render import FILTERS, save_image

DEFAULTS = parameter_defaults(backprop)


def add_parser(subparsers) -> None:
    p = add_command(subparsers, "backprop", parents=[common_flags(), resize_flags()])
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("--unit", required=True, type=unit, help="layer:channel or layer:channel@y,x")
    p.add_argument("--mode", choices=MODES, default=DEFAULTS["mode"])
    p.add_argument("--filter", choices=FILTERS, default=parameter_defaults(BackpropResult.image)["filter"])
    p.add_argument("--signal", choices=SIGNALS, default=None,
                   help="start from the unit's whole activation map (default) or a one-hot at its maximum")
    p.add_argument("-o", "--output", required=True, metavar="OUT.png", type=output_image)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.signal is not None and args.unit.position is not None:
        raise UsageError(f"--signal {args.signal} does not apply to '{args.unit}': a unit with @y,x starts from a "
                         "one-hot at that position")
    check_folder(args.output)
    result = backprop(command_model(args), args.image, args.unit, mode=args.mode,
                      signal=args.signal or DEFAULTS["signal"], resize=args.resize)
    with writing(args.output):
        save_image(result.image(args.filter), args.output)
    note = ""
    if args.mode != "gradient" and result.rectifiers_modified == 0:
        note = (f" (warning: no rectifier lies between the input and {result.unit.layer}, so {args.mode} equals the "
                "plain gradient here)")
    if not args.quiet:
        print(f"wrote {args.output}: {args.mode} of {result.unit} ({result.signal}), filter {args.filter}, "
              f"{result.rectifiers_modified} rectifier ops modified{note}")
    return 0
