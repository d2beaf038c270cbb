"""``python -m logdata``: one registry of subcommands.

Each entry of :data:`COMMANDS` maps a subcommand name to a module exposing
``register(subparsers) -> None``, which adds its parser with ``set_defaults(func=...)``; ``func``
takes the parsed arguments and returns an exit status. Modules are imported lazily, so adding a
subcommand is one line here.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from logdata.cliargs import add_flag, new_parser
from logdata.errors import EXIT_USAGE, LogDataError, run_cli

COMMANDS: dict[str, str] = {
    "prepare": "logdata.templates.prepare",
    "parse": "logdata.parse",
    "patch": "logdata.templates.patch",
    "build": "logdata.templates.build",
    "synthetic": "logdata.synthetic",
    "sequences": "logdata.keyseq.sequences",
    "rationales": "verl_recipes.local.chat.rationales",
}


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    """Return the top-level parser; only the requested subcommand's module is imported."""
    parser = new_parser("python -m logdata",
                        "LogRL data stage: raw logs → templates → labels → VeRL parquet.")
    add_flag(parser, "-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="{" + ",".join(COMMANDS) + "}")
    wanted = [a for a in argv if a in COMMANDS][:1] or list(COMMANDS)
    for name in COMMANDS:
        if name in wanted:
            importlib.import_module(COMMANDS[name]).register(subparsers)
        else:
            subparsers.add_parser(name, help=f"(see: python -m logdata {name} --help)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; a :class:`LogDataError` or ``OSError`` becomes ``error: <message>`` and status 2.

    Any other exception is one line too (``error: <Type>: <message>``, status 1; ``-v`` logs its
    traceback).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    return run_cli(lambda: args.func(args), (LogDataError, OSError))
