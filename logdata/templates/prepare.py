"""``python -m logdata prepare``: parse → patch (optional) → build, in one command.

``--templates FILE --name NAME`` takes a labelled template table instead of a raw log
(:mod:`logdata.templates.labelled`) and writes the same ``train/val/test.parquet`` and
``meta.json`` (plus ``templates.csv``; no sessions, a table has no lines).

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
from logdata.errors import LogDataError
from logdata.formats import resolve_format
from logdata.io import sha256_file
from logdata.parse import PARSE_OUTPUTS, add_input_args, parse_from_args, source_files
from logdata.schema import _SOURCE_RE
from logdata.staging import staged_output
from logdata.templates.build import (
    BUILD_OUTPUTS,
    NO_SESSIONS,
    BuildParams,
    add_build_args,
    build_datasets,
    params_from_args,
)
from logdata.templates.labelled import (
    TEMPLATE_TABLE_OUTPUTS,
    TableSource,
    build_table_datasets,
    describe,
    load_template_table,
)
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


#: Raw-log options that mean nothing for a template table (flag → its argparse dest).
RAW_LOG_ONLY: dict[str, str] = {
    "--input": "input", "--dataset": "dataset", "--format-file": "format_file",
    "--labels": "labels", "--templates-in": "templates_in", "--window": "window",
    "--window-size": "window_size", "--window-step": "window_step",
}


def check_source(args: argparse.Namespace) -> None:
    """Refuse a mix of ``--templates`` and raw-log options, or neither, in one line.

    Raises:
        LogDataError: naming the offending or missing options.
    """
    if args.templates is None:
        if args.input is None or not (args.dataset or args.format_file):
            raise LogDataError("give --input LOG with --dataset or --format-file, or --templates "
                               "TABLE --name NAME")
        if args.name or args.pin_train or args.template_column or args.label_column:
            raise LogDataError("--name, --pin-train, --template-column and --label-column go "
                               "with --templates")
        return
    given = [flag for flag, dest in RAW_LOG_ONLY.items() if getattr(args, dest, None)]
    if given:
        raise LogDataError(f"--templates takes a template table, not a raw log: drop "
                           f"{', '.join(given)}")
    if not args.name or not _SOURCE_RE.match(args.name):
        raise LogDataError(f"--templates needs --name NAME (the rows' data_source: letters, "
                           f"digits, . _ -), got {args.name!r}")


def prepare_templates(args: argparse.Namespace) -> dict:
    """Turn a labelled template table into the VeRL parquet; return the meta dict."""
    started = time.perf_counter()
    params = BuildParams(dataset=args.name, seed=args.seed, prompt=args.prompt,
                         train_size=args.train_size, anomaly_ratio=args.anomaly_ratio,
                         split=tuple(args.split), window=NO_SESSIONS, window_size=0)
    params.check()
    source = TableSource(args.templates, args.patch, args.pin_train, args.template_column,
                         args.label_column)
    frame, extra = load_template_table(source, params.split, params.seed)
    logger.info("template table %s: %s", args.templates, describe(frame))
    with staged_output(args.out, TEMPLATE_TABLE_OUTPUTS, args.overwrite) as stage:
        meta = build_table_datasets(stage, frame, params, {**extra, "sources": source.sources()})
    logger.info("prepare --templates finished in %.1f s", time.perf_counter() - started)
    return meta


def table_summary(meta: dict, out: Path) -> str:
    """Return the summary printed after ``prepare --templates``."""
    templates = meta["templates"]
    lines = [
        f"prepared {meta['dataset']} (template table) into {out}",
        f"  templates: {templates['total']} ({templates['abnormal']} abnormal); "
        f"merged duplicates {meta['table']['duplicates_merged']}",
        "  rows: " + ", ".join(f"{s} {n} (anomaly ratio {meta['anomaly_ratio'][s]:.3f})"
                                for s, n in meta["rows"].items()),
    ]
    if "patch" in meta:
        lines.append(f"  patch: {meta['patch']['matched_templates']} of "
                     f"{meta['patch']['patch_entries']} entries matched; templates changed "
                     f"{meta['patch']['templates_changed']}")
    if "pin_train" in meta:
        pin = meta["pin_train"]
        lines.append(f"  pinned to train: {pin['matched_templates']} of {pin['entries']} "
                     f"({pin['abnormal_matched']} abnormal)")
    return "\n".join(lines)


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
    check_source(args)
    if args.templates is not None:
        print(table_summary(prepare_templates(args), args.out))
        return 0
    meta = prepare(args)
    print(summary(meta, args.out))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``prepare`` subcommand."""
    parser = add_command(
        subparsers, "prepare", "raw log → structured.parquet, templates, VeRL parquet, sessions, meta")
    add_input_args(parser, required=False)
    table = parser.add_argument_group("labelled template table (instead of --input and a format)")
    add_flag(table, "--templates", type=Path, default=None, metavar="FILE",
             help="CSV/TSV/parquet/JSON table with a template and a label column, found by name "
                  "in any order (labels normal/abnormal or 0/1)")
    add_flag(table, "--name", default=None,
             help="dataset name, the rows' data_source (required with --templates)")
    add_flag(table, "--template-column", default=None, metavar="NAME",
             help="template column (default: found by name: template, event_template, input …)")
    add_flag(table, "--label-column", default=None, metavar="NAME",
             help="label column (default: found by name: label, class, anomaly …)")
    add_flag(table, "--pin-train", type=Path, default=None, metavar="FILE",
             help="table or JSON list whose templates must go to the training split (e.g. the "
                  "templates that have reference rationales); default: none")
    add_flag(parser, "--patch", type=Path, metavar="PATH",
             help="RationAnomaly label patch (JSON); default: none")
    add_build_args(parser)
    parser.set_defaults(func=run)
