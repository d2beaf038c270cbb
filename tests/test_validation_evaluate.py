"""Evaluation on hand-built predictions, checked against metrics computed by hand."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from validation import metrics as M
from validation import model_evaluate as E

REPO = Path(__file__).resolve().parents[1]

WHY = "the kernel reported a fatal machine check error on the node"

# (data_source, log, gold, response). The stored `pred` column is deliberately wrong ("normal"
# everywhere): evaluation must re-parse the response with reward.parsing.parse_answer.
ROWS = [
    ("synthetic", "A", "abnormal", f"<think>{WHY}</think><answer>abnormal</answer>"),  # TP
    ("synthetic", "B", "abnormal", "<answer>maybe</answer>"),  # unknown, abnormal gold
    ("synthetic", "C", "normal", "<answer>normal</answer>"),  # TN
    ("synthetic", "D", "normal", "I think it is abnormal"),  # unknown (no tags), normal gold
    ("bgl", "E", "abnormal", "<think>x</think><answer>Abnormal.</answer>"),  # TP
    ("bgl", "F", "normal", "<answer>abnormal</answer>"),  # FP
    ("bgl", "G", "normal", "<answer>normal</answer>"),  # TN
    ("bgl", "H", "abnormal", "<answer>normal</answer>"),  # FN
    ("bgl", "I", "abnormal", "<answer>normal</answer><answer>abnormal</answer>"),  # TP (last)
]

# (session_id, templates, gold). Z and Y have no prediction.
SESSIONS = [
    ("S1", ["C", "G"], "normal"),  # normal -> TN
    ("S2", ["C", "A"], "abnormal"),  # abnormal -> TP
    ("S3", ["G", "B"], "abnormal"),  # unknown -> FN (either convention)
    ("S4", ["C", "D"], "normal"),  # unknown -> FP (wrong) / TN (normal)
    ("S5", ["G", "H"], "abnormal"),  # normal -> FN
    ("S6", ["F", "G"], "normal"),  # abnormal -> FP
    ("S7", ["C", "Z"], "normal"),  # missing Z
    ("S8", ["Z", "E"], "abnormal"),  # missing Z, but E abnormal
    ("S9", ["Y"], "normal"),  # nothing predicted
    ("S10", ["A", "E"], "abnormal"),  # TP
]


def write_inputs(folder: Path) -> tuple[Path, Path]:
    preds = pd.DataFrame(ROWS, columns=["data_source", "log", "label", "response"])
    preds.insert(0, "index", range(len(preds)))
    preds["pred"] = "normal"
    preds["reference_rationale"] = None
    preds.loc[0, "reference_rationale"] = f"<think>{WHY}</think><answer>abnormal</answer>"
    preds.loc[4, "reference_rationale"] = "<think>routine status message</think>"
    sessions = pd.DataFrame(SESSIONS, columns=["session_id", "templates", "label"])
    p, s = folder / "predictions.parquet", folder / "sessions_test.parquet"
    preds.to_parquet(p)
    sessions.to_parquet(s)
    return p, s


def assert_metrics(got: dict, precision, recall, f1, accuracy, macro_f1, unknown_rate, n):
    expected = {"precision": precision, "recall": recall, "f1": f1, "accuracy": accuracy,
                "macro_f1": macro_f1, "unknown_rate": unknown_rate, "n": n}
    for key, value in expected.items():
        assert got[key] == pytest.approx(value), key


def test_cli_matches_hand_computation(tmp_path: Path) -> None:
    p, s = write_inputs(tmp_path)
    out = tmp_path / "eval"
    proc = subprocess.run(
        [sys.executable, str(REPO / "validation" / "model_evaluate.py"), "--predictions", str(p),
         "--sessions", str(s), "--out", str(out)],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    m = json.loads((out / "metrics.json").read_text())
    tmpl = m["template"]
    # overall, unknown wrong: TP=3 (A,E,I) FP=2 (F, D-unknown) FN=2 (H, B-unknown) TN=2 (C,G)
    # normal-class F1: P=2/4, R=2/4 -> 1/2; macro = (3/5 + 1/2) / 2
    assert_metrics(tmpl["overall"], 3 / 5, 3 / 5, 3 / 5, 5 / 9, 0.55, 2 / 9, 9)
    # synthetic: TP=1 FN=1 TN=1 FP=1; both unknowns are wrong
    assert_metrics(tmpl["per_source"]["synthetic"], 1 / 2, 1 / 2, 1 / 2, 1 / 2, 1 / 2, 1 / 2, 4)
    # bgl: TP=2 FP=1 FN=1 TN=1 -> P=R=F1=2/3, acc=3/5, normal F1=1/2
    assert_metrics(tmpl["per_source"]["bgl"], 2 / 3, 2 / 3, 2 / 3, 3 / 5, 7 / 12, 0.0, 5)
    # rows gold normal/abnormal, columns predicted normal/abnormal/unknown
    assert tmpl["confusion_matrix"]["counts"] == [[2, 1, 1], [1, 3, 1]]
    # sessions (skip rule): S1..S6, S10 evaluated: TP=2 TN=1 FN=2 FP=2, unknown S3,S4
    sess = m["session"]["overall"]
    assert_metrics(sess, 1 / 2, 1 / 2, 1 / 2, 3 / 7, (1 / 2 + 1 / 3) / 2, 2 / 7, 7)
    assert sess["n_sessions"] == 10
    assert sess["coverage"] == pytest.approx(7 / 10)
    assert sess["complete_sessions"] == 7
    assert sess["template_coverage"] == pytest.approx(8 / 10)  # Z, Y of 10 distinct lack preds
    # paper protocol by default: test predictions only, S7 S8 S9 (a template without a
    # prediction) skipped whole
    assert m["session"]["coverage_mode"] == "test_templates"
    assert m["session"]["paper_comparable"] is True
    assert (m["session"]["sessions_judged"], m["session"]["sessions_skipped"]) == (7, 3)
    assert m["inputs"]["session_predictions"] is None
    # rationale: row 0 identical think text, row 4 disjoint -> ROUGE-L mean 1/2
    assert m["rationale"]["n"] == 2
    assert m["rationale"]["rouge_l"] == pytest.approx(0.5)
    assert 0.5 <= m["rationale"]["bleu"] < 0.6
    report = (out / "metrics.md").read_text()
    assert "| overall |" in report
    assert "## Session level, coverage mode `test_templates` (paper-comparable: yes)" in report
    assert "Judged **7** of 10 sessions, skipped **3**." in report
    assert "| overall (test_templates) | 0.5000 |" in report
    assert (out / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unknown_as_normal_reference_convention(tmp_path: Path) -> None:
    p, s = write_inputs(tmp_path)
    result = E.evaluate(E.load_predictions(p), E.load_sessions(s), unknown_as="normal")
    # D (normal gold, unknown) becomes TN: TP=3 FP=1 FN=2 TN=3
    # normal-class: P=3/5, R=3/4 -> F1 = 2/3; macro = (2/3 + 2/3)/2
    assert_metrics(result["template"]["overall"], 3 / 4, 3 / 5, 2 / 3, 2 / 3, 2 / 3, 2 / 9, 9)
    # sessions: S4 becomes TN: TP=2 TN=2 FN=2 FP=1 -> P=2/3, R=1/2, F1=4/7
    # normal-class: P=2/4, R=2/3 -> 4/7; macro 4/7
    assert_metrics(result["session"]["overall"], 2 / 3, 1 / 2, 4 / 7, 4 / 7, 4 / 7, 2 / 7, 7)


@pytest.mark.parametrize(
    ("rule", "tp", "fp", "fn", "tn", "unknown", "coverage"),
    [
        ("unknown", 3, 4, 2, 1, 4, 1.0),  # S7 FP, S8 TP, S9 FP (unknowns S3 S4 S7 S9)
        ("normal", 3, 2, 2, 3, 2, 1.0),  # S7 TN, S8 TP, S9 TN
        ("ignore", 3, 2, 2, 2, 2, 0.9),  # S7 from C -> TN, S8 TP, S9 left out
    ],
)
def test_missing_template_rules(tmp_path: Path, rule, tp, fp, fn, tn, unknown, coverage) -> None:
    p, s = write_inputs(tmp_path)
    got = E.evaluate(E.load_predictions(p), E.load_sessions(s), missing_rule=rule)
    # test predictions only, but a rule other than the paper's skip: not paper-comparable
    assert got["session"]["coverage_mode"] == "test_templates"
    assert got["session"]["paper_comparable"] is False
    judged = round(coverage * len(SESSIONS))
    assert (got["session"]["sessions_judged"], got["session"]["sessions_skipped"]) == (
        judged, len(SESSIONS) - judged)
    sess = got["session"]["overall"]
    assert (sess["tp"], sess["fp"], sess["fn"], sess["tn"]) == (tp, fp, fn, tn)
    n = tp + fp + fn + tn
    assert sess["n"] == n
    assert sess["unknown_rate"] == pytest.approx(unknown / n)
    assert sess["coverage"] == pytest.approx(coverage)
    assert sess["precision"] == pytest.approx(tp / (tp + fp))


def test_session_predictions_complete_coverage(tmp_path: Path) -> None:
    p, s = write_inputs(tmp_path)
    # predictions on sessions_templates.parquet: Z abnormal, Y normal, and G re-predicted abnormal
    extra = pd.DataFrame([("bgl", "Z", "abnormal", "<answer>abnormal</answer>"),
                          ("bgl", "Y", "normal", "<answer>normal</answer>"),
                          ("bgl", "G", "normal", "<answer>abnormal</answer>")],
                         columns=["data_source", "log", "label", "response"])
    extra.insert(0, "index", range(len(extra)))
    extra["pred"] = "normal"
    sp = tmp_path / "session_predictions.parquet"
    extra.to_parquet(sp)
    out = tmp_path / "eval"
    assert E.main(["--predictions", str(p), "--sessions", str(s), "--session-predictions", str(sp),
                   "--out", str(out)]) == 0
    got = json.loads((out / "metrics.json").read_text())
    sess = got["session"]["overall"]
    # G is now abnormal: S1 FP, S2 TP, S3 TP, S4 FP (unknown D), S5 TP, S6 FP,
    # S7 FP (Z abnormal, gold normal), S8 TP, S9 TN (Y normal), S10 TP
    assert sess["coverage"] == pytest.approx(1.0)
    assert (sess["tp"], sess["fp"], sess["fn"], sess["tn"]) == (5, 4, 0, 1)
    # opt-in full coverage is labelled as such, with the paper's skip rule still in force
    assert got["session"]["coverage_mode"] == "full"
    assert got["session"]["paper_comparable"] is False
    assert (got["session"]["sessions_judged"], got["session"]["sessions_skipped"]) == (10, 0)
    assert got["settings"]["missing_template_rule"] == "skip"
    report = (out / "metrics.md").read_text()
    assert "## Session level, coverage mode `full` (paper-comparable: no)" in report
    assert "| overall (full) |" in report
    # template level is unchanged by the session predictions
    assert got["template"]["overall"]["n"] == len(ROWS)


def _all_missing_sessions(tmp_path: Path) -> Path:
    """Three sessions that all hold Z, which has no test prediction."""
    sessions = pd.DataFrame([("T1", ["A", "Z"], "abnormal"), ("T2", ["Z"], "normal"),
                             ("T3", ["C", "G", "Z"], "normal")],
                            columns=["session_id", "templates", "label"])
    path = tmp_path / "all_missing.parquet"
    sessions.to_parquet(path)
    return path


def test_no_session_judged_is_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    p, _ = write_inputs(tmp_path)
    # every session holds Z, which has no test prediction: the paper's skip rule drops all three
    s = _all_missing_sessions(tmp_path)
    out = tmp_path / "eval"
    with caplog.at_level("WARNING", logger="validation.model_evaluate"):
        assert E.main(["--predictions", str(p), "--sessions", str(s), "--out", str(out)]) == 0
    got = json.loads((out / "metrics.json").read_text())["session"]
    assert (got["sessions_judged"], got["sessions_skipped"]) == (0, 3)
    assert got["overall"]["n"] == 0 and got["overall"]["coverage"] == 0.0
    assert "No session was judged" in (out / "metrics.md").read_text()
    assert "0 of 3 sessions judged, 3 skipped" in caplog.text
    assert "no session judged" in caplog.text


def test_session_predictions_need_sessions(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    p, _ = write_inputs(tmp_path)
    assert E.main(["--predictions", str(p), "--session-predictions", str(p),
                   "--out", str(tmp_path / "o")]) == 2
    assert "needs --sessions" in capsys.readouterr().err


def test_compare_renders_one_row_per_run(tmp_path: Path) -> None:
    p, s = write_inputs(tmp_path)
    for name, convention in (("strict", "wrong"), ("reference", "normal")):
        assert E.main(["--predictions", str(p), "--sessions", str(s), "--out",
                       str(tmp_path / name), "--unknown-as", convention]) == 0
    assert E.main(["--compare", str(tmp_path / "strict"), str(tmp_path / "reference"),
                   "--out", str(tmp_path / "cmp")]) == 0
    table = (tmp_path / "cmp" / "compare.md").read_text().splitlines()
    assert table[0].startswith("| | tmpl P |")
    assert table[0].endswith("| sess coverage | sess mode | sess judged |")
    assert table[2].startswith("| strict | 0.6000 | 0.6000 | 0.6000 |")
    assert table[2].endswith("| 0.7000 | test_templates | 7 |")
    assert table[3].startswith("| reference | 0.7500 | 0.6000 | 0.6667 |")


def test_bad_inputs_give_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.parquet"
    pd.DataFrame({"log": ["x"], "label": ["weird"], "response": [""],
                  "data_source": ["bgl"]}).to_parquet(bad)
    assert E.main(["--predictions", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "gold labels must be" in capsys.readouterr().err
    assert E.main(["--predictions", str(tmp_path / "nope.parquet"), "--out", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_binary_metrics_rejects_foreign_strings() -> None:
    with pytest.raises(ValueError, match="prediction must be"):
        M.binary_metrics(["normal"], ["Normal"])
    with pytest.raises(ValueError, match="differ in length"):
        M.binary_metrics(["normal"], [])
    empty = M.binary_metrics([], [])
    assert empty["n"] == 0 and empty["f1"] is None


# ---------------------------------------------------------------------------------------------
# Undefined metrics (a zero denominator) are null in metrics.json and n/a in print (issue 11)
# ---------------------------------------------------------------------------------------------

UNDEFINED_WHEN_EMPTY = ("precision", "recall", "f1", "accuracy", "macro_f1", "unknown_rate")


def test_no_session_judged_gives_null_and_na(tmp_path: Path) -> None:
    p, _ = write_inputs(tmp_path)
    s = _all_missing_sessions(tmp_path)
    out = tmp_path / "eval"
    assert E.main(["--predictions", str(p), "--sessions", str(s), "--out", str(out)]) == 0
    raw = (out / "metrics.json").read_text()
    overall = json.loads(raw)["session"]["overall"]
    assert {k: overall[k] for k in UNDEFINED_WHEN_EMPTY} == dict.fromkeys(UNDEFINED_WHEN_EMPTY)
    assert overall["n"] == 0 and overall["coverage"] == 0.0  # 0 of 3 sessions: defined, zero
    # distinct session templates A, Z, C, G; predicted A, C, G
    row = "| overall (test_templates) | n/a | n/a | n/a | n/a | n/a | n/a | 0 | 3 | 0.0000 | 0.7500 |"
    assert row in (out / "metrics.md").read_text().splitlines()


def test_zero_denominators_are_undefined() -> None:
    empty = M.binary_metrics([], [])
    assert {k: empty[k] for k in UNDEFINED_WHEN_EMPTY} == dict.fromkeys(UNDEFINED_WHEN_EMPTY)
    # nothing predicted abnormal: precision 0/0 is undefined; recall 0/1; F1 2·0/(0+0+1) = 0
    got = M.binary_metrics(["abnormal", "normal"], ["normal", "normal"])
    assert got["precision"] is None
    assert (got["recall"], got["f1"], got["accuracy"]) == (0.0, 0.0, 0.5)
    # macro-F1: abnormal F1 0, normal F1 2·1/(2·1+1+0) = 2/3
    assert got["macro_f1"] == pytest.approx((0.0 + 2 / 3) / 2)
    # only normal gold, all right: the abnormal class's P, R and F1 are undefined; macro-F1 is
    # the normal class's F1 alone (as scikit-learn averages over the labels present)
    got = M.binary_metrics(["normal", "normal"], ["normal", "normal"])
    assert (got["precision"], got["recall"], got["f1"]) == (None, None, None)
    assert (got["accuracy"], got["macro_f1"], got["unknown_rate"]) == (1.0, 1.0, 0.0)
    assert M.rationale_metrics([], []) == {"bleu": None, "rouge_l": None, "n": 0}
    assert M.format_metric(None) == "n/a" and M.format_metric(0.5) == "0.5000"
    assert M.format_metric(0.5, 3) == "0.500" and M.format_metric(7) == "7"
