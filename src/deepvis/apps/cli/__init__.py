"""The ``deepvis`` command: thin glue from argparse to the public API, one module per command
(:mod:`deepvis.apps.cli.commands` lists them; :func:`main` runs one)."""

from __future__ import annotations

from deepvis.apps.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
