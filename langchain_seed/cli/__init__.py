"""The ``langchain-seed`` command line.

Each subcommand lives in ``langchain_seed/cli/<name>.py`` and exposes
``register(subparsers)`` (adds its parser and sets ``func``) so the commands stay
independent of each other.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

SUBCOMMANDS = ("demo", "tot", "sc", "bench")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every available subcommand."""
    parser = argparse.ArgumentParser(
        prog="langchain-seed",
        description=(
            "Fast Tree-of-Thoughts and self-consistency on a local model "
            "(continuous batching + scheduled speculative decoding)."
        ),
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log engine activity")
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {_version()}", help="print the version"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"langchain_seed.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"langchain_seed.cli.{name}":
                continue
            raise
        module.register(subparsers)
    return parser


def _version() -> str:
    from langchain_seed import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
