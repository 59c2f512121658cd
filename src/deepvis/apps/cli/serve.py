"""``deepvis serve``: the live toolbox in the browser. The only command that loads the server stack (starlette,
uvicorn): ``deepvis`` imports a command's module only when it runs that command."""

from __future__ import annotations

import argparse
import ipaddress
import sys
import webbrowser
from pathlib import Path

import uvicorn

from deepvis.apps.cli.arguments import add_command, common_flags
from deepvis.apps.cli.loading import command_model, store_model
from deepvis.apps.server.app import create_app
from deepvis.apps.server.compute import Compute
from deepvis.apps.server.session import Toolbox
from deepvis.core.errors import DeepvisError
from deepvis.store import Store


def add_parser(subparsers) -> None:
    p = add_command(subparsers, "serve", parents=[common_flags()])
    p.add_argument("--images", metavar="DIR|LIST",
                   help="a folder of images or a list file (default: the store's images with --store, else the "
                        "bundled samples)")
    p.add_argument("--layers", nargs="+", metavar="L", help="layers to show (default: the model's default layers; "
                   "e.g. the bundled model's linear block outputs blocks.0 ... blocks.15)")
    p.add_argument("--store", metavar="STORE", help="precomputed per-unit images (deepvis find-max / optimize); its "
                   "model is used unless --model is given")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--open", action="store_true", help="open the toolbox in a web browser")
    p.add_argument("--force", action="store_true", help="with --store: use --model even where it is not the model "
                   "the store was made by")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    compute = Compute()  # the one thread that runs torch: loading the model and its catalog included
    if args.store is not None:
        store = Store(Path(args.store).expanduser())
        if not store.root.is_dir():
            raise DeepvisError(f"store '{args.store}' not found: give the folder deepvis find-max --out wrote")
        model = compute.run(lambda: store_model(args, store.root, force=args.force))
    else:
        model = compute.run(command_model, args)
    toolbox = compute.run(lambda: Toolbox(model, images=args.images, store=args.store,
                                          store_images=args.images is None, layers=args.layers))
    url, loopback = _url(args.host, args.port)
    print(f"deepvis: {model.spec}, {len(toolbox.image_files)} images, {len(toolbox.layers)} layers; "
          f"open {url}  (Ctrl-C stops)", flush=True)
    if not loopback:
        print(f"deepvis: warning: listening on {args.host}, not only this machine: anyone who can reach port "
              f"{args.port} can use the toolbox and upload images", file=sys.stderr, flush=True)
    if args.open:
        webbrowser.open(url)
    uvicorn.run(create_app(toolbox, compute), host=args.host, port=args.port, log_level="warning")
    return 0


def _url(host: str, port: int) -> tuple[str, bool]:
    """The toolbox's address to open, and whether ``host`` is this machine only."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    url_host = host if loopback else "127.0.0.1" if host in ("0.0.0.0", "::") else host
    return f"http://{'[' + url_host + ']' if ':' in url_host else url_host}:{port}/", loopback
