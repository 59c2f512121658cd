"""``deepvis accentuate``: change a real image just enough to excite a unit (feature accentuation)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from deepvis.apps.cli.arguments import (add_command, common_flags, output_image, parameter_defaults,
                                       positive_int, unit, writing)
from deepvis.apps.cli.loading import command_model
from deepvis.engine.featvis.accentuate import accentuate
from deepvis.pixels.render import save_image

DEFAULTS = parameter_defaults(accentuate)


def add_parser(subparsers) -> None:
    p = add_command(subparsers, "accentuate", parents=[common_flags()])
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("--unit", required=True, type=unit, help="layer:channel or layer:channel@y,x")
    p.add_argument("--objective", choices=["unit", "channel"], default=DEFAULTS["objective"],
                   help="default: unit with @y,x, else the channel's mean")
    p.add_argument("--steps", type=positive_int, default=DEFAULTS["steps"], help="Adam steps (default %(default)s)")
    p.add_argument("--lr", type=float, default=DEFAULTS["lr"], help="Adam learning rate (default %(default)s)")
    p.add_argument("--reg", type=float, default=DEFAULTS["reg"],
                   help="weight of the L2 pull toward the image (default %(default)g)")
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"],
                   help="seed of the crops and noise (default %(default)s)")
    p.add_argument("--json", action="store_true", help="the result as JSON")
    p.add_argument("-o", "--output", required=True, metavar="OUT.png", type=output_image)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    result = accentuate(command_model(args), args.image, args.unit, objective=args.objective, steps=args.steps,
                        lr=args.lr, reg=args.reg, seed=args.seed)
    with writing(args.output):
        save_image(result.image, args.output)
        Path(args.output).with_suffix(".json").write_text(json.dumps(result.to_json(), indent=1), encoding="utf-8")
    if args.json:
        print(json.dumps({k: v for k, v in result.to_json().items() if k != "record"}))
    elif not args.quiet:
        print(f"wrote {args.output}: {result.target} {result.before:.3f} -> {result.after:.3f}, RMS change "
              f"{result.distance:.4f}, path similarity {result.path_similarity:.3f}")
    return 0
