"""``deepvis``: parse the command line, run one command, and turn what goes wrong into one line and an exit status
(2: a usage mistake, 1: any other error, 130: interrupted; -v: the traceback instead)."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import sys
import warnings
from typing import Iterable, Iterator, Sequence

from deepvis.apps.cli.arguments import Parser, UsageError
from deepvis.apps.cli.commands import COMMANDS
from deepvis.core.errors import DeepvisError, one_line
from deepvis.core.version import __version__
from deepvis.pixels.images import max_pixels, set_max_pixels


def build_parser(commands: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """The parser of ``deepvis``: each command in ``commands`` (default: all) with its flags, imported from its
    module (:data:`COMMANDS`); the others by name and summary only, so a run loads one command's libraries."""
    loaded = set(COMMANDS if commands is None else commands)
    parser = Parser(prog="deepvis", description="Deep Visualization Toolbox for PyTorch.")
    parser.add_argument("--version", action="version", version=f"deepvis {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for name, command in COMMANDS.items():
        if name in loaded:
            importlib.import_module(command.module).add_parser(subparsers)
        else:
            subparsers.add_parser(name, help=command.summary)
    return parser


def _command_named(argv: Sequence[str]) -> str | None:
    """The command on the line: its first word that is no option (``deepvis`` itself takes only -h, --version)."""
    return next((word for word in argv if not word.startswith("-")), None)


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"deepvis: warning: {one_line(message)}", file=sys.stderr if file is None else file)


@contextlib.contextmanager
def _notes_on_stderr(quiet: bool) -> Iterator[None]:
    """The library's notes (``logging`` under ``deepvis``) as plain lines on stderr while a command runs; -q: only
    its warnings."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("deepvis")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``deepvis`` with ``argv`` (default: the process's arguments); returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    name = _command_named(argv)
    args = build_parser([name] if name in COMMANDS else []).parse_args(argv)
    show_warning = warnings.showwarning
    if not args.verbose:
        warnings.showwarning = _one_line_warning  # library warnings on one line, like errors
    pixel_limit = max_pixels()
    try:
        if getattr(args, "max_pixels", None) is not None:
            set_max_pixels(args.max_pixels)
        with _notes_on_stderr(args.quiet):
            return args.run(args)
    except UsageError as exc:
        print(f"deepvis {args.command}: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("deepvis: interrupted", file=sys.stderr)
        return 130
    except (DeepvisError, OSError) as exc:
        if args.verbose:
            raise
        print(f"deepvis: error: {one_line(exc)}", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug, not a user mistake: still one line, the traceback on request
        if args.verbose:
            raise
        print(f"deepvis: internal error: {type(exc).__name__}: {one_line(exc)} (rerun with -v for the traceback)",
              file=sys.stderr)
        return 1
    finally:
        warnings.showwarning = show_warning
        set_max_pixels(pixel_limit)
