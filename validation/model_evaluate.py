#!/usr/bin/env python
r"""Evaluate predictions at template and session level; compare several runs.

Usage::

    python validation/model_evaluate.py --predictions outputs/pred/predictions.parquet \\
        --sessions datasets/bgl/sessions_test.parquet --out outputs/eval
    python validation/model_evaluate.py --compare outputs/eval_sft outputs/eval_grpo --out outputs/cmp

Writes ``metrics.json`` (keys per DESIGN.md), ``metrics.md`` and ``confusion.png`` into ``--out``.
Answers are re-parsed from ``response`` with :func:`reward.parsing.parse_answer` (the parser the
training reward uses). ``unknown`` counts as wrong unless ``--unknown-as normal``.

Session level follows RationAnomaly by default (coverage mode ``test_templates``): sessions are
judged on the predictions of the test split only, and a session holding a template without a
prediction is skipped (``--missing-template-rule skip``). ``--session-predictions`` (predictions on
``sessions_templates.parquet``, which also holds templates first seen in the train/val periods)
opts into coverage mode ``full``, which is not comparable with the paper. ``metrics.json`` records
the mode in ``session.coverage_mode`` with ``session.sessions_judged`` and ``sessions_skipped``.
"""

from __future__ import annotations

if __package__ in (None, ""):  # run by path: make the repository root importable
    import sys
    from pathlib import Path as _Path

    sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))

import argparse
import json
import logging
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from logdata.cliargs import add_flag, add_out_flag, new_parser
from logdata.errors import run_cli
from logdata.io import atomic_path, atomic_write_text, read_parquet, require_file
from reward.labels import LABELS, PREDICTIONS
from reward.parsing import extract_think, parse_answer
from validation import metrics as M

logger = logging.getLogger("validation.model_evaluate")

RUN_METADATA_KEY = b"logrl_run"  # parquet schema metadata key of model_predict's run record
PREDICTION_COLUMNS: tuple[str, ...] = ("data_source", "log", "label", "response")
SESSION_COLUMNS: tuple[str, ...] = ("session_id", "templates", "label")

# Which predictions judge the sessions (metrics.json ``session.coverage_mode``).
TEST_TEMPLATES = "test_templates"
FULL_COVERAGE = "full"
COVERAGE_MODES: dict[str, str] = {
    TEST_TEMPLATES: "sessions judged on the test split's predictions only (RationAnomaly's "
                    "protocol)",
    FULL_COVERAGE: "test predictions completed by --session-predictions, which include templates "
                   "first seen in the train/val periods (opt-in, not paper-comparable)",
}
# The paper's session protocol: test-split predictions, sessions with a missing template dropped.
PAPER_SESSION_PROTOCOL: tuple[str, str] = (TEST_TEMPLATES, "skip")

# Columns of the --compare table: (header, metrics.json path).
COMPARE_COLUMNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("tmpl P", ("template", "overall", "precision")),
    ("tmpl R", ("template", "overall", "recall")),
    ("tmpl F1", ("template", "overall", "f1")),
    ("tmpl acc", ("template", "overall", "accuracy")),
    ("tmpl macro-F1", ("template", "overall", "macro_f1")),
    ("unknown", ("template", "overall", "unknown_rate")),
    ("n", ("template", "overall", "n")),
    ("sess P", ("session", "overall", "precision")),
    ("sess R", ("session", "overall", "recall")),
    ("sess F1", ("session", "overall", "f1")),
    ("sess coverage", ("session", "overall", "coverage")),
    ("sess mode", ("session", "coverage_mode")),
    ("sess judged", ("session", "sessions_judged")),
)


class EvaluationError(ValueError):
    """Bad input to the evaluation (missing column, foreign label, unreadable file)."""


