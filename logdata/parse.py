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

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from logdata.cliargs import add_command, add_flag, add_input_flag, add_out_flag, add_progress_flag
from logdata.drain import MinerSettings, TemplateMiner, event_id
from logdata.errors import LogDataError
from logdata.formats import DRAIN_PRESETS, DatasetFormat, check_masks, get_format, with_drain_preset
from logdata.io import atomic_path, atomic_write_text, require_file, scratch_path, sha256_file
from logdata.readers import ReadStats, iter_raw, iter_structured_csv, load_block_labels

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
    labels_sha256: str | None = None


def miner_settings(fmt: DatasetFormat) -> MinerSettings:
    """Return the Drain settings of a dataset format."""
    return MinerSettings(fmt.masks, fmt.depth, fmt.similarity, fmt.max_children)


def is_structured_csv(path: Path) -> bool:
    """Tell whether ``path`` names a loghub structured CSV (by its ``.csv`` suffix)."""
    return path.suffix.lower() == ".csv"


def parse_file(
    input_path: str | Path,
    dataset: str,
    out_dir: str | Path,
    labels: str | Path | None = None,
    templates_in: str | Path | None = None,
    use_csv_templates: bool = True,
    show_progress: bool = True,
    drain_preset: str = "default",
) -> ParseResult:
    """Parse ``input_path`` into ``out_dir/structured.parquet``, templates.csv and templates.json.

    Args:
        input_path: raw log file, or a loghub ``*_structured.csv``.
        dataset: a key of :data:`logdata.formats.FORMATS`.
        out_dir: output folder (created).
        labels: HDFS ``anomaly_label.csv``.
        templates_in: a ``templates.json`` from an earlier run whose ids are reused.
        use_csv_templates: keep a structured CSV's ``EventTemplate`` instead of re-mining.
        show_progress: draw a tqdm bar.
        drain_preset: ``default`` (the format's Drain settings) or ``loggpt`` (LogGPT's, see
            :data:`logdata.formats.LOGGPT_DRAIN`).

    Raises:
        LogDataError: on unusable input.
    """
    fmt = with_drain_preset(get_format(dataset), drain_preset)
    check_masks(fmt.masks)
    src = Path(input_path)
    require_file(src, "input")
    if src.stat().st_size == 0:
        raise LogDataError(f"input {src} is empty")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    anomalous, labels_sha = None, None
    if labels is not None:
        if not fmt.has_blocks:
            raise LogDataError(f"--labels applies to block-labelled datasets, not {dataset}")
        anomalous = load_block_labels(labels)
        labels_sha = sha256_file(labels)
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
    with scratch_path(out, STRUCTURED) as tmp_ids:
        try:
            _mine_to(tmp_ids, chunks, miner)
        finally:
            bar.close()
        if stats.kept == 0:
            raise LogDataError(
                f"no usable line in {src} for dataset {dataset!r} ({stats.summary()}); "
                "wrong format?"
            )
        if fmt.has_blocks and labels is None:
            logger.warning("no --labels given for %s: every line is labelled normal", dataset)
        for reason, count in stats.skipped.items():
            if count:
                logger.warning("skipped %d %s line(s) of %s", count, reason, src)
        logger.info("parsed %s: %s, %d templates", src, stats.summary(), len(miner))
        _finalise(tmp_ids, structured, miner)
    templates_json = out / TEMPLATES_JSON
    miner.save(templates_json, dataset)
    templates_csv = out / TEMPLATES_CSV
    write_templates_csv(templates_csv, miner)
    return ParseResult(structured, templates_csv, templates_json, stats, len(miner), labels_sha)


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


def add_input_args(parser: argparse.ArgumentParser) -> None:
    """Add the options shared by ``parse`` and ``prepare``."""
    from logdata.formats import FORMATS

    add_flag(parser, "--dataset", required=True, choices=sorted(FORMATS), help="log format")
    add_input_flag(parser, "raw log file, or a loghub *_structured.csv")
    add_out_flag(parser, "output folder")
    add_flag(parser, "--labels", type=Path, metavar="PATH",
             help="HDFS anomaly_label.csv (BlockId,Label); default: none")
    add_flag(parser, "--templates-in", type=Path, metavar="PATH",
             help="templates.json of an earlier run: reuse its template ids (default: none)")
    add_flag(parser, "--reparse", action="store_true",
             help="mine templates from Content even when a CSV has EventTemplate")
    add_progress_flag(parser)


def run(args: argparse.Namespace) -> int:
    """Run the ``parse`` step from parsed CLI arguments."""
    result = parse_file(args.input, args.dataset, args.out, args.labels, args.templates_in,
                        not args.reparse, not args.no_progress, args.drain_preset)
    print(f"parsed {args.input}: {result.stats.summary()}; {result.n_templates} templates "
          f"→ {result.structured}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``parse`` subcommand."""
    parser = add_command(subparsers, "parse", "raw log → structured.parquet + templates")
    add_input_args(parser)
    add_flag(parser, "--drain-preset", choices=DRAIN_PRESETS, default="default",
             help="Drain depth/similarity: the dataset's own (default; Thunderbird 4 / 0.5 as in "
                  "loghub's benchmark) or LogGPT's (Thunderbird 2 / 0.3)")
    parser.set_defaults(func=run)
