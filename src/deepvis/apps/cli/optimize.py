"""``deepvis optimize``: synthetic images that maximize units, whole layers into a store or single units into
pictures; one flag per method setting, read from the methods' settings dataclasses."""

from __future__ import annotations

import argparse
import sys

from deepvis.apps.cli.arguments import (UsageError, add_command, channel_range, common_flags, json_object,
                                       output_image, parameter_defaults, positive_int, unit)
from deepvis.apps.cli.loading import command_model, store_model
from deepvis.engine.featvis import DEFAULT_PRESET, METHODS, PRESETS, make_params, optimize_to_files
from deepvis.engine.featvis.methods import Setting, flag_settings
from deepvis.jobs.optimize_store import OptimizeStoreConfig, run_optimize_to_store

_TYPES = {"int": int, "float": float, "float | None": float, "str": str, "dict": json_object}


def add_parser(subparsers) -> None:
    p = add_command(subparsers, "optimize", parents=[common_flags()],
                    description="Whole layers into a store (--out STORE --layers L...), or single units into a "
                    "picture (--unit UNIT -o OUT.png). Method 'paper' is Yosinski et al. 2015's regularized "
                    "optimization in 0-255 pixel space (Table 1 presets); 'modern' a Fourier-space, "
                    "colour-decorrelated image with random transformations; 'maco' (Fel et al. 2023) only the "
                    "Fourier phase, the magnitude fixed to your images' spectrum, crops of a larger canvas.")
    p.add_argument("--out", metavar="STORE", help="the store to write each unit's optimized images into")
    p.add_argument("--layers", nargs="+", metavar="L", help="layers to optimize (with --out)")
    p.add_argument("--units", metavar="FIRST-LAST", type=channel_range, help="only these channels, e.g. 0-63")
    p.add_argument("--unit", nargs="+", type=unit, metavar="UNIT", help="single units, e.g. classifier:285 (with -o)")
    p.add_argument("-o", "--output", metavar="OUT.png", type=output_image, help="picture for --unit")
    p.add_argument("--method", choices=list(METHODS), default=parameter_defaults(make_params)["method"],
                   help="default %(default)s")
    p.add_argument("--preset", choices=list(PRESETS),
                   help=f"Table 1 of the paper (default {DEFAULT_PRESET}); single flags below change single settings")
    p.add_argument("--objective", choices=["unit", "channel"], default=OptimizeStoreConfig.objective,
                   help="unit: the centre position of a conv channel (or @y,x); channel: the channel's mean")
    p.add_argument("--minimize", action="store_true", help="push the unit down instead of up")
    p.add_argument("--batch-size", type=positive_int,
                   help=f"units optimized together (default {OptimizeStoreConfig.batch_size})")
    p.add_argument("--force", action="store_true",
                   help="redo units already in the store, and use --model even where it is not the store's model")
    _add_method_flags(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    _check_targets(args)
    params = make_params(args.method, preset_name=args.preset, **_method_settings(args))
    if args.unit:
        for path, result in optimize_to_files(command_model(args), args.unit, args.output, params,
                                              objective=args.objective):
            if not args.quiet:
                more = f" (+{len(result.extra_images)} copies)" if result.extra_images else ""
                print(f"wrote {path}{more}: {result.target}, best {result.best_obj:.4g} "
                      f"({result.record['meta_result']})")
        return 0
    model = store_model(args, args.out, force=args.force)
    config = OptimizeStoreConfig(args.out, args.layers, params, channels=args.units, objective=args.objective,
                                 batch_size=args.batch_size or OptimizeStoreConfig.batch_size, force=args.force,
                                 progress=not args.quiet)
    report = run_optimize_to_store(model, config)
    for warning in report.warnings:  # where most of a layer's units failed: always shown
        print(f"optimize: warning: {warning}", file=sys.stderr, flush=True)
    if not args.quiet:
        print(f"wrote optimized images of {', '.join(args.layers)} into {args.out}")
    return 0


def _check_targets(args: argparse.Namespace) -> None:
    """Either --out STORE --layers L... or --unit UNIT... -o OUT.png, each with only its own flags."""
    if bool(args.unit) == bool(args.out):
        raise UsageError("give --out STORE with --layers (whole layers into a store), or --unit UNIT -o OUT.png")
    if args.unit and not args.output:
        raise UsageError("--unit needs -o OUT.png")
    if args.out and not args.layers:
        raise UsageError("--out needs --layers L... (the layers to optimize; 'deepvis layers' lists them)")
    store_only = {"--layers": args.layers, "--units": args.units, "--force": args.force or None,
                  "--batch-size": args.batch_size}
    misplaced = [flag for flag, value in store_only.items() if value is not None] if args.unit else \
        (["-o"] if args.output else [])
    if misplaced:
        raise UsageError(f"{misplaced[0]} does not go with {'--unit' if args.unit else '--out'}: --out STORE takes "
                         "--layers/--units/--batch-size/--force, --unit takes -o")


def _method_settings(args: argparse.Namespace) -> dict:
    """The method settings given as flags, checked against ``--method`` (and ``--preset``, ``--minimize``)."""
    method = METHODS[args.method]
    if args.preset and not method.presets:
        raise UsageError(f"--preset applies to --method {' or '.join(m.name for m in METHODS.values() if m.presets)}")
    settings = {}
    for setting in flag_settings():
        value = getattr(args, setting.name)
        if value is None:
            continue
        if method.name not in setting.methods:
            raise UsageError(f"{_flag(setting)} is a setting of the other method (--method "
                             f"{' or '.join(setting.methods)})")
        settings[setting.name] = value
    if args.minimize:
        settings["push_dir"] = -1.0
    return settings


def _flag(setting: Setting) -> str:
    """The flag of a method setting: ``--blur-radius``; a boolean that is on by default turns off: ``--no-fourier``."""
    return f"--{'no-' if setting.type == 'bool' else ''}{setting.name.replace('_', '-')}"


def _add_method_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per method setting (``flag_settings``), in one group per method; unset flags stay ``None`` so only
    the settings given change the defaults."""
    groups = {}
    for method in METHODS.values():
        title = f"{method.name} method settings" + (" (default: the preset's)" if method.presets else "")
        groups[method.name] = parser.add_argument_group(title)
    for setting in flag_settings():
        shared = f"{' and '.join(setting.methods)} methods; " if len(setting.methods) > 1 else ""
        group = groups[setting.methods[0]]
        if setting.type == "bool":
            group.add_argument(_flag(setting), dest=setting.name, action="store_false", default=None,
                               help=setting.help + (f" ({shared.rstrip('; ')})" if shared else ""))
            continue
        kind = positive_int if setting.type == "int" and setting.minimum == 1 else _TYPES[setting.type]
        group.add_argument(_flag(setting), dest=setting.name, type=kind, choices=setting.choices,
                           metavar=setting.metavar, help=f"{setting.help} ({shared}{setting.default})")
