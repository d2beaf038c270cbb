"""One flag vocabulary for every command line of the project.

Each concept has one spelling, added by one helper here:

* ``--input``: the file or folder a command reads and transforms (:func:`add_input_flag`);
* ``--out``: what it writes (:func:`add_out_flag`);
* ``--overwrite``: replace an existing output (:func:`add_overwrite_flag`);
* ``--seed``: the random seed (:func:`add_seed_flag`);
* ``--no-progress``: hide progress bars (:func:`add_progress_flag`);
* ``--window``, ``--window-size``, ``--window-step``: log windows (:func:`add_window_flags`).

Every hyphenated long option (``--max-model-len``) also accepts its underscore spelling
(``--max_model_len``), and old spellings stay accepted as ``aliases`` (``--in`` for
``--input``); neither is shown in ``--help``. :class:`HelpFormatter` shows each option's
default. Parsers that :func:`new_parser` and :func:`add_command` build use it.
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: Attribute of an :class:`argparse.Action` holding the option strings ``--help`` leaves out.
HIDDEN = "hidden_option_strings"

#: Window kinds; ``fixed`` (the ``prepare``/``build`` spelling of ``count``) is accepted too.
WINDOW_KINDS: tuple[str, ...] = ("count", "time", "block")
WINDOW_KIND_ALIASES: dict[str, str] = {"fixed": "count"}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each optional flag's default and hides alias spellings from ``--help``."""

    def _get_help_string(self, action: argparse.Action) -> str:
        """The help text plus ``(default: …)`` unless it already speaks of the default."""
        text = action.help or ""
        if (not action.option_strings or action.required or action.default is argparse.SUPPRESS
                or "default" in text.lower()):
            return text
        return f"{text} (default: %(default)s)"

    def _format_action_invocation(self, action: argparse.Action) -> str:
        """The option strings of ``action`` without its hidden aliases."""
        hidden = getattr(action, HIDDEN, ())
        if not hidden:
            return super()._format_action_invocation(action)
        shown = copy.copy(action)
        shown.option_strings = [s for s in action.option_strings if s not in hidden]
        return super()._format_action_invocation(shown)


def new_parser(prog: str | None = None, description: str | None = None) -> argparse.ArgumentParser:
    """Return an :class:`argparse.ArgumentParser` that uses :class:`HelpFormatter`."""
    return argparse.ArgumentParser(prog=prog, description=description,
                                   formatter_class=HelpFormatter)


def add_command(subparsers: Any, name: str, help: str,
                description: str | None = None) -> argparse.ArgumentParser:
    """Add subcommand ``name`` (with :class:`HelpFormatter`) to an ``add_subparsers`` result."""
    return subparsers.add_parser(name, help=help, description=description or help,
                                 formatter_class=HelpFormatter)


def underscore_spelling(name: str) -> str:
    """The underscore spelling of a long option.

    >>> underscore_spelling("--max-model-len")
    '--max_model_len'
    """
    return "--" + name[2:].replace("-", "_")


def add_flag(parser: argparse.ArgumentParser | Any, *names: str, aliases: Sequence[str] = (),
             **kwargs: Any) -> argparse.Action:
    """``parser.add_argument`` that also accepts underscore spellings and old ``aliases``.

    Args:
        parser: A parser or argument group.
        *names: The documented option strings (``"--max-model-len"``, ``"-m"``).
        aliases: Old spellings still accepted (``"--in"``); hidden from ``--help``.
        **kwargs: As for :meth:`argparse.ArgumentParser.add_argument`.

    Returns:
        The new action; its hidden spellings are in its ``hidden_option_strings`` attribute.
    """
    hidden = list(aliases)
    if kwargs.get("action") is not argparse.BooleanOptionalAction:
        hidden += [underscore_spelling(n) for n in [*names, *aliases]
                   if n.startswith("--") and "-" in n[2:]]
    hidden = [h for h in dict.fromkeys(hidden) if h not in names]
    action = parser.add_argument(*names, *hidden, **kwargs)
    setattr(action, HIDDEN, tuple(hidden))
    return action


def add_input_flag(parser: argparse.ArgumentParser, help: str, *, aliases: Sequence[str] = (),
                   required: bool = True, **kwargs: Any) -> argparse.Action:
    """``--input PATH``: the file or folder the command reads (``dest`` ``input`` by default)."""
    kwargs.setdefault("type", Path)
    kwargs.setdefault("metavar", "PATH")
    return add_flag(parser, "--input", aliases=aliases, required=required, help=help, **kwargs)


def add_out_flag(parser: argparse.ArgumentParser, help: str, *, aliases: Sequence[str] = (),
                 required: bool = True, **kwargs: Any) -> argparse.Action:
    """``--out PATH``: what the command writes."""
    kwargs.setdefault("type", Path)
    kwargs.setdefault("metavar", "PATH")
    return add_flag(parser, "--out", aliases=aliases, required=required, help=help, **kwargs)


def add_overwrite_flag(parser: argparse.ArgumentParser, help: str) -> argparse.Action:
    """``--overwrite``: replace an existing output instead of refusing."""
    return add_flag(parser, "--overwrite", action="store_true", help=help)


def add_seed_flag(parser: argparse.ArgumentParser, help: str = "random seed",
                  default: int = 0) -> argparse.Action:
    """``--seed N``."""
    return add_flag(parser, "--seed", type=int, default=default, metavar="N", help=help)


def add_progress_flag(parser: argparse.ArgumentParser,
                      help: str = "hide progress bars") -> argparse.Action:
    """``--no-progress`` (``args.no_progress``)."""
    return add_flag(parser, "--no-progress", action="store_true", help=help)


def window_kind(text: str) -> str:
    """``argparse`` type of ``--window``: the canonical kind (``fixed`` reads as ``count``).

    >>> window_kind("fixed"), window_kind("time")
    ('count', 'time')
    """
    return WINDOW_KIND_ALIASES.get(text, text)


def add_window_flags(parser: argparse.ArgumentParser, *, kind_help: str, size_help: str,
                     step_help: str) -> None:
    """``--window {count,time,block}``, ``--window-size X`` and ``--window-step X``.

    ``--window fixed`` reads as ``count`` and ``--step`` as ``--window-step``; all three
    default to ``None`` (the command's own defaults, which the help texts name).
    """
    add_flag(parser, "--window", type=window_kind, choices=WINDOW_KINDS, default=None,
             help=f"{kind_help}; count: windows of N lines, time: of N seconds, block: one "
                  "per HDFS block")
    add_flag(parser, "--window-size", type=float, default=None, metavar="X", help=size_help)
    add_flag(parser, "--window-step", type=float, default=None, metavar="X", aliases=("--step",),
             help=step_help)
