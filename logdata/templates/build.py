"""Step ``build``: ``structured.parquet`` → template- and session-level datasets + ``meta.json``.

Template level: one row per distinct template, labelled from its lines (``majority``: abnormal
when at least half its lines are; ``any``: when any line is). Templates are ordered by first
occurrence and split chronologically (``train``, ``val``, ``test`` shares of templates), so no
template is in two splits. The training split is sampled (seeded) to ``train_size`` rows with
``anomaly_ratio`` abnormal rows: when there are too few abnormal templates, all of them are
taken, the rest is filled with normal templates and a warning says the ratio reached; when there
are too few templates altogether, all are taken. Validation and test keep their natural ratio.

Session level (``sessions_test.parquet``): the test period is the last ``test`` share of the
lines; it is cut into fixed-count windows (default exactly 100 lines), sliding time windows
(size and step in seconds) or HDFS block sessions, and a session is abnormal if any line is.

Everything streams over the parquet row groups except the test period's compact arrays (template
id and timestamp per line).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from logdata import windows
from logdata.cliargs import (
    add_command,
    add_flag,
    add_input_flag,
    add_out_flag,
    add_overwrite_flag,
    add_progress_flag,
    add_seed_flag,
    add_window_flags,
)
from logdata.errors import LogDataError
from logdata.formats import DatasetFormat, format_from_meta, resolve_format
from logdata.io import atomic_path, atomic_write_parquet, require_file, sha256_file
from logdata.schema import ABILITY, REWARD_STYLE, validate_rl_frame
from logdata.staging import listed_files, read_meta, staged_output, verify_file, write_meta
from logdata.templates.prompts import SYSTEM_PROMPTS, build_messages
from reward.labels import ABNORMAL, NORMAL

logger = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "val", "test")
SESSIONS = "sessions_test.parquet"
# Every template of the test period as VeRL rows: predicting on it gives full session-level coverage
# (sessions also contain templates first seen in the train and val periods), an opt-in mode that is
# not comparable with the paper, which judges sessions on test-split templates only.
SESSION_TEMPLATES = "sessions_templates.parquet"
META = "meta.json"
SESSION_BATCH = 10_000
#: ``BuildParams.window`` of a dataset without lines (a labelled template table): no sessions.
NO_SESSIONS = "none"
#: ``extra_info`` fields a raw-log build copies from its template table (beside split, index, log).
LOG_EXTRA_FIELDS: tuple[str, ...] = ("event_id", "n_lines", "first_line", "label_original")


@dataclass(frozen=True)
class BuildParams:
    """Every parameter that shapes the datasets (hashed into meta.json)."""

    dataset: str
    seed: int = 0
    prompt: str = "cot"
    train_size: int = 2000
    anomaly_ratio: float = 0.15
    split: tuple[float, float, float] = (0.6, 0.2, 0.2)
    template_label: str = "majority"
    window: str = "fixed"
    window_size: float = 100
    window_step: float | None = None

    def check(self) -> None:
        """Raise :class:`LogDataError` on inconsistent parameters."""
        if self.prompt not in SYSTEM_PROMPTS:
            raise LogDataError(f"unknown prompt {self.prompt!r}; choose {sorted(SYSTEM_PROMPTS)}")
        if len(self.split) != 3 or min(self.split) < 0 or abs(sum(self.split) - 1) > 1e-6:
            raise LogDataError(f"--split must be three non-negative shares summing to 1: "
                               f"{self.split}")
        if self.train_size < 1 or not 0.0 <= self.anomaly_ratio <= 1.0:
            raise LogDataError("--train-size must be >= 1 and --anomaly-ratio within [0, 1]")
        if self.template_label not in ("majority", "any"):
            raise LogDataError("--template-label must be majority or any")
        if self.window not in ("fixed", "time", "block", NO_SESSIONS):
            raise LogDataError("--window must be fixed, time or block")
        if self.window not in ("block", NO_SESSIONS) and (
                self.window_size <= 0 or (self.window_step is not None and self.window_step <= 0)):
            raise LogDataError("--window-size and --window-step must be > 0")

    def digest(self) -> str:
        """Return a sha256 over the canonical JSON of the parameters."""
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()


# -- template aggregation ------------------------------------------------------------------
def template_table(structured: Path) -> pd.DataFrame:
    """Aggregate ``structured.parquet`` per event id, streaming over its row groups.

    Returns:
        DataFrame with event_id, event_template, first_line, first_row, n_lines, n_abnormal,
        n_abnormal_original, in order of first occurrence.
    """
    source = _open(structured)
    cols = ["line_no", "label", "event_id", "event_template"]
    has_original = "label_original" in source.schema_arrow.names
    if has_original:
        cols.append("label_original")
    parts, offset = [], 0
    for i in range(source.num_row_groups):
        table = source.read_row_group(i, columns=cols)
        n = table.num_rows
        table = table.append_column("row", pa.array(np.arange(offset, offset + n)))
        offset += n
        table = table.append_column("bad", pc.cast(pc.equal(table["label"], ABNORMAL), pa.int64()))
        orig = table["label_original"] if has_original else table["label"]
        table = table.append_column("bad_orig", pc.cast(pc.equal(orig, ABNORMAL), pa.int64()))
        agg = table.group_by("event_id", use_threads=False).aggregate([
            ("event_template", "first"), ("line_no", "min"), ("row", "min"),
            ("row", "count"), ("bad", "sum"), ("bad_orig", "sum"),
        ])
        parts.append(agg.to_pandas())
    if not parts:
        raise LogDataError(f"{structured} has no rows")
    df = pd.concat(parts, ignore_index=True)
    out = df.groupby("event_id", sort=False).agg(
        event_template=("event_template_first", "first"), first_line=("line_no_min", "min"),
        first_row=("row_min", "min"), n_lines=("row_count", "sum"),
        n_abnormal=("bad_sum", "sum"), n_abnormal_original=("bad_orig_sum", "sum"),
    ).reset_index()
    return out.sort_values("first_row", kind="stable").reset_index(drop=True)


def _open(path: Path) -> pq.ParquetFile:
    try:
        source = pq.ParquetFile(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise LogDataError(f"cannot read {path}: {exc}") from None
    need = {"line_no", "label", "event_id", "event_template"}
    if not need <= set(source.schema_arrow.names):
        raise LogDataError(f"{path} lacks columns {sorted(need - set(source.schema_arrow.names))}")
    return source


def label_templates(df: pd.DataFrame, rule: str) -> pd.DataFrame:
    """Add ``label`` and ``label_original`` to the template table by ``rule``."""
    df = df.copy()
    for col, src in (("label", "n_abnormal"), ("label_original", "n_abnormal_original")):
        bad = df[src] > 0 if rule == "any" else df[src] * 2 >= df["n_lines"]
        df[col] = np.where(bad, ABNORMAL, NORMAL)
    return df


def split_templates(n: int, shares: tuple[float, float, float]) -> np.ndarray:
    """Assign ``n`` chronologically ordered templates to splits (0 train, 1 val, 2 test).

    >>> split_templates(10, (0.6, 0.2, 0.2)).tolist()
    [0, 0, 0, 0, 0, 0, 1, 1, 2, 2]
    """
    n_train = round(n * shares[0])
    n_val = round(n * shares[1])
    if n >= 3:  # every split with a positive share gets at least one template
        n_train = max(n_train, 1 if shares[0] > 0 else 0)
        n_val = max(n_val, 1 if shares[1] > 0 else 0)
        if shares[2] > 0 and n_train + n_val >= n:
            n_train = n - n_val - 1
    return np.repeat(np.arange(3), [n_train, n_val, max(0, n - n_train - n_val)])


def sample_train(df: pd.DataFrame, size: int, ratio: float, seed: int) -> pd.DataFrame:
    """Sample the training templates to ``size`` rows with ``ratio`` abnormal, seeded.

    Too few abnormal templates: all are taken and normal templates fill up to ``size``; too few
    templates in total: all are taken. Both cases log a warning.
    """
    rng = np.random.default_rng(seed)
    bad = df.index[df["label"] == ABNORMAL].to_numpy()
    good = df.index[df["label"] == NORMAL].to_numpy()
    want_bad = round(size * ratio)
    n_bad = min(want_bad, len(bad))
    n_good = min(size - n_bad, len(good))
    if n_bad < want_bad or n_bad + n_good < size:
        logger.warning(
            "training split has %d abnormal and %d normal templates; wanted %d rows with %d "
            "abnormal: taking %d abnormal + %d normal (anomaly ratio %.3f)",
            len(bad), len(good), size, want_bad, n_bad, n_good,
            n_bad / max(1, n_bad + n_good))
    chosen = np.concatenate([rng.choice(bad, n_bad, replace=False),
                             rng.choice(good, n_good, replace=False)])
    rng.shuffle(chosen)
    return df.loc[chosen]


def rl_rows(df: pd.DataFrame, split: str, data_source: str, prompt: str,
            extra_fields: tuple[str, ...] = LOG_EXTRA_FIELDS) -> pd.DataFrame:
    """Return the VeRL RLHF frame of a split's templates.

    Args:
        df: One template per row: ``event_template``, ``label`` and the ``extra_fields``.
        split: The split's name (``extra_info.split``).
        data_source: The rows' ``data_source``.
        prompt: Prompt variant (:data:`logdata.templates.prompts.SYSTEM_PROMPTS`).
        extra_fields: Columns copied into ``extra_info`` (numpy scalars become Python ones).
    """
    rows = []
    for index, rec in enumerate(df.to_dict("records")):
        extra = {"split": split, "index": index, "log": rec["event_template"]}
        for name in extra_fields:
            value = rec[name]
            extra[name] = value.item() if hasattr(value, "item") else value
        rows.append({
            "data_source": data_source,
            "prompt": build_messages(rec["event_template"], prompt),
            "ability": ABILITY,
            "reward_model": {"style": REWARD_STYLE, "ground_truth": rec["label"]},
            "extra_info": extra,
        })
    return pd.DataFrame(rows, columns=["data_source", "prompt", "ability", "reward_model",
                                       "extra_info"])


def write_rl_parquet(df: pd.DataFrame, path: Path) -> None:
    """Validate ``df`` and write it atomically as parquet."""
    validate_rl_frame(df)
    atomic_write_parquet(df, path)


# -- sessions ---------------------------------------------------------------------------------
def _test_period(source: pq.ParquetFile, start_row: int, codes: dict[str, int],
                 with_blocks: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                             list | None]:
    """Return (template code, is_abnormal, timestamp, line_no, block lists) from ``start_row``."""
    cols = ["line_no", "label", "event_id", "timestamp"] + (["block_ids"] if with_blocks else [])
    cols = [c for c in cols if c in source.schema_arrow.names]
    code_parts, bad_parts, ts_parts, no_parts = [], [], [], []
    blocks: list | None = [] if with_blocks else None
    offset = 0
    lookup_keys = pa.array(list(codes), pa.string())
    for i in range(source.num_row_groups):
        n = source.metadata.row_group(i).num_rows
        if offset + n <= start_row:
            offset += n
            continue
        table = source.read_row_group(i, columns=cols).slice(max(0, start_row - offset))
        offset += n
        code_parts.append(pc.index_in(table["event_id"], value_set=lookup_keys)
                          .to_numpy(zero_copy_only=False).astype(np.int32))
        bad_parts.append(pc.equal(table["label"], ABNORMAL).to_numpy(zero_copy_only=False))
        no_parts.append(table["line_no"].to_numpy())
        if "timestamp" in table.column_names:
            ts_parts.append(pc.fill_null(pc.cast(table["timestamp"], pa.float64()), np.nan)
                            .to_numpy(zero_copy_only=False))
        else:
            ts_parts.append(np.full(table.num_rows, np.nan))
        if with_blocks:
            blocks.extend(table["block_ids"].to_pylist())

    def cat(parts: list[np.ndarray], dt: Any) -> np.ndarray:
        return np.concatenate(parts) if parts else np.zeros(0, dt)

    return (cat(code_parts, np.int32), cat(bad_parts, bool), cat(ts_parts, np.float64),
            cat(no_parts, np.int64), blocks)


def build_sessions(structured: Path, out: Path, params: BuildParams, templates: pd.DataFrame,
                   test_share: float) -> tuple[dict, np.ndarray]:
    """Write ``sessions_test.parquet`` from the test period.

    Returns:
        The session statistics and the (sorted, unique) template row numbers the period uses.
    """
    source = _open(structured)
    total = source.metadata.num_rows
    start_row = total - round(total * test_share) if test_share > 0 else total
    codes = {eid: i for i, eid in enumerate(templates["event_id"])}
    texts = np.asarray(templates["event_template"], dtype=object)
    ids = np.asarray(templates["event_id"], dtype=object)
    with_blocks = params.window == "block"
    if with_blocks and "block_ids" not in source.schema_arrow.names:
        raise LogDataError("--window block needs HDFS block ids (block_ids column)")
    code, bad, ts, line_no, blocks = _test_period(source, start_row, codes, with_blocks)
    if with_blocks:
        names, members = windows.block_sessions(blocks or [])
    else:
        if params.window == "fixed":
            step = int(params.window_step) if params.window_step else None
            starts, ends = windows.fixed_windows(len(code), int(params.window_size), step)
        else:
            starts, ends = windows.time_windows(ts, params.window_size, params.window_step)
        names = [f"w{line_no[s]:09d}" for s in starts]
        members = [np.arange(s, e) for s, e in zip(starts, ends, strict=False)]
    n_bad = 0
    schema = pa.schema([("session_id", pa.string()), ("templates", pa.list_(pa.string())),
                        ("label", pa.string()), ("event_ids", pa.list_(pa.string())),
                        ("start_line", pa.int64()), ("n_lines", pa.int64())])
    with atomic_path(out / SESSIONS) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        for lo in range(0, max(len(names), 1), SESSION_BATCH):
            batch = {k: [] for k in schema.names}
            for name, rows in zip(names[lo:lo + SESSION_BATCH],
                                  members[lo:lo + SESSION_BATCH], strict=False):
                rows = np.asarray(rows, dtype=np.int64)
                is_bad = bool(bad[rows].any())
                n_bad += is_bad
                batch["session_id"].append(name)
                batch["templates"].append(texts[code[rows]].tolist())
                batch["event_ids"].append(ids[code[rows]].tolist())
                batch["label"].append(ABNORMAL if is_bad else NORMAL)
                batch["start_line"].append(int(line_no[rows[0]]) if len(rows) else -1)
                batch["n_lines"].append(len(rows))
            writer.write_table(pa.table(batch, schema=schema))
    stats = {"sessions": len(names), "abnormal": n_bad,
             "anomaly_ratio": n_bad / len(names) if names else 0.0,
             "test_period_first_row": start_row, "test_period_lines": int(total - start_row)}
    return stats, np.unique(code[code >= 0])


# -- the step ---------------------------------------------------------------------------------
def build_datasets(out_dir: str | Path, params: BuildParams, extra_meta: dict | None = None,
                   structured: str | Path | None = None,
                   described: dict[str, str] | None = None) -> dict:
    """Build train/val/test.parquet, the session files and meta.json in ``out_dir``.

    Args:
        out_dir: folder holding ``structured.parquet`` (and receiving the outputs).
        params: build parameters.
        extra_meta: merged into meta.json (parse statistics, checksums, patch report).
        structured: structured.parquet path when it is not in ``out_dir``.
        described: ``{name: sha256}`` of files outside ``out_dir`` that meta.json describes
            (the parse outputs when ``out_dir`` is a staging folder).

    Returns:
        The meta dictionary written to ``meta.json``.
    """
    params.check()
    out = Path(out_dir)
    src = Path(structured) if structured else out / "structured.parquet"
    require_file(src, "structured parquet", hint="run parse first")
    templates = label_templates(template_table(src), params.template_label)
    templates["split"] = np.asarray(SPLITS, dtype=object)[split_templates(len(templates),
                                                                           params.split)]
    frames = {
        "train": sample_train(templates[templates["split"] == "train"], params.train_size,
                              params.anomaly_ratio, params.seed),
        "val": templates[templates["split"] == "val"],
        "test": templates[templates["split"] == "test"],
    }
    counts, ratios = {}, {}
    for split, frame in frames.items():
        rl = rl_rows(frame, split, params.dataset, params.prompt)
        write_rl_parquet(rl, out / f"{split}.parquet")
        counts[split] = len(rl)
        ratios[split] = float((frame["label"] == ABNORMAL).mean()) if len(frame) else 0.0
    sessions, used = build_sessions(src, out, params, templates, params.split[2])
    session_rl = rl_rows(templates.iloc[used], "session", params.dataset, params.prompt)
    write_rl_parquet(session_rl, out / SESSION_TEMPLATES)
    sessions["unique_templates"] = len(session_rl)
    meta = {
        "params": asdict(params),
        "params_sha256": params.digest(),
        "rows": counts,
        "anomaly_ratio": ratios,
        "templates": {
            "total": len(templates),
            "abnormal": int((templates["label"] == ABNORMAL).sum()),
            "per_split": {s: int((templates["split"] == s).sum()) for s in SPLITS},
            "abnormal_per_split": {
                s: int(((templates["split"] == s) & (templates["label"] == ABNORMAL)).sum())
                for s in SPLITS},
        },
        "lines": int(templates["n_lines"].sum()),
        "sessions_test": sessions,
        "sources": {"structured.parquet": sha256_file(src)},
    }
    for key, value in (extra_meta or {}).items():
        if isinstance(value, dict) and isinstance(meta.get(key), dict):
            meta[key] = {**meta[key], **value}
        else:
            meta[key] = value
    warn_single_class(meta)
    return write_meta(out, meta, described)


def warn_single_class(meta: dict) -> None:
    """Warn for every split (and the test sessions) that holds only one class."""
    parts = {split: (meta["rows"][split], meta["templates"]["abnormal_per_split"][split])
             for split in SPLITS}
    # the training split is a draw: count its rows through its anomaly ratio
    parts["train"] = (meta["rows"]["train"],
                      round(meta["anomaly_ratio"]["train"] * meta["rows"]["train"]))
    sessions = meta.get("sessions_test")
    if sessions:
        parts["sessions_test"] = (sessions["sessions"], sessions["abnormal"])
    for name, (total, abnormal) in parts.items():
        if total and abnormal in (0, total):
            only = ABNORMAL if abnormal else NORMAL
            logger.warning("%s holds only %s rows (%d of %d): precision, recall and F1 on it "
                           "are not meaningful", name, only, total, total)


def add_build_args(parser: argparse.ArgumentParser) -> None:
    """Add the dataset-building options shared by ``build`` and ``prepare``."""
    add_seed_flag(parser, "seed of the training-set draw")
    add_flag(parser, "--prompt", choices=sorted(SYSTEM_PROMPTS), default="cot",
             help="system prompt of the chat rows (logdata.templates.prompts.SYSTEM_PROMPTS)")
    add_flag(parser, "--train-size", type=int, default=2000, metavar="N",
             help="training rows drawn from the train templates")
    add_flag(parser, "--anomaly-ratio", type=float, default=0.15, metavar="R",
             help="share of abnormal rows in the training draw")
    add_flag(parser, "--split", type=float, nargs=3, default=(0.6, 0.2, 0.2),
             metavar=("TRAIN", "VAL", "TEST"), help="template shares per split")
    add_flag(parser, "--template-label", choices=("majority", "any"), default="majority",
             help="a template is abnormal when half (majority) or any of its lines are")
    add_window_flags(parser, kind_help="test-session windows (default: the dataset's)",
                     size_help="lines (count, default 100) or seconds (time, default 3600)",
                     step_help="lines or seconds between window starts (default: the size)")


#: ``--window`` kind (:data:`logdata.cliargs.WINDOW_KINDS`) → the build step's own name.
WINDOW_KIND: dict[str, str] = {"count": "fixed"}

#: Window size used when ``--window`` picks a kind other than the dataset's default.
DEFAULT_WINDOW_SIZE: dict[str, float] = {"fixed": 100, "time": 3600, "block": 0}


def params_from_args(args: argparse.Namespace, fmt: DatasetFormat) -> BuildParams:
    """Resolve build parameters from CLI arguments and the dataset format's defaults."""
    default_window = WINDOW_KIND.get(fmt.window, fmt.window)
    window = WINDOW_KIND.get(args.window, args.window) or default_window
    default_size = fmt.window_size if window == default_window else DEFAULT_WINDOW_SIZE[window]
    size = args.window_size if args.window_size is not None else default_size
    step = args.window_step
    if step is None and window == default_window and fmt.window_step != fmt.window_size:
        step = fmt.window_step
    if window == "block":
        size, step = 0, None
    params = BuildParams(
        dataset=fmt.name, seed=args.seed, prompt=args.prompt, train_size=args.train_size,
        anomaly_ratio=args.anomaly_ratio, split=tuple(args.split),
        template_label=args.template_label, window=window, window_size=size, window_step=step,
    )
    params.check()
    if window == "block" and not fmt.has_blocks:
        raise LogDataError(f"--window block needs block ids; format {fmt.name} has none "
                           "(its label rule is not blocks)")
    return params


