"""Step ``parse``: a raw log (or loghub structured CSV) → ``structured.parquet`` + templates.

Streaming in two passes with memory independent of the file size: pass one reads the input
chunk by chunk, mines templates (:class:`~logdata.drain.TemplateMiner`) and writes each chunk
with its cluster id to a temporary parquet file; pass two rewrites it row group by row group
with the final ``event_id`` and ``event_template`` (templates generalise while mining, so their
text is known only at the end). Outputs are written atomically.
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from logdata.cliargs import (
    add_command,
    add_flag,
    add_input_flag,
    add_out_flag,
    add_overwrite_flag,
    add_progress_flag,
)
from logdata.drain import MinerSettings, TemplateMiner, event_id
from logdata.errors import LogDataError
from logdata.formats import (
    DRAIN_PRESETS,
    FORMATS,
    DatasetFormat,
    check_masks,
    get_format,
    resolve_format,
    with_drain_preset,
)
from logdata.io import atomic_path, atomic_write_text, require_file, scratch_path, sha256_file
from logdata.readers import ReadStats, iter_raw, iter_structured_csv, load_block_labels
from logdata.staging import META, staged_output, write_meta

logger = logging.getLogger(__name__)

STRUCTURED = "structured.parquet"
TEMPLATES_CSV = "templates.csv"
TEMPLATES_JSON = "templates.json"


@dataclass
class ParseResult:
    """What :func:`parse_file` produced."""

    structured: Path
    templates_csv: Path
    templates_json: Path
    stats: ReadStats
    n_templates: int
    fmt: DatasetFormat
    labels_sha256: str | None = None
    labels_report: dict[str, int] | None = None

    def meta(self) -> dict[str, Any]:
        """The parse part of ``meta.json``: dataset, format, line counts, block matching."""
        meta: dict[str, Any] = {"dataset": self.fmt.name, "format": self.fmt.to_json(),
                                "parse": {**self.stats.to_json(), "templates": self.n_templates}}
        if self.labels_report is not None:
            meta["labels"] = self.labels_report
        return meta


def miner_settings(fmt: DatasetFormat) -> MinerSettings:
    """Return the Drain settings of a dataset format."""
    return MinerSettings(fmt.masks, fmt.depth, fmt.similarity, fmt.max_children)


def is_structured_csv(path: Path) -> bool:
    """Tell whether ``path`` names a loghub structured CSV (by its ``.csv`` suffix)."""
    return path.suffix.lower() == ".csv"


def check_block_match(report: dict[str, int], labels: Path, allow_unlabelled: bool) -> None:
    """Log how the labels file met the log; refuse a labels file that matches no block.

    Raises:
        LogDataError: when no block of the log is in the labels file and ``allow_unlabelled``
            is not set.
    """
    logger.info("labels %s: %d blocks (%d abnormal); the log mentions %d blocks, %d matched "
                "(%d abnormal)", labels, report["blocks_in_labels"],
                report["abnormal_blocks_in_labels"], report["blocks_in_log"],
                report["blocks_matched"], report["abnormal_blocks_matched"])
    if report["blocks_matched"] == 0:
        message = (f"labels {labels} match none of the {report['blocks_in_log']:,} block ids in "
                   "the log (wrong labels file?)")
        if not allow_unlabelled:
            raise LogDataError(message + "; pass --allow-unlabelled to keep every line normal")
        logger.warning("%s: every line is labelled normal (--allow-unlabelled)", message)
    elif report["blocks_matched"] < report["blocks_in_log"]:
        logger.warning("%d of %d blocks in the log have no label (counted normal)",
                       report["blocks_in_log"] - report["blocks_matched"], report["blocks_in_log"])


def parse_file(
    input_path: str | Path,
    dataset: str | DatasetFormat,
    out_dir: str | Path,
    labels: str | Path | None = None,
    templates_in: str | Path | None = None,
    use_csv_templates: bool = True,
    show_progress: bool = True,
    drain_preset: str = "default",
    allow_unlabelled: bool = False,
) -> ParseResult:
    """Parse ``input_path`` into ``out_dir/structured.parquet``, templates.csv and templates.json.

    Args:
        input_path: raw log file (plain, ``.gz``, ``.bz2``, ``.xz`` or ``.zst``), or a loghub
            ``*_structured.csv``.
        dataset: a built-in dataset name or a :class:`~logdata.formats.DatasetFormat` (from a
            format file).
        out_dir: output folder (created).
        labels: HDFS ``anomaly_label.csv``.
        templates_in: a ``templates.json`` from an earlier run whose ids are reused.
        use_csv_templates: keep a structured CSV's ``EventTemplate`` instead of re-mining.
        show_progress: draw a tqdm bar.
        drain_preset: ``default`` (the format's Drain settings) or ``loggpt`` (LogGPT's, see
            :data:`logdata.formats.LOGGPT_DRAIN`).
        allow_unlabelled: accept a labels file that matches no block of the log.

    Raises:
        LogDataError: on unusable input.
    """
    fmt = dataset if isinstance(dataset, DatasetFormat) else get_format(dataset)
    fmt = with_drain_preset(fmt, drain_preset)
    check_masks(fmt.masks)
    src = Path(input_path)
    require_file(src, "input")
    if src.stat().st_size == 0:
        raise LogDataError(f"input {src} is empty")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    block_labels, labels_sha = None, None
    if labels is not None:
        if not fmt.has_blocks:
            raise LogDataError(f"--labels applies to block-labelled datasets, not {fmt.name}")
        block_labels = load_block_labels(labels)
        labels_sha = sha256_file(labels)
    anomalous = block_labels.anomalous if block_labels is not None else None
    settings = miner_settings(fmt)
    miner = TemplateMiner.load(templates_in, settings) if templates_in else TemplateMiner(settings)
    stats = ReadStats()
    # leave=False: the bar is erased when closed, so an error message stays on one clean line;
    # disable=None hides it when stderr is not a terminal
    bar = tqdm(total=src.stat().st_size, unit="B", unit_scale=True, desc=f"parse {src.name}",
               disable=None if show_progress else True, leave=False)
    if is_structured_csv(src):
        chunks = iter_structured_csv(src, fmt, stats, anomalous, use_csv_templates, bar.update)
    else:
        chunks = iter_raw(src, fmt, stats, anomalous, progress=bar.update)
    structured = out / STRUCTURED
    report = None
    with scratch_path(out, STRUCTURED) as tmp_ids:
        try:
            _mine_to(tmp_ids, chunks, miner)
        finally:
            bar.close()
        if stats.kept == 0:
            raise LogDataError(
                f"no usable line in {src} for dataset {fmt.name!r} ({stats.summary()}); "
                "wrong format?"
            )
        if block_labels is not None:
            report = block_labels.match_report(stats.blocks_seen())
            check_block_match(report, Path(labels), allow_unlabelled)
        elif fmt.has_blocks:
            logger.warning("no --labels given for %s: every line is labelled normal", fmt.name)
        if fmt.label_rule == "none":
            logger.warning("format %s has no label rule: every line is labelled normal", fmt.name)
        for reason, count in stats.skipped.items():
            if count:
                logger.warning("skipped %d %s line(s) of %s", count, reason, src)
        logger.info("parsed %s: %s, %d templates", src, stats.summary(), len(miner))
        _finalise(tmp_ids, structured, miner)
    templates_json = out / TEMPLATES_JSON
    miner.save(templates_json, fmt.name)
    templates_csv = out / TEMPLATES_CSV
    write_templates_csv(templates_csv, miner)
    return ParseResult(structured, templates_csv, templates_json, stats, len(miner), fmt,
                       labels_sha, report)


def _mine_to(path: Path, chunks: Iterable[pa.Table], miner: TemplateMiner) -> None:
    """Mine each chunk and append it with its cluster id to an Arrow IPC scratch file."""
    writer = None
    try:
        for table in chunks:
            if "csv_template" in table.column_names:
                ids = miner.add_fixed(table["csv_template"])
                table = table.drop_columns(["csv_template"])
            else:
                ids = miner.add_batch(table["content"])
            table = table.append_column("event_cid", pa.array(ids, pa.int32()))
            if writer is None:
                schema = table.schema
                writer = pa.ipc.new_file(str(path), schema)
            writer.write_table(table.cast(schema))
    finally:
        if writer is not None:
            writer.close()


def _finalise(ids_path: Path, structured: Path, miner: TemplateMiner) -> None:
    """Write structured.parquet from the scratch file with final event ids and templates.

    ``event_id`` and ``event_template`` go in as dictionary arrays over the final template
    list (cheap to build, dictionary-encoded in parquet); the Arrow schema is not stored, so
    readers get plain strings back.
    """
    templates = pa.array(miner.templates(), pa.string())
    ids = pa.array([event_id(i) for i in range(len(miner))], pa.string())
    with pa.OSFile(str(ids_path)) as source, atomic_path(structured) as tmp:
        reader = pa.ipc.open_file(source)
        writer = None
        try:
            for i in range(reader.num_record_batches):
                table = pa.Table.from_batches([reader.get_batch(i)])
                cid = table["event_cid"].combine_chunks()
                table = table.drop_columns(["event_cid"])
                table = table.append_column("event_id",
                                            pa.DictionaryArray.from_arrays(cid, ids))
                table = table.append_column("event_template",
                                            pa.DictionaryArray.from_arrays(cid, templates))
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema, store_schema=False)
                writer.write_table(table)
        finally:
            if writer is not None:
                writer.close()


def write_templates_csv(path: Path, miner: TemplateMiner) -> None:
    """Write ``event_id,event_template,count`` rows atomically."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["event_id", "event_template", "count"])
    for cid, text in enumerate(miner.templates()):
        writer.writerow([event_id(cid), text, int(miner.counts[cid])])
    atomic_write_text(path, buf.getvalue())


