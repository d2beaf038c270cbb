"""``prepare --templates``: a labelled template table of any system → the same VeRL parquet.

A table (CSV, TSV, parquet or a JSON list of records) with one template per row and its label
becomes ``train/val/test.parquet`` and ``meta.json``, exactly as ``prepare`` writes them from a
raw log (the rows' ``data_source`` is ``--name``). Columns are found by name, in any order
(:data:`TEMPLATE_COLUMNS`, :data:`LABEL_COLUMNS`, case-insensitive), or named with
``--template-column`` / ``--label-column``. Labels are read through :data:`LABEL_VALUES`
(``normal``/``abnormal``, ``0``/``1`` and a few spellings of the same two classes); any other value
stops with one line naming it and its first row.

Templates are whitespace-normalised and de-duplicated (the same template twice with two labels is
an error), ``--patch`` applies RationAnomaly's label corrections by exact match, and the split is
seeded and stratified by label: each class is shuffled and cut by the ``--split`` shares, so every
template is in exactly one split and each split keeps the table's anomaly ratio (up to rounding).
``--pin-train FILE`` (any table or JSON list with a template column, e.g. R-Log's rationales)
puts the templates it names into the training split, so that data made from them can never reach
a test split. The training split is then drawn to ``--train-size`` rows with ``--anomaly-ratio``
as for raw logs (all rows when there are fewer). There are no lines, hence no sessions.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from logdata.errors import LogDataError
from logdata.io import atomic_write_text, require_file, sha256_file
from logdata.staging import write_meta
from logdata.templates.build import (
    SPLITS,
    BuildParams,
    rl_rows,
    sample_train,
    warn_single_class,
    write_rl_parquet,
)
from logdata.templates.patch import load_patch, normalise
from reward.labels import ABNORMAL, LABELS, NORMAL

logger = logging.getLogger(__name__)

#: Column names recognised as the template column, in order of preference (lower case).
TEMPLATE_COLUMNS: tuple[str, ...] = ("template", "event_template", "eventtemplate", "log_template",
                                     "input", "log", "content", "message", "text")
#: Column names recognised as the label column, in order of preference (lower case).
LABEL_COLUMNS: tuple[str, ...] = ("label", "labels", "class", "anomaly", "is_anomaly",
                                  "abnormal", "target", "y")
#: Accepted label spellings (compared lower-cased and stripped) → the gold label.
LABEL_VALUES: Mapping[str, str] = {
    NORMAL: NORMAL, ABNORMAL: ABNORMAL,
    "0": NORMAL, "1": ABNORMAL, "0.0": NORMAL, "1.0": ABNORMAL,
    "false": NORMAL, "true": ABNORMAL,
    "anomaly": ABNORMAL, "anomalous": ABNORMAL,
}
#: Suffix → reader of a template table.
TABLE_READERS: Mapping[str, str] = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet",
                                    ".pq": "parquet", ".json": "json", ".jsonl": "jsonl"}
#: Files ``prepare --templates`` writes (besides ``meta.json``).
TEMPLATE_TABLE_OUTPUTS: tuple[str, ...] = ("train.parquet", "val.parquet", "test.parquet",
                                           "templates.csv")


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a template table by its suffix (:data:`TABLE_READERS`), every cell as it is stored.

    Raises:
        LogDataError: for a missing file, an unknown suffix or an unreadable table.
    """
    path = require_file(path, "template table")
    kind = TABLE_READERS.get(path.suffix.lower())
    if kind is None:
        raise LogDataError(f"template table {path}: unknown file type {path.suffix!r}; use one of "
                           f"{', '.join(sorted(TABLE_READERS))}")
    try:
        if kind in ("csv", "tsv"):
            frame = pd.read_csv(path, sep="," if kind == "csv" else "\t", dtype=str,
                                keep_default_na=False)
        elif kind == "parquet":
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_json(path, lines=kind == "jsonl", dtype=False)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise LogDataError(f"cannot read template table {path}: {reason}") from None
    if frame.empty:
        raise LogDataError(f"template table {path} has no rows")
    return frame


def find_column(frame: pd.DataFrame, names: Iterable[str], what: str, given: str | None = None,
                exclude: str | None = None) -> str:
    """Return the column ``given`` names, else the first of ``names`` present (any case).

    Raises:
        LogDataError: when no such column exists (the message lists the table's columns).
    """
    columns = [str(c) for c in frame.columns]
    if given is not None:
        if given not in columns:
            raise LogDataError(f"template table has no {what} column {given!r} (columns: "
                               f"{', '.join(columns)})")
        return given
    by_lower = {c.lower().strip(): c for c in columns if c != exclude}
    for name in names:
        if name in by_lower:
            return by_lower[name]
    raise LogDataError(f"template table has no {what} column (looked for {', '.join(names)}; "
                       f"columns: {', '.join(columns)}); name it with --{what}-column")


