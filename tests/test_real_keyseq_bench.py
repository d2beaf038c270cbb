"""benchmarks/real_keyseq.py (issue 21): DeepLog, the simple baselines, the report, and the smoke.

The smoke runs the benchmark's ``smoke`` profile on the first 30,000 lines of the real HDFS 2 %
sample; it skips when the data is absent.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from logdata.keyseq.vocab import KeyVocab
from validation.keyseq_baselines import count_vectors, new_key_flags, pca_flags, run_baselines
from verl_recipes.local.keyseq.deeplog import (
    DeepLogConfig,
    load_deeplog,
    save_deeplog,
    score_deeplog,
    train_deeplog,
)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import real_keyseq_report as report  # noqa: E402

GRAMMAR = [["A", "B", "C", "D"], ["A", "B", "B", "C", "D"], ["E", "F", "G"]]


def rows(sequences: list[list[str]], labels: list[str], vocab: KeyVocab) -> pd.DataFrame:
    """Sequence rows as ``logdata sequences`` writes them (one chunk each)."""
    return pd.DataFrame({"sequence_id": [f"s{i}" for i in range(len(sequences))],
                         "chunk": 0, "n_chunks": 1, "offset": 0, "keys": sequences,
                         "key_ids": [vocab.encode(s) for s in sequences], "label": labels})


def test_deeplog_learns_a_grammar_and_flags_its_breaks(tmp_path: Path) -> None:
    train_seqs = GRAMMAR * 40
    vocab = KeyVocab.build(train_seqs)
    train = rows(train_seqs, ["normal"] * len(train_seqs), vocab)
    config = DeepLogConfig(window=3, hidden=16, layers=1, top_g=1, epochs=40, batch_size=64,
                           lr=1e-2, seed=0)
    model, summary = train_deeplog(train, vocab, config, with_eos=True, progress=False)
    assert summary["loss_per_epoch"][-1] < summary["loss_per_epoch"][0]
    test = rows([["A", "B", "C", "D"], ["E", "F", "G"], ["A", "C", "B", "D"], ["E", "F", "X"],
                 ["A", "B", "C"]], ["normal", "normal", "abnormal", "abnormal", "abnormal"], vocab)
    scores = score_deeplog(model, test, vocab, config, with_eos=True).set_index("sequence_id")
    # swapped keys, an unseen key and a block cut short (its <eos> comes early) are misses
    assert scores["pred"].to_dict() == {"s0": "normal", "s1": "normal", "s2": "abnormal",
                                        "s3": "abnormal", "s4": "abnormal"}
    assert scores.loc["s0", "max_rank"] == 0 and scores.loc["s2", "max_rank"] >= 1
    # saved without pickle, reloaded to the same ranks
    (tmp_path / "vocab.json").write_text("{}")
    save_deeplog(model, config, tmp_path / "vocab.json", tmp_path / "m", summary)
    again, loaded = load_deeplog(tmp_path / "m", vocab)
    assert loaded == config
    pd.testing.assert_frame_equal(score_deeplog(again, test, vocab, loaded, True).set_index(
        "sequence_id"), scores)


def test_deeplog_does_not_judge_the_first_key() -> None:
    vocab = KeyVocab.build(GRAMMAR)
    config = DeepLogConfig(window=2, hidden=4, layers=1, epochs=1)
    model, _ = train_deeplog(rows(GRAMMAR, ["normal"] * 3, vocab), vocab, config, True, False)
    scores = score_deeplog(model, rows([["A"]], ["normal"], vocab), vocab, config, with_eos=False)
    assert scores.loc[0, "max_rank"] == 0 and scores.loc[0, "misses"] == 0


def test_simple_baselines_flag_what_they_should() -> None:
    rng = np.random.default_rng(0)
    normal = [["A", *["B"] * int(rng.integers(1, 4)), *["C"] * int(rng.integers(1, 3))]
              for _ in range(40)] + [["D", "E"] * int(rng.integers(1, 3)) for _ in range(20)]
    vocab = KeyVocab.build(normal)
    test = [["A", "B", "C"], ["A", "Z", "C"], ["A"] * 8 + ["C"]]
    frame = rows(test, ["normal", "abnormal", "abnormal"], vocab)
    assert new_key_flags(frame, vocab).tolist() == [False, True, False]
    train = rows(normal, ["normal"] * len(normal), vocab)
    flags, fit = pca_flags(count_vectors(train, len(vocab)), count_vectors(frame, len(vocab)))
    # eight A (every normal sequence has one) leave the normal subspace; A B C does not
    assert flags.tolist()[0] is False and flags.tolist()[2] is True and fit["components"] >= 1
    runs = run_baselines(train, frame, vocab, seeds=[0, 1])
    assert list(runs) == ["new_key", "pca", "isolation_forest", "local_outlier_factor"]
    assert [r["seed"] for r in runs["isolation_forest"]] == [0, 1] and len(runs["pca"]) == 1
    assert runs["new_key"][0]["pred"] == ["normal", "abnormal", "normal"]
    assert runs["local_outlier_factor"][0]["pred"][2] == "abnormal"


def test_rl_is_compared_over_the_whole_sweep_with_the_same_seed() -> None:
    def scores(ranks: list[int]) -> pd.DataFrame:
        return pd.DataFrame({"label": ["abnormal", "abnormal", "normal", "normal"],
                             "max_rank": ranks})

    ks = [1, 2, 3]
    base = {0: report.sweep(scores([3, 1, 2, 0]), ks)}
    better = {0: report.sweep(scores([3, 2, 0, 0]), ks)}  # the false alarm at K = 1 goes
    [row] = report.rl_comparison({"pretrain": base, "variant (best/)": better}, k=1)
    assert row["ks"] == ks and row["delta_f1_per_k"][0] == pytest.approx(0.2)
    # at recall 1 (pretrain's at K = 1) only K = 1 qualifies for pretrain: precision 2/3
    assert row["precision_at_equal_recall"]["mean"] == 1.0
    assert row["pretrain_precision"]["mean"] == pytest.approx(2 / 3, abs=1e-3)
    assert report.rl_comparison({"pretrain": base}, k=1) == []


@pytest.mark.slow
def test_real_keyseq_smoke_runs_and_resumes(tmp_path: Path, shared_data: Path,
                                           real_keyseq_smoke_work: Path) -> None:
    real_data_dir = shared_data
    if not (real_data_dir / "hdfs_2pct" / "HDFS_2pct.log.gz").is_file():
        pytest.skip("real HDFS sample (hdfs_2pct) absent")
    work, results = real_keyseq_smoke_work, tmp_path / "results"
    args = [sys.executable, str(ROOT / "benchmarks" / "real_keyseq.py"), "--profile", "smoke",
            "--work", str(work), "--data", str(real_data_dir), "--results", str(results)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=1200, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = json.loads((results / "real_keyseq.json").read_text())
    part = out["protocols"]["loggpt"]
    methods = [r["method"] for r in part["rows"]]
    assert methods[:4] == ["new_key", "pca", "isolation_forest", "local_outlier_factor"]
    assert {"deeplog", "pretrain", "logneo_ppo_ce (best/)", "loggpt_reinforce (last/)"} <= set(methods)
    assert part["data"]["counts"]["test"]["abnormal"] > 0
    assert len(part["rl_vs_pretrain"]) == 8  # 4 variants, best/ and last/
    assert (results / "real_keyseq.png").stat().st_size > 0
    again = subprocess.run(args, capture_output=True, text=True, timeout=600, check=False)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("done earlier") == 9, again.stderr[-3000:]
    assert np.isclose(json.loads((results / "real_keyseq.json").read_text())["protocols"]["loggpt"][
        "rows"][4]["f1"]["mean"], part["rows"][4]["f1"]["mean"])
