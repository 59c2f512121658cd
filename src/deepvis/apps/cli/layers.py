"""``deepvis layers``: the model's layers, shapes, flags and receptive fields."""

from __future__ import annotations

import argparse
import json
import sys

from deepvis.apps.cli.arguments import add_command, common_flags
from deepvis.apps.cli.loading import command_model
from deepvis.engine.receptive_field import receptive_fields


def add_parser(subparsers) -> None:
    p = add_command(subparsers, "layers", parents=[common_flags()])
    p.add_argument("--all", action="store_true", help="every layer, not only the default ones")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    model = command_model(args)
    infos = [i for i in model.layers() if (args.all or i.default) and i.probeable]
    # Growing the input until deep fields fit costs seconds per layer: only for the default layers.
    fields = receptive_fields(model, [i.name for i in infos],
                              max_input=max(model.preprocessing.input_size) if args.all else 1024)
    for info in infos:
        field = fields.get(info.name)
        info.receptive_field = field.to_json() if field is not None else None
    if args.json:
        print(json.dumps([i.to_json() for i in infos], indent=2))
        return 0
    width = max((len(i.name) for i in infos), default=5)
    for info in infos:
        field = info.receptive_field
        rf = f"rf {'>=' if field.get('clipped') else ''}{field['size']} stride {field['stride']}" if field else ""
        print(f"{info.name:<{width}}  {info.type:<18} {info.describe():<20} {rf or 'whole input'}")
    if not args.all:
        print(f"({len(infos)} default layers of {len(model.layers())}; --all lists every layer; layout and channels x "
              "height x width (+E: extra tokens such as CLS); rf: receptive field size and stride in input pixels, "
              "'>=' where larger than the largest input tried)", file=sys.stderr)
    return 0