def read_run_metadata(path: str | Path) -> dict[str, Any]:
    """Read the run metadata that ``model_predict`` stores in the parquet key-value metadata.

    Args:
        path: A ``predictions.parquet`` file.

    Returns:
        The decoded metadata, or ``{}`` when the file has none.
    """
    import pyarrow.parquet as pq

    raw = (pq.read_schema(path).metadata or {}).get(RUN_METADATA_KEY)
    return json.loads(raw) if raw else {}


def _read_labelled(path: str | Path, columns: Sequence[str], what: str) -> pd.DataFrame:
    """Read a parquet file that must hold ``columns`` and a ``label`` column of LABELS only."""
    frame = read_parquet(path, EvaluationError)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise EvaluationError(f"{path}: missing column(s) {missing}")
    bad = sorted(set(frame["label"]) - set(LABELS))
    if bad:
        raise EvaluationError(f"{path}: {what} must be {LABELS}, found {bad[:5]}")
    return frame


def load_predictions(path: str | Path) -> pd.DataFrame:
    """Load predictions and re-parse ``pred`` from ``response`` with the shared parser.

    Args:
        path: A parquet file with at least :data:`PREDICTION_COLUMNS`.

    Returns:
        The frame with ``pred`` recomputed (any stored ``pred`` is replaced).

    Raises:
        EvaluationError: On an unreadable file, a missing column or a gold label outside
            ``normal``/``abnormal``.
    """
    frame = _read_labelled(path, PREDICTION_COLUMNS, "gold labels").copy()
    frame["pred"] = [parse_answer(r if isinstance(r, str) else "") for r in frame["response"]]
    return frame


def load_sessions(path: str | Path) -> pd.DataFrame:
    """Load ``sessions_test.parquet`` and check its columns and labels.

    Raises:
        EvaluationError: On an unreadable file, a missing column or a foreign label.
    """
    return _read_labelled(path, SESSION_COLUMNS, "session labels")


def template_metrics(frame: pd.DataFrame, unknown_as: str = "wrong") -> dict[str, Any]:
    """Template-level metrics overall and per ``data_source``.

    Every row counts once (with ``--n`` > 1 every sample is a row).

    Returns:
        ``{"overall": {...}, "per_source": {src: {...}}, "confusion_matrix": {...}}``.
    """
    gold, pred = list(frame["label"]), list(frame["pred"])
    per_source = {
        str(src): M.binary_metrics(list(g["label"]), list(g["pred"]), unknown_as)
        for src, g in frame.groupby("data_source", sort=True)
    }
    return {
        "overall": M.binary_metrics(gold, pred, unknown_as),
        "per_source": per_source,
        "confusion_matrix": _confusion(gold, pred),
    }


def _confusion(gold: Sequence[str], pred: Sequence[str]) -> dict[str, Any]:
    """Confusion matrix with its axis names, for JSON and the PNG."""
    return {"rows_gold": list(LABELS), "columns_pred": list(PREDICTIONS),
            "counts": M.confusion_matrix(gold, pred)}


def template_predictions(frame: pd.DataFrame) -> dict[str, str]:
    """Template text → prediction, majority-voted over repeated rows (samples, duplicates)."""
    grouped: dict[str, list[str]] = defaultdict(list)
    for log, pred in zip(frame["log"], frame["pred"], strict=True):
        grouped[str(log).strip()].append(pred)
    return {log: M.vote(preds) for log, preds in grouped.items()}