#: Files ``parse`` writes (``prepare`` writes these and the build step's).
PARSE_OUTPUTS: tuple[str, ...] = (STRUCTURED, TEMPLATES_CSV, TEMPLATES_JSON, META)


def add_format_args(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """Add ``--dataset NAME`` / ``--format-file FILE`` (one of them)."""
    group = parser.add_mutually_exclusive_group(required=required)
    add_flag(group, "--dataset", choices=sorted(FORMATS), default=None,
             help="built-in log format (logdata/formats/builtin/NAME.yaml)")
    add_flag(group, "--format-file", type=Path, default=None, metavar="FILE",
             help="YAML or JSON format file: logparser log_format, masks, similarity, depth, "
                  "label, timestamp (see logdata/README.md)")


def add_input_args(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """Add the options shared by ``parse`` and ``prepare``.

    ``required=False`` (``prepare``, which also takes ``--templates``) leaves the format and the
    input to the command to check.
    """
    add_format_args(parser, required=required)
    add_input_flag(parser, "raw log file (plain, .gz, .bz2, .xz or .zst), or a loghub "
                           "*_structured.csv", required=required)
    add_out_flag(parser, "output folder")
    add_overwrite_flag(parser, "replace the outputs of an earlier run in --out (they are replaced "
                               "together, only when this run succeeds)")
    add_flag(parser, "--labels", type=Path, metavar="PATH",
             help="HDFS anomaly_label.csv (BlockId,Label); default: none")
    add_flag(parser, "--allow-unlabelled", action="store_true",
             help="accept a --labels file that matches no block of the log (every line normal)")
    add_flag(parser, "--templates-in", type=Path, metavar="PATH",
             help="templates.json of an earlier run: reuse its template ids (default: none)")
    add_flag(parser, "--reparse", action="store_true",
             help="mine templates from Content even when a CSV has EventTemplate")
    add_progress_flag(parser)


def parse_from_args(args: argparse.Namespace, out: Path, drain_preset: str = "default",
                    fmt: DatasetFormat | None = None) -> ParseResult:
    """Run :func:`parse_file` with the CLI arguments of ``parse`` / ``prepare`` into ``out``."""
    fmt = fmt or resolve_format(args.dataset, args.format_file)
    return parse_file(args.input, fmt, out, args.labels, args.templates_in, not args.reparse,
                      not args.no_progress, drain_preset, args.allow_unlabelled)


def source_files(args: argparse.Namespace, result: ParseResult) -> dict[str, dict[str, str]]:
    """The ``sources`` part of ``meta.json``: path and sha256 of every input file."""
    sources = {"input": {"path": str(args.input), "sha256": result.stats.sha256}}
    if args.labels:
        sources["labels"] = {"path": str(args.labels), "sha256": result.labels_sha256}
    if args.format_file:
        sources["format_file"] = {"path": str(args.format_file),
                                  "sha256": sha256_file(args.format_file)}
    if args.templates_in:
        sources["templates_in"] = {"path": str(args.templates_in),
                                   "sha256": sha256_file(args.templates_in)}
    return sources


def run(args: argparse.Namespace) -> int:
    """Run the ``parse`` step from parsed CLI arguments."""
    with staged_output(args.out, PARSE_OUTPUTS, args.overwrite) as stage:
        result = parse_from_args(args, stage, args.drain_preset)
        write_meta(stage, {"kind": "parse", **result.meta(),
                           "sources": source_files(args, result)})
    print(f"parsed {args.input}: {result.stats.summary()}; {result.n_templates} templates "
          f"→ {Path(args.out) / STRUCTURED}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``parse`` subcommand."""
    parser = add_command(subparsers, "parse", "raw log → structured.parquet + templates")
    add_input_args(parser)
    add_flag(parser, "--drain-preset", choices=DRAIN_PRESETS, default="default",
             help="Drain depth/similarity: the dataset's own (default; Thunderbird 4 / 0.5 as in "
                  "loghub's benchmark) or LogGPT's (Thunderbird 2 / 0.3)")
    parser.set_defaults(func=run)
