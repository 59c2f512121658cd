"""``deepvis evaluate``: quality measures of a store's optimized images, per layer and method."""

from __future__ import annotations

import argparse
import json

from deepvis.apps.cli.arguments import add_command, common_flags
from deepvis.apps.cli.loading import store_model
from deepvis.jobs.evaluate import EvaluateConfig, EvaluateReport, run_evaluate
from deepvis.store import Store


def add_parser(subparsers) -> None:
    p = add_command(subparsers, "evaluate", parents=[common_flags()],
                    description="Per unit and method: activation relative to the best dataset example, "
                    "plausibility (penultimate-feature similarity to the unit's top-k crops, against random "
                    "crops), path similarity to the top-k images, spectral slope. Writes <layer>/evaluation.json "
                    "into STORE. See docs/optimize.md.")
    p.add_argument("store", metavar="STORE", help="a find-max store (with optimized images)")
    p.add_argument("--layers", nargs="+", metavar="L", help="layers (default: all in the store)")
    p.add_argument("--compare", nargs="+", default=EvaluateConfig.others, metavar="OTHER",
                   help="optimize-only stores of other methods to score too")
    p.add_argument("--seed", type=int, default=EvaluateConfig.seed,
                   help="seed of the random baseline crops (default %(default)s)")
    p.add_argument("--json", action="store_true", help="medians and costs as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    store = Store(args.store)
    manifest = store.read_manifest()  # a clear error for a folder that is not a store, before any model loads
    model = store_model(args, store, manifest=manifest)
    report = run_evaluate(model, EvaluateConfig(args.store, layers=args.layers, others=args.compare, seed=args.seed))
    if args.json:
        print(json.dumps({layer: {k: v for k, v in e.items() if k != "units"} for layer, e in
                          report.evaluations.items()}, indent=1))
    elif not args.quiet:
        print_report(report)
    return 0


def print_report(report: EvaluateReport) -> None:
    """The medians' table, then each layer's cost beside the optimize time it evaluates."""
    print(report.table())
    for layer, evaluation in report.evaluations.items():
        share = f"{100 * evaluation['share']:.1f}% of" if evaluation["share"] is not None else "(no record of)"
        print(f"{layer}: evaluated in {evaluation['seconds']:.1f} s, {share} the optimize time "
              f"({evaluation['optimize_seconds']:.1f} s); natural slope {evaluation['natural_slope']:.2f}")
