"""Log-key sequences: windowing, splits, chunking, vocabulary, RL rows and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from logdata.errors import LogDataError
from logdata.keyseq_vocab import SPECIAL_TOKENS, UNK, KeyVocab
from logdata.keyseq_windows import (
    UNKNOWN_KEY,
    WindowSpec,
    block_sessions,
    build_sequences,
    count_windows,
    time_windows,
)
from logdata.sequences import (
    SequenceConfig,
    build_sequence_datasets,
    chunk_sequences,
    prefix_length,
    rl_rows,
    split_chronological,
    split_loggpt,
)


def frame(times, keys, labels=None):
    labels = labels or ["normal"] * len(keys)
    return pd.DataFrame({"line_no": range(1, len(keys) + 1), "timestamp": times,
                         "event_id": keys, "label": labels})


def seqs(n_normal, n_abnormal, length=3):
    labels = ["normal"] * n_normal + ["abnormal"] * n_abnormal
    return pd.DataFrame({
        "sequence_id": [f"s{i}" for i in range(len(labels))],
        "keys": [[f"E{i % 4}"] * length for i in range(len(labels))],
        "label": labels, "n_events": length, "start": np.arange(len(labels), dtype=float),
    })


# --- time windows -------------------------------------------------------------------------

def test_time_windows_slide_and_skip_empty_grid_cells():
    # Lines at 0, 10, 40 s and then a long silence, then two lines at 1000 s.
    f = frame([0.0, 10.0, 40.0, 1000.0, 1001.0], ["A", "B", "C", "D", "E"])
    out = time_windows(f, 60, 30, min_events=1)
    got = dict(zip(out["sequence_id"], out["keys"].map(list), strict=True))
    # window k covers [30k, 30k + 60): k=0 → A B C, k=1 → C; 1000 s lies in k=32 and k=33
    assert got == {"time-0": ["A", "B", "C"], "time-1": ["C"], "time-32": ["D", "E"],
                   "time-33": ["D", "E"]}
    # no window was materialised for the ~30 empty grid cells in between
    assert len(out) == 4


def test_time_windows_drop_single_event_windows_and_label_any_abnormal():
    f = frame([0.0, 10.0, 40.0], ["A", "B", "C"], ["normal", "abnormal", "normal"])
    out = time_windows(f, 60, 30)  # min_events=2 (LogGPT)
    assert out["keys"].map(list).tolist() == [["A", "B", "C"]]
    assert out["label"].tolist() == ["abnormal"]
    assert out["start"].tolist() == [0.0]


def test_time_windows_edge_cases():
    assert time_windows(frame([], []), 60, 30).empty
    nulls = frame([None, None], ["A", "B"])
    assert time_windows(nulls, 60, 30).empty  # no timestamp: nothing to window
    with pytest.raises(LogDataError):
        time_windows(frame([0.0], ["A"]), 0, 30)
    with pytest.raises(LogDataError):
        time_windows(pd.DataFrame({"event_id": ["A"], "label": ["normal"]}), 60, 30)


def test_time_windows_sort_by_time_and_null_key_becomes_unknown():
    f = frame([20.0, 0.0, 5.0], ["late", None, "mid"])
    out = time_windows(f, 60, 60)
    assert out["keys"].map(list).tolist() == [[UNKNOWN_KEY, "mid", "late"]]


def test_count_windows():
    f = frame([None] * 5, list("ABCDE"))
    assert count_windows(f, 2, 2, min_events=2)["keys"].map(list).tolist() == [["A", "B"],
                                                                            ["C", "D"]]
    assert count_windows(f, 3, 1, min_events=1)["n_events"].tolist() == [3, 3, 3, 2, 1]
    assert count_windows(frame([], []), 3, 3).empty
    with pytest.raises(LogDataError):
        count_windows(f, 0, 1)


def test_block_sessions_dedupe_blocks_per_line_and_keep_order():
    f = pd.DataFrame({"line_no": [1, 2, 3, 4], "event_id": ["E1", "E2", "E3", "E4"],
                      "label": ["normal", "abnormal", "normal", "normal"],
                      "block_ids": [["b1", "b1"], ["b2"], ["b1", "b2"], None]})
    out = block_sessions(f)
    assert out["sequence_id"].tolist() == ["b1", "b2"]
    assert out["keys"].map(list).tolist() == [["E1", "E3"], ["E2", "E3"]]
    assert out["label"].tolist() == ["normal", "abnormal"]
    with pytest.raises(LogDataError):
        build_sequences(f.drop(columns="block_ids"), WindowSpec(kind="block"))


# --- splits -------------------------------------------------------------------------------

def test_loggpt_split_caps_n_train_and_puts_every_abnormal_in_test():
    s = seqs(30, 5)
    parts = split_loggpt(s, n_train=5000, val_ratio=0.1, seed=0)
    assert len(parts["train"]) + len(parts["val"]) == 30  # capped at the 30 normal sequences
    assert len(parts["val"]) == 3
    assert (parts["test"]["label"] == "abnormal").sum() == 5 and len(parts["test"]) == 5
    ids = [set(p["sequence_id"]) for p in parts.values()]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])


def test_loggpt_split_is_seeded():
    s = seqs(100, 10)
    a = split_loggpt(s, n_train=40, seed=3)
    b = split_loggpt(s, n_train=40, seed=3)
    c = split_loggpt(s, n_train=40, seed=4)
    assert a["train"]["sequence_id"].tolist() == b["train"]["sequence_id"].tolist()
    assert a["train"]["sequence_id"].tolist() != c["train"]["sequence_id"].tolist()
    assert len(a["test"]) == 100 - 40 + 10


def test_splits_without_normal_sequences_fail_clearly():
    with pytest.raises(LogDataError, match="no normal"):
        split_loggpt(seqs(0, 3))
    with pytest.raises(LogDataError, match="no normal"):
        split_chronological(seqs(0, 3), 0.5)


def test_chronological_split_excludes_training_period_anomalies():
    s = seqs(8, 2)
    s["start"] = [5, 0, 1, 2, 3, 4, 6, 7, 8, 9]  # s0 is late; abnormal s8, s9 are last
    s.loc[1, "label"] = "abnormal"  # an anomaly inside the training period
    parts = split_chronological(s, train_ratio=0.6, val_ratio=0.2)
    assert "s1" not in set(pd.concat(parts.values())["sequence_id"])
    assert parts["test"]["start"].min() > pd.concat([parts["train"], parts["val"]])["start"].max()
    assert parts["val"]["start"].min() > parts["train"]["start"].max()


# --- chunks, vocabulary, RL rows ----------------------------------------------------------

def test_long_sequences_are_chunked_not_truncated():
    s = pd.DataFrame({"sequence_id": ["long", "short"], "keys": [list("ABCDEFG"), ["A"]],
                      "label": ["abnormal", "normal"], "n_events": [7, 1], "start": [0.0, 1.0]})
    out = chunk_sequences(s, 3)
    long = out[out["sequence_id"] == "long"]
    assert [k for keys in long["keys"] for k in keys] == list("ABCDEFG")
    assert long["offset"].tolist() == [0, 3, 6]
    assert set(long["n_chunks"]) == {3} and set(long["label"]) == {"abnormal"}
    assert out[out["sequence_id"] == "short"]["n_chunks"].tolist() == [1]


def test_vocab_from_training_only_and_unknowns(tmp_path):
    vocab = KeyVocab.build([["E1", "E2", "E2"], ["E3"]])
    assert vocab.tokens[: len(SPECIAL_TOKENS)] == SPECIAL_TOKENS
    assert vocab.keys == ("E2", "E1", "E3")  # by frequency, then name
    assert vocab.encode(["E2", "NEW"]) == [4, vocab.id_of(UNK)]
    assert vocab.to_tokens(["NEW", "E1"]) == [UNK, "E1"]
    loaded = KeyVocab.load(vocab.save(tmp_path / "vocab.json"))
    assert loaded.tokens == vocab.tokens
    (tmp_path / "bad.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(LogDataError):
        KeyVocab.load(tmp_path / "bad.json")
    with pytest.raises(LogDataError):
        KeyVocab.build([["has space"]])


def test_rl_rows_prefix_and_continuation():
    vocab = KeyVocab.build([list("ABCDE")])
    rows = chunk_sequences(pd.DataFrame({
        "sequence_id": ["x", "y"], "keys": [list("ABCDEZ"), ["A"]], "label": ["normal"] * 2,
        "n_events": [6, 1], "start": [0.0, 1.0]}), 100)
    rl = rl_rows(rows, "test", vocab, "bgl", 0.2)
    assert len(rl) == 1  # the one-key row has no continuation
    row = rl.iloc[0]
    assert row["prompt"] == [{"role": "user", "content": "A"}]
    assert row["reward_model"] == {"style": "rule", "ground_truth": "B C D E <unk>"}
    assert row["ability"] == "log_next_key" and row["data_source"] == "bgl"
    assert row["extra_info"]["sequence_id"] == "x" and row["extra_info"]["split"] == "test"
    assert [prefix_length(n, 0.2) for n in (2, 5, 10, 11)] == [1, 1, 2, 2]


def test_build_writes_all_artefacts_and_vocab_ignores_test_keys(tmp_path):
    times = np.arange(0, 600, 5.0)
    keys = ["A", "B", "C", "D"] * 30
    labels = ["normal"] * 120
    keys[-3:] = ["ZZ", "ZZ", "ZZ"]  # only in the last windows
    labels[-3:] = ["abnormal"] * 3
    f = frame(times, keys, labels)
    meta = build_sequence_datasets(f, tmp_path, SequenceConfig(data_source="bgl", context=6,
                                                               n_train=10))
    for name in ("train", "val", "test", "rl_train", "rl_test"):
        assert (tmp_path / f"{name}.parquet").is_file()
    vocab = KeyVocab.load(tmp_path / "vocab.json")
    assert "ZZ" not in vocab.index
    test = pd.read_parquet(tmp_path / "test.parquet")
    assert meta["counts"]["test"]["unknown_keys"] > 0
    assert test["n_events"].max() <= 4  # context 6 = <bos> + 4 keys + <eos>
    assert meta["chunked_sequences"] > 0
    assert meta["counts"]["train"]["sequences"] + meta["counts"]["val"]["sequences"] == 10
    rl = pd.read_parquet(tmp_path / "rl_train.parquet")
    assert {"data_source", "prompt", "ability", "reward_model", "extra_info"} <= set(rl.columns)
    assert not list(tmp_path.glob(".*"))  # no temp files left behind


# --- CLI ----------------------------------------------------------------------------------

def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "logdata", *args], capture_output=True,
                          text=True, cwd=cwd)


def test_cli_on_loghub_bgl_2k(shared_data, tmp_path, repo_root):
    log = shared_data / "loghub_2k" / "BGL" / "BGL_2k.log"
    parsed = run_cli("parse", "--dataset", "bgl", "--input", str(log), "--out",
                     str(tmp_path / "parsed"), "--no-progress", cwd=repo_root)
    assert parsed.returncode == 0, parsed.stderr
    out = tmp_path / "seq"
    done = run_cli("sequences", "--structured", str(tmp_path / "parsed" / "structured.parquet"),
                   "--out", str(out), "--data-source", "bgl", "--context", "64", cwd=repo_root)
    assert done.returncode == 0, done.stderr
    names = {p.name for p in out.iterdir()}
    assert {"train.parquet", "val.parquet", "test.parquet", "vocab.json", "meta.json",
            "rl_train.parquet", "rl_test.parquet"} <= names
    meta = json.loads((out / "meta.json").read_text())
    assert meta["params"]["window"] == {"kind": "time", "size": 60.0, "step": 30.0,
                                        "min_events": 2}
    test = pd.read_parquet(out / "test.parquet")
    assert meta["counts"]["test"]["abnormal"] > 0 and (test["n_events"] >= 2).all()
    train = pd.read_parquet(out / "train.parquet")
    assert set(train["label"]) == {"normal"}


def test_cli_errors_are_one_line(tmp_path, repo_root):
    missing = run_cli("sequences", "--structured", str(tmp_path / "nope.parquet"), "--out",
                      str(tmp_path / "o"), cwd=repo_root)
    assert missing.returncode == 2 and missing.stderr.startswith("error:")
    assert "Traceback" not in missing.stderr
    f = frame([0.0, 1.0], ["A", "B"])
    f.to_parquet(tmp_path / "s.parquet")
    no_blocks = run_cli("sequences", "--structured", str(tmp_path / "s.parquet"), "--out",
                        str(tmp_path / "o"), "--window", "block", "--data-source", "bgl",
                        cwd=repo_root)
    assert no_blocks.returncode == 2 and "block_ids" in no_blocks.stderr
