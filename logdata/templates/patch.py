"""Step ``patch``: rectify template labels with a RationAnomaly patch file.

A patch file is a JSON list of ``{instruction, input, label, rectified}``: ``input`` is a log
template, ``label`` its original label and ``rectified`` the corrected one. Every line whose
``event_template`` equals a patch ``input`` after whitespace normalisation gets the rectified
label; ``label_original`` keeps the label before the patch. The report counts templates and
lines changed per direction.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from logdata.cliargs import add_command, add_flag, add_input_flag, add_out_flag, add_progress_flag
from logdata.errors import LogDataError
from logdata.io import atomic_path, atomic_write_text, require_file
from reward.labels import ABNORMAL, NORMAL, is_label

logger = logging.getLogger(__name__)

PATCH_KEYS: tuple[str, ...] = ("input", "label", "rectified")
REPORT = "patch_report.json"


def normalise(template: str) -> str:
    r"""Collapse runs of whitespace to one space and strip the ends.

    >>> normalise("  a\t <*>  b ")
    'a <*> b'
    """
    return " ".join(template.split())


def load_patch(path: str | Path) -> dict[str, str]:
    """Read a patch file and return ``{normalised template: rectified label}``.

    Raises:
        LogDataError: when the file is unreadable, not a list of patch records, has a bad label
            or corrects one template in two directions.
    """
    require_file(path, "patch")
    try:
        records = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise LogDataError(f"cannot read patch {path}: {exc}") from None
    if not isinstance(records, list):
        raise LogDataError(f"patch {path} must be a JSON list of {{input, label, rectified}}")
    patch: dict[str, str] = {}
    for i, rec in enumerate(records):
        if not isinstance(rec, dict) or any(k not in rec for k in PATCH_KEYS):
            raise LogDataError(f"patch {path} record {i} lacks one of {PATCH_KEYS}")
        if not is_label(rec["rectified"]) or not is_label(rec["label"]):
            raise LogDataError(f"patch {path} record {i}: labels must be normal/abnormal")
        key = normalise(str(rec["input"]))
        if patch.get(key, rec["rectified"]) != rec["rectified"]:
            raise LogDataError(f"patch {path} corrects template {key!r} both ways")
        patch[key] = rec["rectified"]
    return patch


@dataclass
class PatchReport:
    """Templates and lines changed per direction (``normal->abnormal``, ``abnormal->normal``)."""

    patch_entries: int = 0
    matched_templates: int = 0
    templates: Counter = field(default_factory=Counter)
    lines: Counter = field(default_factory=Counter)

    def to_json(self) -> dict:
        """Return a JSON-serialisable dict."""
        directions = (f"{NORMAL}->{ABNORMAL}", f"{ABNORMAL}->{NORMAL}")
        return {
            "patch_entries": self.patch_entries,
            "matched_templates": self.matched_templates,
            "templates_changed": {d: int(self.templates[d]) for d in directions},
            "lines_changed": {d: int(self.lines[d]) for d in directions},
        }

    def summary(self) -> str:
        """Return a one-line human summary."""
        j = self.to_json()
        return (f"{j['matched_templates']} of {j['patch_entries']} patch templates matched; "
                f"templates changed {j['templates_changed']}; lines changed {j['lines_changed']}")


def _patch_table(table: pa.Table, patch: dict[str, str], report: PatchReport,
                 matched: set[str], changed: dict[str, set[str]]) -> pa.Table:
    templates = table["event_template"].combine_chunks()
    encoded = pc.dictionary_encode(templates)
    keys = [normalise(t or "") for t in encoded.dictionary.to_pylist()]
    rect = pa.array([patch.get(k) for k in keys], pa.string())
    new = pc.take(rect, encoded.indices)
    has_original = "label_original" in table.column_names
    original = table["label_original"] if has_original else table["label"]
    label = pc.coalesce(new, original)
    diff = pc.fill_null(pc.not_equal(label, original), False)
    hit = new.is_valid()
    for t in pc.unique(pc.filter(templates, hit)).to_pylist():
        matched.add(normalise(t))
    for old in (NORMAL, ABNORMAL):
        moved = pc.and_(diff, pc.equal(original, old))
        direction = f"{old}->{ABNORMAL if old == NORMAL else NORMAL}"
        report.lines[direction] += int(pc.sum(moved).as_py() or 0)
        changed.setdefault(direction, set()).update(
            pc.unique(pc.filter(templates, moved)).to_pylist())
    table = table.set_column(table.column_names.index("label"), "label", label)
    if not has_original:
        table = table.append_column("label_original", original)
    return table


def apply_patch(structured: str | Path, patch_path: str | Path,
                output: str | Path | None = None) -> PatchReport:
    """Rectify the labels of ``structured.parquet`` (in place unless ``output``) from a patch.

    Applying the same patch twice gives the same file: labels are always recomputed from
    ``label_original``.

    Raises:
        LogDataError: for an unreadable structured file or patch.
    """
    src = require_file(structured, "structured parquet")
    patch = load_patch(patch_path)
    try:
        source = pq.ParquetFile(src)
    except (OSError, pa.ArrowInvalid) as exc:
        raise LogDataError(f"cannot read {src}: {exc}") from None
    if not {"label", "event_template"} <= set(source.schema_arrow.names):
        raise LogDataError(f"{src} lacks label/event_template columns; run parse first")
    report = PatchReport(patch_entries=len(patch))
    matched: set[str] = set()
    changed: dict[str, set[str]] = {}
    with atomic_path(Path(output) if output else src) as tmp:
        writer = None
        try:
            for i in range(source.num_row_groups):
                table = _patch_table(source.read_row_group(i), patch, report, matched, changed)
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema)
                writer.write_table(table)
        finally:
            if writer is not None:
                writer.close()
    report.matched_templates = len(matched)
    for direction, names in changed.items():
        report.templates[direction] = len(names)
    logger.info("patch %s: %s", patch_path, report.summary())
    return report


def run(args: argparse.Namespace) -> int:
    """Run the ``patch`` subcommand."""
    report = apply_patch(args.input, args.patch, args.out)
    target = Path(args.out or args.input)
    atomic_write_text(target.parent / REPORT, json.dumps(report.to_json(), indent=2) + "\n")
    print(f"patched {target}: {report.summary()}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``patch`` subcommand."""
    parser = add_command(subparsers, "patch", "rectify labels with a RationAnomaly patch")
    add_input_flag(parser, "structured.parquet to patch", aliases=("--structured",))
    add_flag(parser, "--patch", required=True, type=Path, metavar="PATH", help="patch JSON")
    add_out_flag(parser, "patched parquet to write (default: --input, patched in place)",
                 required=False, aliases=("--output",))
    add_progress_flag(parser, "hide progress bars (patch shows none; accepted by every step)")
    parser.set_defaults(func=run)