def session_level(
    sessions: pd.DataFrame,
    template_pred: dict[str, str],
    unknown_as: str = "wrong",
    missing_rule: str = "skip",
    coverage_mode: str = TEST_TEMPLATES,
) -> dict[str, Any]:
    """Session metrics overall (and per ``data_source`` when the sessions file has one).

    Args:
        sessions: Frame from :func:`load_sessions`.
        template_pred: Template text → prediction.
        unknown_as: Unknown convention.
        missing_rule: A key of :data:`validation.metrics.MISSING_TEMPLATE_RULES`.
        coverage_mode: A key of :data:`COVERAGE_MODES`: which predictions ``template_pred`` holds.

    Returns:
        ``coverage_mode`` (and what it means), ``paper_comparable`` (the mode and rule are the
        paper's), ``sessions_judged``, ``sessions_skipped``, ``overall``, ``confusion_matrix`` and
        ``per_source`` where the sessions have a ``data_source``.

    Raises:
        ValueError: On an unknown coverage mode or missing-template rule.
    """
    if coverage_mode not in COVERAGE_MODES:
        raise ValueError(f"coverage_mode must be one of {sorted(COVERAGE_MODES)}")

    def rows(frame: pd.DataFrame) -> list[tuple[list[str], str]]:
        return [([str(t).strip() for t in ts], lab)
                for ts, lab in zip(frame["templates"], frame["label"], strict=True)]

    overall = M.session_metrics(rows(sessions), template_pred, unknown_as, missing_rule)
    gold, pred, _ = M.session_outcomes(rows(sessions), template_pred, missing_rule)
    result: dict[str, Any] = {
        "coverage_mode": coverage_mode,
        "coverage_mode_means": COVERAGE_MODES[coverage_mode],
        "paper_comparable": (coverage_mode, missing_rule) == PAPER_SESSION_PROTOCOL,
        "sessions_judged": len(gold),
        "sessions_skipped": len(sessions) - len(gold),
        "overall": overall,
        "confusion_matrix": _confusion(gold, pred),
    }
    if "data_source" in sessions.columns:
        result["per_source"] = {
            str(src): M.session_metrics(rows(g), template_pred, unknown_as, missing_rule)
            for src, g in sessions.groupby("data_source", sort=True)
        }
    return result


def rationale_quality(frame: pd.DataFrame) -> dict[str, Any] | None:
    """BLEU and ROUGE-L of the ``<think>`` text against ``reference_rationale`` where present."""
    if "reference_rationale" not in frame.columns:
        return None
    has_ref = frame["reference_rationale"].map(lambda r: isinstance(r, str) and bool(r.strip()))
    sub = frame[has_ref]
    if sub.empty:
        return None
    refs = [extract_think(r) or r for r in sub["reference_rationale"]]
    hyps = [extract_think(r) for r in sub["response"]]
    return M.rationale_metrics(hypotheses=hyps, references=refs)


