"""The ``unpact`` command line: a thin layer that parses arguments and calls the library.

Each subcommand lives in ``unpact/_cli/<name>.py`` and defines ``register(subparsers)`` which adds
its parser and sets ``func`` (called with the parsed namespace, returning an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

# Subcommand modules, in the order they are listed in ``unpact --help``.
SUBCOMMANDS: tuple[str, ...] = (
    "report",
    "circuit",
    "audit",
    "sweep",
    "attribute",
    "lens",
    "toyworld",
    "unlearn",
    "evaluate",
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every available subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="unpact",
        description="Is an unlearned model's knowledge gone, or only hidden? Trace, diff, attack, audit.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"unpact._cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``unpact`` script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from unpact.errors import UnpactError

    try:
        return int(args.func(args) or 0)
    except UnpactError as exc:  # the user's input: one line, exit 2. Anything else is a bug and keeps its traceback.
        print(f"unpact {args.command}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
