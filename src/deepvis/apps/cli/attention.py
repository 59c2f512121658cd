"""``deepvis attention``: what a token of a vision transformer attends to, or its attention rollout."""

from __future__ import annotations

import argparse

from deepvis.apps.cli.arguments import (add_command, check_folder, common_flags, output_image, parameter_defaults,
                                       ratio, resize_flags, writing)
from deepvis.apps.cli.loading import command_model
from deepvis.engine.attention import AttentionMap, attention_map
from deepvis.pixels.render import save_image

DEFAULTS = parameter_defaults(attention_map)


def add_parser(subparsers) -> None:
    p = add_command(subparsers, "attention", parents=[common_flags(), resize_flags()],
                    description="Attention probabilities recorded during one forward pass (calls of "
                    "F.scaled_dot_product_attention and nn.MultiheadAttention), drawn over the input image. "
                    "Without --rollout: one layer's attention row of the token (one head, or the heads fused). "
                    "With --rollout: Abnar & Zuidema's rollout through the layers up to --layer.")
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("--layer", metavar="L", help="an attention layer (default: the last; an unknown name lists them)")
    p.add_argument("--head", type=int, metavar="H", help="one head (default: the heads fused by --head-fusion)")
    p.add_argument("--token", type=int, default=DEFAULTS["token"], metavar="T",
                   help="the token whose attention is shown (default %(default)s: the CLS token)")
    p.add_argument("--rollout", action="store_true", help="attention rollout through the layers up to --layer")
    p.add_argument("--head-fusion", choices=["mean", "max", "min"], default=DEFAULTS["head_fusion"],
                   help="how heads are fused (default %(default)s)")
    p.add_argument("--discard", type=ratio, default=DEFAULTS["discard"], metavar="R",
                   help="rollout: drop this fraction of each layer's lowest attentions (default %(default)g)")
    p.add_argument("--alpha", type=ratio, default=parameter_defaults(AttentionMap.overlay)["alpha"], metavar="A",
                   help="opacity of the colour map over the image (default %(default)s)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.png", type=output_image)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    check_folder(args.output)
    result = attention_map(command_model(args), args.image, layer=args.layer, head=args.head, token=args.token,
                           rollout=args.rollout, head_fusion=args.head_fusion, discard=args.discard,
                           resize=args.resize)
    with writing(args.output):
        save_image(result.overlay(args.alpha), args.output)
    if not args.quiet:
        what = (f"rollout of token {result.token} up to {result.layer} ({result.head_fusion} of heads"
                f"{f', discard {result.discard:g}' if result.discard else ''})" if result.rollout else
                f"attention of token {result.token} at {result.layer}, "
                f"{f'head {result.head}' if result.head is not None else f'{result.head_fusion} of heads'}")
        gh, gw = result.map.shape
        print(f"wrote {args.output}: {what}, {gh}x{gw} patch grid, {result.extra_tokens} extra tokens")
    return 0