def evaluate(
    predictions: pd.DataFrame,
    sessions: pd.DataFrame | None = None,
    unknown_as: str = "wrong",
    missing_rule: str = "skip",
    session_predictions: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """Compute the full ``metrics.json`` content.

    Args:
        predictions: Frame from :func:`load_predictions` (with parsed ``pred``).
        sessions: Frame from :func:`load_sessions`, or ``None`` to skip session level.
        unknown_as: ``wrong`` (default) or ``normal``.
        missing_rule: A key of :data:`validation.metrics.MISSING_TEMPLATE_RULES`.
        session_predictions: Predictions on ``sessions_templates.parquet`` (every template of the
            test period), or ``None`` for the paper's protocol (coverage mode ``test_templates``:
            sessions judged on ``predictions`` only). When given, session level uses them,
            completed by ``predictions`` (coverage mode ``full``, not paper-comparable).

    Returns:
        ``{"template": …, "session": … | None, "rationale": … | None, "settings": …}``.
    """
    session = None
    if sessions is not None:
        template_pred = template_predictions(predictions)
        mode = TEST_TEMPLATES
        if session_predictions is not None:
            template_pred.update(template_predictions(session_predictions))
            mode = FULL_COVERAGE
        session = session_level(sessions, template_pred, unknown_as, missing_rule, mode)
    return {
        "template": template_metrics(predictions, unknown_as),
        "session": session,
        "rationale": rationale_quality(predictions),
        "settings": {"unknown_as": unknown_as, "missing_template_rule": missing_rule,
                     "missing_template_rule_means": M.MISSING_TEMPLATE_RULES[missing_rule]},
    }


def _fmt(value: Any) -> str:
    """Format a metric for markdown: floats with 4 decimals, ``n/a`` when undefined or absent."""
    return M.format_metric(value)


def _table(rows: dict[str, dict[str, Any]], keys: Sequence[str]) -> list[str]:
    """Markdown table with one row per entry of ``rows`` and one column per key."""
    lines = ["| | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(_fmt(m.get(k)) for k in keys) + " |"
              for name, m in rows.items()]
    return lines


def render_markdown(result: dict[str, Any], title: str = "Evaluation") -> str:
    """Render ``metrics.json`` content as a markdown report."""
    settings = result["settings"]
    lines = [f"# {title}", "",
             f"`unknown` scored as: **{settings['unknown_as']}**; missing-template rule: "
             f"**{settings['missing_template_rule']}** ({settings['missing_template_rule_means']}).",
             "", "## Template level", ""]
    tmpl = result["template"]
    lines += _table({"overall": tmpl["overall"], **tmpl["per_source"]}, M.METRIC_KEYS)
    if result.get("session"):
        lines += ["", *_session_section(result["session"])]
    if result.get("rationale"):
        lines += ["", "## Rationale quality", "", *_table({"rationale": result["rationale"]},
                                                           ("bleu", "rouge_l", "n"))]
    return "\n".join(lines) + "\n"


def _session_section(sess: dict[str, Any]) -> list[str]:
    """Markdown lines of the session level, headed and labelled by its coverage mode."""
    mode, overall = sess["coverage_mode"], sess["overall"]
    paper = "yes" if sess["paper_comparable"] else "no"
    lines = [f"## Session level, coverage mode `{mode}` (paper-comparable: {paper})", "",
             f"`{mode}`: {sess['coverage_mode_means']}. Judged **{sess['sessions_judged']}** of "
             f"{overall['n_sessions']} sessions, skipped **{sess['sessions_skipped']}**.", ""]
    if not sess["sessions_judged"]:
        lines += ["No session was judged: every session holds a template without a prediction, "
                  "so the metrics below are undefined (n/a; null in metrics.json).", ""]
    keys = (*M.METRIC_KEYS, "n_sessions", "coverage", "template_coverage")
    return lines + _table({f"overall ({mode})": overall, **sess.get("per_source", {})}, keys)


def plot_confusion(result: dict[str, Any], path: Path) -> None:
    """Draw the template (and session) confusion matrices to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("template", result["template"]["confusion_matrix"])]
    if result.get("session"):
        panels.append(("session", result["session"]["confusion_matrix"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.8), squeeze=False)
    for ax, (name, cm) in zip(axes[0], panels, strict=True):
        counts = cm["counts"]
        ax.imshow(counts, cmap="Blues")
        ax.set_xticks(range(len(cm["columns_pred"])), cm["columns_pred"])
        ax.set_yticks(range(len(cm["rows_gold"])), cm["rows_gold"])
        ax.set_xlabel("predicted")
        ax.set_ylabel("gold")
        ax.set_title(f"{name} level")
        top = max(max(r) for r in counts) or 1
        for i, row in enumerate(counts):
            for j, v in enumerate(row):
                ax.text(j, i, str(v), ha="center", va="center",
                        color="white" if v > top / 2 else "black")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def _dig(data: dict[str, Any], keys: Sequence[str]) -> Any:
    """Follow ``keys`` into nested dicts; ``None`` when a level is missing."""
    for key in keys:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def compare_table(run_dirs: Sequence[Path]) -> str:
    """One markdown table over several runs' ``metrics.json`` (the ablation table).

    Raises:
        EvaluationError: When a folder has no readable ``metrics.json``.
    """
    rows = {}
    for run in run_dirs:
        file = Path(run) / "metrics.json"
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise EvaluationError(f"cannot read {file}: {exc}") from exc
        rows[Path(run).name or str(run)] = {h: _dig(data, keys) for h, keys in COMPARE_COLUMNS}
    return "\n".join(_table(rows, [h for h, _ in COMPARE_COLUMNS])) + "\n"


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface."""
    p = new_parser(description=__doc__.split("\n\n")[0])
    add_flag(p, "--predictions", type=Path, metavar="PATH",
             help="predictions.parquet from model_predict (required unless --compare)")
    add_flag(p, "--sessions", type=Path, metavar="PATH",
             help="sessions_test.parquet (session level; default: template level only)")
    add_flag(p, "--session-predictions", type=Path, metavar="PATH",
             help="opt-in coverage mode 'full': predictions on sessions_templates.parquet "
             "(every template of the test sessions, including templates first seen in the "
             "train/val periods); not paper-comparable. Default: coverage mode "
             "'test_templates', sessions judged on --predictions only (RationAnomaly)")
    add_out_flag(p, "output folder")
    add_flag(p, "--unknown-as", choices=M.UNKNOWN_CONVENTIONS, default="wrong",
             help="how an unknown answer is scored (default: wrong)")
    add_flag(p, "--missing-template-rule", choices=sorted(M.MISSING_TEMPLATE_RULES),
             default="skip", help="sessions whose templates lack predictions (default "
             "skip, the paper's); "
             + "; ".join(f"{k}: {v}" for k, v in M.MISSING_TEMPLATE_RULES.items()))
    add_flag(p, "--compare", type=Path, nargs="+", metavar="DIR",
             help="render one table over these runs' metrics.json (no evaluation; default: off)")
    return p


def run(args: argparse.Namespace) -> str:
    """Execute the command; return the text ``main`` prints."""
    args.out.mkdir(parents=True, exist_ok=True)
    if args.compare:
        table = compare_table(args.compare)
        atomic_write_text(args.out / "compare.md", table)
        return table
    if args.predictions is None:
        raise EvaluationError("--predictions is required (or use --compare)")
    for flag, path in (("--predictions", args.predictions), ("--sessions", args.sessions),
                       ("--session-predictions", args.session_predictions)):
        if path is not None:
            require_file(path, flag, EvaluationError)
    if args.session_predictions is not None and args.sessions is None:
        raise EvaluationError("--session-predictions needs --sessions")
    frame = load_predictions(args.predictions)
    sessions = load_sessions(args.sessions) if args.sessions else None
    session_frame = (load_predictions(args.session_predictions)
                     if args.session_predictions is not None else None)
    result = evaluate(frame, sessions, args.unknown_as, args.missing_template_rule, session_frame)
    result["run"] = read_run_metadata(args.predictions)
    result["inputs"] = {
        "predictions": str(args.predictions),
        "sessions": str(args.sessions) if args.sessions else None,
        "session_predictions": str(args.session_predictions) if args.session_predictions else None,
    }
    _warn_session_coverage(result["session"])
    atomic_write_text(args.out / "metrics.json", json.dumps(result, indent=2, sort_keys=True) + "\n")
    report = render_markdown(result, title=f"Evaluation of {args.predictions.name}")
    atomic_write_text(args.out / "metrics.md", report)
    plot_confusion(result, args.out / "confusion.png")
    return report


def _warn_session_coverage(session: dict[str, Any] | None) -> None:
    """Log how many sessions were judged when some were left out."""
    if not session or not session["sessions_skipped"]:
        return
    overall = session["overall"]
    logger.warning("session coverage %.3f (mode %s, rule %s): %d of %d sessions judged, %d skipped",
                   overall["coverage"], session["coverage_mode"], overall["missing_template_rule"],
                   session["sessions_judged"], overall["n_sessions"], session["sessions_skipped"])
    if not session["sessions_judged"] and session["coverage_mode"] == TEST_TEMPLATES:
        logger.warning("no session judged: every test session holds a template outside the test "
                       "split; --session-predictions gives coverage mode 'full' (not "
                       "paper-comparable)")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    return run_cli(lambda: print(run(args), end=""), (EvaluationError, OSError))


if __name__ == "__main__":
    sys.exit(main())