def gold_labels(values: pd.Series) -> pd.Series:
    """Map a label column to ``normal``/``abnormal`` through :data:`LABEL_VALUES`.

    >>> gold_labels(pd.Series([0, "1", " Abnormal ", True])).tolist()
    ['normal', 'abnormal', 'abnormal', 'abnormal']

    Raises:
        LogDataError: naming the first unknown value and its row (1-based, header excluded).
    """
    keys = values.map(lambda v: str(v).strip().lower())
    mapped = keys.map(LABEL_VALUES)
    bad = mapped.isna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        unknown = sorted(set(values[bad].map(str)))[:5]
        raise LogDataError(f"label {values.iloc[row]!r} in row {row + 1} is not a label "
                           f"(unknown values: {', '.join(map(repr, unknown))}); use "
                           f"{NORMAL}/{ABNORMAL} or 0/1")
    return mapped.astype(object)


def template_frame(raw: pd.DataFrame, template_column: str | None = None,
                   label_column: str | None = None) -> pd.DataFrame:
    """Return ``event_template``, ``label``, ``source_row`` from a raw table, de-duplicated.

    Templates are whitespace-normalised; empty ones are an error, exact duplicates (after
    normalisation) with the same label are merged (the first row is kept), duplicates with two
    labels are an error.

    Raises:
        LogDataError: on a missing column, an unknown label, an empty template or a conflict.
    """
    tcol = find_column(raw, TEMPLATE_COLUMNS, "template", template_column)
    lcol = find_column(raw, LABEL_COLUMNS, "label", label_column, exclude=tcol)
    if tcol == lcol:
        raise LogDataError(f"the template and the label column are both {tcol!r}")
    templates = raw[tcol].map(lambda v: normalise("" if v is None else str(v)))
    empty = np.flatnonzero((templates == "").to_numpy())
    if len(empty):
        raise LogDataError(f"template table row {int(empty[0]) + 1} has an empty template")
    frame = pd.DataFrame({"event_template": templates.to_numpy(),
                          "label": gold_labels(raw[lcol].reset_index(drop=True)).to_numpy(),
                          "source_row": np.arange(1, len(raw) + 1)})
    labels_per = frame.groupby("event_template", sort=False)["label"].nunique()
    conflicts = labels_per.index[labels_per > 1].tolist()
    if conflicts:
        raise LogDataError(f"{len(conflicts)} template(s) appear with both labels, e.g. "
                           f"{conflicts[0]!r}; fix the table")
    duplicates = int(frame["event_template"].duplicated().sum())
    if duplicates:
        logger.warning("template table: %d duplicate row(s) merged", duplicates)
    return frame.drop_duplicates("event_template", keep="first").reset_index(drop=True)