#: Files ``build`` writes (besides ``meta.json``).
BUILD_OUTPUTS: tuple[str, ...] = (*(f"{s}.parquet" for s in SPLITS), SESSIONS, SESSION_TEMPLATES)
#: Parts of a ``parse`` meta.json that ``build`` carries into its own.
PARSE_META_KEYS: tuple[str, ...] = ("dataset", "format", "parse", "labels", "sources")


def build_format(args: argparse.Namespace, parse_meta: dict) -> DatasetFormat:
    """The format of ``--dataset``/``--format-file``, else the one ``parse`` stored in meta.json.

    Raises:
        LogDataError: when none is given and the meta holds none.
    """
    if args.dataset or args.format_file:
        return resolve_format(args.dataset, args.format_file)
    fmt = format_from_meta(parse_meta)
    if fmt is None:
        raise LogDataError(f"no meta.json with a format beside {args.input or args.out}; pass "
                           "--dataset or --format-file")
    return fmt


def run(args: argparse.Namespace) -> int:
    """Run the ``build`` subcommand: outputs staged, moved into --out together with meta.json."""
    out = Path(args.out)
    src = Path(args.input) if args.input else out / "structured.parquet"
    require_file(src, "structured parquet", hint="run parse first")
    src_sha = verify_file(src)  # the sha256 when parse's meta lists the file, else None
    parse_meta = read_meta(src.parent)
    fmt = build_format(args, parse_meta)
    params = params_from_args(args, fmt)
    described: dict[str, str] = {}
    if src.parent.resolve() == out.resolve():  # the parse outputs stay and are described too
        described = {name: sha for name, sha in listed_files(parse_meta).items()
                     if name not in BUILD_OUTPUTS and name != META and (out / name).is_file()}
        described.setdefault(src.name, src_sha or sha256_file(src))
    extra = {key: parse_meta[key] for key in PARSE_META_KEYS if key in parse_meta}
    extra.setdefault("dataset", fmt.name)
    extra.setdefault("format", fmt.to_json())
    with staged_output(out, BUILD_OUTPUTS, args.overwrite, keep=described) as stage:
        meta = build_datasets(stage, params, {"kind": "build", **extra}, structured=src,
                              described=described)
    print(f"built {args.out}: rows {meta['rows']}, sessions {meta['sessions_test']['sessions']}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``build`` subcommand."""
    from logdata.parse import add_format_args

    parser = add_command(subparsers, "build", "structured.parquet → VeRL parquet + sessions")
    add_format_args(parser, required=False)
    add_out_flag(parser, "output folder (also where structured.parquet is read from when "
                 "--input is not given)")
    add_input_flag(parser, "structured.parquet (default: <out>/structured.parquet)",
                   required=False, aliases=("--structured",))
    add_overwrite_flag(parser, "replace the build outputs of an earlier run in --out")
    add_build_args(parser)
    add_progress_flag(parser, "hide progress bars (build shows none; accepted by every step)")
    parser.set_defaults(func=run)
