"""``python -m logdata prepare``: parse → patch (optional) → build, in one command.

Writes ``structured.parquet``, ``templates.csv`` (+ ``templates.json``, the reusable template
store), ``train.parquet``, ``val.parquet``, ``test.parquet``, ``sessions_test.parquet`` and
``meta.json`` into ``--out``. Every file is written to a staging folder first and moved into
``--out`` only when all succeeded (``meta.json`` last, with the sha256 of every file): a failed or
interrupted run leaves the previous complete output, or nothing.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from logdata.cliargs import add_command, add_flag
from logdata.formats import resolve_format
from logdata.io import sha256_file
from logdata.parse import PARSE_OUTPUTS, add_input_args, parse_from_args, source_files
from logdata.staging import staged_output
from logdata.templates.build import BUILD_OUTPUTS, add_build_args, build_datasets, params_from_args
from logdata.templates.patch import apply_patch, load_patch

logger = logging.getLogger(__name__)


def prepare(args: argparse.Namespace) -> dict:
    """Run the whole data stage from parsed CLI arguments and return the meta dict.

    Every file is written to a staging folder and moved into ``--out`` only when all succeeded.
    """
    started = time.perf_counter()
    fmt = resolve_format(args.dataset, args.format_file)
    params = params_from_args(args, fmt)  # fail fast on bad parameters, before the long parse
    if args.patch:
        load_patch(args.patch)  # fail fast on a bad patch, before the long parse
    with staged_output(args.out, (*PARSE_OUTPUTS, *BUILD_OUTPUTS), args.overwrite) as stage:
        result = parse_from_args(args, stage, fmt=fmt)
        extra: dict = {"kind": "prepare", **result.meta()}
        sources = source_files(args, result)
        if args.patch:
            report = apply_patch(result.structured, args.patch)
            extra["patch"] = report.to_json()
            sources["patch"] = {"path": str(args.patch), "sha256": sha256_file(args.patch)}
        extra["sources"] = sources
        meta = build_datasets(stage, params, extra)
    logger.info("prepare finished in %.1f s", time.perf_counter() - started)
    return meta


def summary(meta: dict, out: Path) -> str:
    """Return the final multi-line summary printed by the CLI."""
    parse = meta["parse"]
    lines = [
        f"prepared {meta['params']['dataset']} into {out}",
        f"  lines: {parse['kept']:,} kept of {parse['lines']:,}; skipped "
        + ", ".join(f"{k} {v}" for k, v in parse["skipped"].items()),
        f"  templates: {meta['templates']['total']} ({meta['templates']['abnormal']} abnormal)",
        "  rows: " + ", ".join(f"{s} {n} (anomaly ratio {meta['anomaly_ratio'][s]:.3f})"
                                for s, n in meta["rows"].items()),
        f"  sessions_test: {meta['sessions_test']['sessions']} "
        f"({meta['sessions_test']['abnormal']} abnormal)",
    ]
    if "labels" in meta:
        report = meta["labels"]
        lines.append(f"  labels: {report['blocks_in_labels']:,} blocks "
                     f"({report['abnormal_blocks_in_labels']:,} abnormal); log mentions "
                     f"{report['blocks_in_log']:,}; matched {report['blocks_matched']:,} "
                     f"({report['abnormal_blocks_matched']:,} abnormal)")
    if "patch" in meta:
        lines.append(f"  patch: lines changed {meta['patch']['lines_changed']}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run the ``prepare`` subcommand."""
    meta = prepare(args)
    print(summary(meta, args.out))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``prepare`` subcommand."""
    parser = add_command(
        subparsers, "prepare", "raw log → structured.parquet, templates, VeRL parquet, sessions, meta")
    add_input_args(parser)
    add_flag(parser, "--patch", type=Path, metavar="PATH",
             help="RationAnomaly label patch (JSON); default: none")
    add_build_args(parser)
    parser.set_defaults(func=run)