@dataclass
class TablePatchReport:
    """What ``--patch`` changed in a template table."""

    patch_entries: int = 0
    matched_templates: int = 0
    templates_changed: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict (the ``patch`` part of ``meta.json``)."""
        return {"patch_entries": self.patch_entries, "matched_templates": self.matched_templates,
                "templates_changed": dict(self.templates_changed)}


def patch_frame(frame: pd.DataFrame, patch: Mapping[str, str]) -> tuple[pd.DataFrame, TablePatchReport]:
    """Apply ``{normalised template: rectified label}``; ``label_original`` keeps the old label.

    >>> f = pd.DataFrame({"event_template": ["a <*>", "b"], "label": ["abnormal", "normal"]})
    >>> out, report = patch_frame(f, {"a <*>": "normal"})
    >>> out["label"].tolist(), out["label_original"].tolist(), report.templates_changed
    (['normal', 'normal'], ['abnormal', 'normal'], {'normal->abnormal': 0, 'abnormal->normal': 1})
    """
    out = frame.copy()
    out["label_original"] = out["label"]
    rectified = out["event_template"].map(patch)
    hit = rectified.notna()
    out.loc[hit, "label"] = rectified[hit]
    changed = {}
    for old in LABELS:
        new = ABNORMAL if old == NORMAL else NORMAL
        changed[f"{old}->{new}"] = int(((out["label_original"] == old) & (out["label"] == new)).sum())
    return out, TablePatchReport(len(patch), int(hit.sum()), changed)


def read_pinned(path: str | Path) -> set[str]:
    """Normalised templates of a table or JSON list to pin to the training split.

    Raises:
        LogDataError: when the file is unreadable or has no template column.
    """
    frame = read_table(path)
    column = find_column(frame, TEMPLATE_COLUMNS, "template")
    return {normalise(str(v)) for v in frame[column] if str(v).strip()}


def largest_remainder(total: int, shares: tuple[float, ...]) -> list[int]:
    """Split ``total`` into integer parts proportional to ``shares`` that sum to ``total``.

    >>> largest_remainder(22, (0.6, 0.2, 0.2)), largest_remainder(3, (0.5, 0.5, 0.0))
    ([14, 4, 4], [2, 1, 0])
    """
    exact = [total * s for s in shares]
    parts = [int(np.floor(x)) for x in exact]
    order = sorted(range(len(shares)), key=lambda i: (-(exact[i] - parts[i]), i))
    for i in order[: total - sum(parts)]:
        parts[i] += 1
    return parts


def stratified_split(labels: np.ndarray, shares: tuple[float, float, float], seed: int,
                     pinned: np.ndarray | None = None) -> np.ndarray:
    """Assign every row to a split (0 train, 1 val, 2 test), seeded and stratified by label.

    Each class is cut by ``shares`` (:func:`largest_remainder`). ``pinned`` rows go to train
    first; the rest of the class is shuffled with ``seed`` and fills train, then val, then test.
    When a class has more pinned rows than its train share, the surplus is taken from val and
    test in proportion.

    >>> s = stratified_split(np.array(["normal"] * 8 + ["abnormal"] * 2), (0.5, 0.0, 0.5), 0)
    >>> sorted(s[:8].tolist()), sorted(s[8:].tolist())
    ([0, 0, 0, 0, 2, 2, 2, 2], [0, 2])
    """
    rng = np.random.default_rng(seed)
    pinned = np.zeros(len(labels), bool) if pinned is None else np.asarray(pinned, bool)
    out = np.full(len(labels), -1, np.int64)
    for label in LABELS:
        rows = np.flatnonzero(labels == label)
        if not len(rows):
            continue
        n_train, n_val, n_test = largest_remainder(len(rows), shares)
        fixed = rows[pinned[rows]]
        free = rows[~pinned[rows]]
        free = free[rng.permutation(len(free))]
        surplus = max(0, len(fixed) - n_train)
        if surplus:
            take_val, take_test = largest_remainder(surplus, (n_val, n_test)) if n_val + n_test \
                else (0, 0)
            n_val, n_test = n_val - take_val, n_test - take_test
        n_free_train = max(0, n_train - len(fixed))
        out[fixed] = 0
        out[free[:n_free_train]] = 0
        out[free[n_free_train:n_free_train + n_val]] = 1
        out[free[n_free_train + n_val:]] = 2
    return out


def event_id(template: str) -> str:
    """A stable id of a normalised template (``T`` + 10 hex digits of its sha1).

    >>> event_id("disk <*> failed")
    'T8e5ea42b2f'
    """
    return "T" + hashlib.sha1(template.encode("utf-8")).hexdigest()[:10]


@dataclass(frozen=True)
class TableSource:
    """Where a template table and its optional companions come from (for ``meta.json``)."""

    templates: Path
    patch: Path | None = None
    pin_train: Path | None = None
    template_column: str | None = None
    label_column: str | None = None

    def sources(self) -> dict[str, dict[str, str]]:
        """The ``sources`` part of ``meta.json``: path and sha256 of every input file."""
        files = {"templates": self.templates, "patch": self.patch, "pin_train": self.pin_train}
        return {key: {"path": str(path), "sha256": sha256_file(path)}
                for key, path in files.items() if path is not None}


def load_template_table(source: TableSource, shares: tuple[float, float, float], seed: int
                        ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read, patch and split a template table.

    Returns:
        The template frame (``event_id``, ``event_template``, ``label``, ``label_original``,
        ``source_row``, ``pinned``, ``split``) in table order, and the ``meta.json`` parts
        describing the table (columns, duplicates, patch, pinned templates).

    Raises:
        LogDataError: on any unusable input (see :func:`template_frame`, :func:`load_patch`).
    """
    raw = read_table(source.templates)
    frame = template_frame(raw, source.template_column, source.label_column)
    extra: dict[str, Any] = {"table": {"rows": len(raw), "templates": len(frame),
                                       "duplicates_merged": len(raw) - len(frame)}}
    if source.patch is not None:
        frame, report = patch_frame(frame, load_patch(source.patch))
        extra["patch"] = report.to_json()
    else:
        frame["label_original"] = frame["label"]
    pinned_set = read_pinned(source.pin_train) if source.pin_train is not None else set()
    frame["pinned"] = frame["event_template"].isin(pinned_set)
    if source.pin_train is not None:
        extra["pin_train"] = {"entries": len(pinned_set), "matched_templates": int(frame["pinned"].sum()),
                              "abnormal_matched": int((frame["pinned"]
                                                       & (frame["label"] == ABNORMAL)).sum())}
    splits = stratified_split(frame["label"].to_numpy(), shares, seed, frame["pinned"].to_numpy())
    frame["split"] = np.asarray(("train", "val", "test"), dtype=object)[splits]
    frame.insert(0, "event_id", frame["event_template"].map(event_id))
    if frame["event_id"].duplicated().any():  # a sha1 prefix collision: refuse rather than merge
        raise LogDataError("two templates share an event id; report this table")
    return frame, extra


def templates_csv(frame: pd.DataFrame) -> str:
    """The ``templates.csv`` written beside the splits (one row per template, its split)."""
    columns = ["event_id", "event_template", "label", "label_original", "split", "pinned",
               "source_row"]
    return frame[columns].to_csv(index=False)


def describe(frame: pd.DataFrame) -> str:
    """One line per split: templates and abnormal templates (for logs and the CLI).

    >>> f = pd.DataFrame({"split": ["train", "test"], "label": ["abnormal", "normal"]})
    >>> describe(f)
    'train 1 (1 abnormal), val 0 (0 abnormal), test 1 (0 abnormal)'
    """
    parts = []
    for split in ("train", "val", "test"):
        rows = frame[frame["split"] == split]
        parts.append(f"{split} {len(rows)} ({int((rows['label'] == ABNORMAL).sum())} abnormal)")
    return ", ".join(parts)


def json_safe(value: Any) -> Any:
    """``value`` with numpy scalars turned into Python ones (for ``meta.json``)."""
    return json.loads(json.dumps(value, default=lambda v: v.item() if hasattr(v, "item") else str(v)))


#: ``extra_info`` fields of a template-table row (beside split, index, log).
TABLE_EXTRA_FIELDS: tuple[str, ...] = ("event_id", "label_original", "source_row")


def build_table_datasets(out_dir: str | Path, frame: pd.DataFrame, params: BuildParams,
                         extra_meta: Mapping[str, Any]) -> dict[str, Any]:
    """Write ``train/val/test.parquet``, ``templates.csv`` and ``meta.json`` into ``out_dir``.

    Args:
        out_dir: The (staging) folder.
        frame: From :func:`load_template_table`.
        params: Build parameters (``window`` is :data:`~logdata.templates.build.NO_SESSIONS`).
        extra_meta: Merged into ``meta.json`` (table report, patch, sources).

    Returns:
        The meta dictionary written to ``meta.json``.
    """
    params.check()
    out = Path(out_dir)
    by_split = {split: frame[frame["split"] == split] for split in SPLITS}
    frames = {"train": sample_train(by_split["train"], params.train_size, params.anomaly_ratio,
                                    params.seed),
              "val": by_split["val"], "test": by_split["test"]}
    counts, ratios = {}, {}
    for split, rows in frames.items():
        rl = rl_rows(rows, split, params.dataset, params.prompt, TABLE_EXTRA_FIELDS)
        write_rl_parquet(rl, out / f"{split}.parquet")
        counts[split] = len(rl)
        ratios[split] = float((rows["label"] == ABNORMAL).mean()) if len(rows) else 0.0
    atomic_write_text(out / "templates.csv", templates_csv(frame))
    bad = frame["label"] == ABNORMAL
    meta = {
        "kind": "prepare-templates",
        "dataset": params.dataset,
        "params": asdict(params),
        "params_sha256": params.digest(),
        "rows": counts,
        "anomaly_ratio": ratios,
        "templates": {
            "total": len(frame),
            "abnormal": int(bad.sum()),
            "per_split": {s: len(by_split[s]) for s in SPLITS},
            "abnormal_per_split": {s: int((by_split[s]["label"] == ABNORMAL).sum()) for s in SPLITS},
        },
        "sessions_test": None,
        **json_safe(dict(extra_meta)),
    }
    warn_single_class(meta)
    return write_meta(out, meta)
