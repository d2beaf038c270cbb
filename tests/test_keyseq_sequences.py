"""Log-key sequences: windowing, splits, chunking, vocabulary, RL rows and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from logdata.errors import LogDataError
from logdata.keyseq.grouping import (
    UNKNOWN_KEY,
    WindowSpec,
    block_sessions,
    build_sequences,
    count_windows,
    time_windows,
)
from logdata.keyseq.sequences import (
    SPLITS,
    SequenceConfig,
    build_sequence_datasets,
    chunk_sequences,
    prefix_length,
    rl_rows,
    split_chronological,
    split_loggpt,
)
from logdata.keyseq.vocab import SPECIAL_TOKENS, UNK, KeyVocab


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
        "sequence_id": ["x", "y", "z"], "keys": [list("ABCDEZ"), ["A"], list("ABCDE")],
        "label": ["normal"] * 3, "n_events": [6, 1, 5], "start": [0.0, 1.0, 2.0]}), 100)
    rl = rl_rows(rows, "test", vocab, "bgl", 0.2)
    assert len(rl) == 2  # the one-key row has no continuation
    row = rl.iloc[0]
    assert row["prompt"] == [{"role": "user", "content": "A B"}]  # ceil(0.2 * 6) = 2 keys
    assert row["reward_model"] == {"style": "rule", "ground_truth": "C D E <unk>"}
    assert row["ability"] == "log_next_key" and row["data_source"] == "bgl"
    assert row["extra_info"]["sequence_id"] == "x" and row["extra_info"]["split"] == "test"
    assert list(row["extra_info"]["gold"]) == ["C", "D", "E", "<unk>"]
    assert (row["extra_info"]["prefix_len"], row["extra_info"]["n_keys"]) == (2, 6)
    assert rl.iloc[1]["prompt"][0]["content"] == "A"  # ceil(0.2 * 5) = 1
    # ceil(0.2 L): 1, 1, 2, 3 keys; never the whole sequence
    assert [prefix_length(n, 0.2) for n in (2, 5, 10, 11)] == [1, 1, 2, 3]
    # HDFS blocks keep two keys of prompt (their first two keys are fixed)
    hdfs = rl_rows(rows, "test", vocab, "hdfs", 0.2).iloc[1]
    assert hdfs["prompt"][0]["content"] == "A B" and hdfs["extra_info"]["prefix_len"] == 2


def test_build_writes_all_artefacts_and_vocab_ignores_test_keys(tmp_path):
    times = np.arange(0, 600, 5.0)
    keys = ["A", "B", "C", "D"] * 30
    labels = ["normal"] * 120
    keys[-3:] = ["ZZ", "ZZ", "ZZ"]  # only in the last windows
    labels[-3:] = ["abnormal"] * 3
    f = frame(times, keys, labels)
    meta = build_sequence_datasets(f, tmp_path, SequenceConfig(data_source="bgl", context=6,
                                                               n_train=10, long_sequences="chunk"))
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
                                        "min_events": 2, "grid": "loggpt"}
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


# --- LogGPT's protocol (github.com/nokia/LogGPT) -----------------------------------------------

def test_loggpt_time_grid_floors_seconds_and_closes_both_ends():
    # LogGPT floors to whole seconds and takes [t, t + 60] with both ends in, starting windows
    # while t < the last timestamp. Floored: 0, 30, 60, 61, 95 → origins 0, 30, 60, 90:
    # [0, 60] A B C; [30, 90] B C D; [60, 120] C D E; [90, 150] E alone (dropped, < 2 events).
    f = frame([0.2, 30.0, 60.7, 61.0, 95.0], list("ABCDE"))
    out = time_windows(f, 60, 30, grid="loggpt")
    assert dict(zip(out["sequence_id"], out["keys"].map(list), strict=True)) == {
        "time-0": list("ABC"), "time-1": list("BCD"), "time-2": list("CDE")}
    # half-open [t0 + 30k, t0 + 30k + 60) on the raw times (t0 = 0.2) gives other windows
    half = time_windows(f, 60, 30, grid="half_open")
    assert half["keys"].map(list).tolist() == [["A", "B"], ["C", "D"], ["C", "D", "E"]]
    # a window starting at the last timestamp is not built by LogGPT (start < end)
    assert time_windows(frame([0.0, 30.0, 30.0], list("XYZ")), 60, 30, grid="loggpt")[
        "sequence_id"].tolist() == ["time-0"]
    with pytest.raises(LogDataError, match="time grid"):
        time_windows(f, 60, 30, grid="nope")


def _burst_log(n_burst):
    """100 lines every 40 s (A/B), a burst of ``n_burst`` lines at 5,000 s, two lines after it."""
    times = [40.0 * i for i in range(100)] + [5000.0] * n_burst + [5100.0, 5140.0]
    keys = ["A", "B"] * 50 + ["X"] * n_burst + ["A", "B"]
    return frame(times, keys)


def test_loggpt_protocol_context_512_drops_longer_windows(tmp_path):
    # The burst lies in exactly two windows of either grid (origins 4950 and 4980), each with
    # 1,100 keys > 512 - 2: LogGPT leaves them out; every other window has at most 3 keys.
    meta = build_sequence_datasets(_burst_log(1100), tmp_path / "g",
                                   SequenceConfig(data_source="bgl", n_train=20))
    assert meta["params"]["context"] == 512 and meta["params"]["long_sequences"] == "drop"
    assert meta["params"]["window"]["grid"] == "loggpt"
    assert meta["dropped_long_sequences"] == 2 and meta["chunked_sequences"] == 0
    rows = pd.concat([pd.read_parquet(tmp_path / "g" / f"{n}.parquet") for n in SPLITS])
    assert rows["n_events"].max() <= 3 and "X" not in {k for ks in rows["keys"] for k in ks}
    # the chronological protocol keeps its context (1,024) and chunks the two long windows
    chrono = build_sequence_datasets(_burst_log(1100), tmp_path / "c", SequenceConfig(
        data_source="bgl", protocol="chronological"))
    assert chrono["params"]["context"] == 1024 and chrono["params"]["long_sequences"] == "chunk"
    assert chrono["params"]["window"]["grid"] == "half_open"
    assert chrono["dropped_long_sequences"] == 0 and chrono["chunked_sequences"] == 2
    test = pd.read_parquet(tmp_path / "c" / "test.parquet")
    assert sorted(test[test["n_chunks"] > 1]["n_events"].tolist()) == [78, 78, 1022, 1022]
    # --long-sequences chunk under loggpt: the old behaviour, as a named deviation
    kept = build_sequence_datasets(_burst_log(1100), tmp_path / "k", SequenceConfig(
        data_source="bgl", n_train=20, long_sequences="chunk"))
    assert kept["dropped_long_sequences"] == 0 and kept["chunked_sequences"] == 2
    with pytest.raises(LogDataError, match="longer than"):
        build_sequence_datasets(frame([5000.0] * 600 + [5001.0], ["X"] * 601), tmp_path / "x",
                                SequenceConfig(data_source="bgl"))  # one 601-key window


def test_loggpt_vocab_comes_from_train_and_validation(tmp_path):
    # Ten normal count windows, each with its own key K0..K9, and two abnormal "Z" windows. The
    # LogGPT draw takes all ten (nine train, one validation); LogGPT's vocabulary holds all ten
    # keys, the chronological one only its training keys.
    keys = [f"K{i}" for i in range(10) for _ in range(2)] + ["Z"] * 4
    labels = ["normal"] * 20 + ["abnormal"] * 4
    f = frame([float(i) for i in range(24)], keys, labels)
    spec = WindowSpec(kind="count", size=2, step=2, min_events=2)
    build_sequence_datasets(f, tmp_path / "g", SequenceConfig(data_source="bgl", window=spec,
                                                              n_train=10))
    vocab = KeyVocab.load(tmp_path / "g" / "vocab.json")
    assert set(vocab.keys) == {f"K{i}" for i in range(10)}
    meta = build_sequence_datasets(f, tmp_path / "c", SequenceConfig(
        data_source="bgl", window=spec, protocol="chronological", train_ratio=0.5, val_ratio=0.2))
    train = pd.read_parquet(tmp_path / "c" / "train.parquet")
    assert set(KeyVocab.load(tmp_path / "c" / "vocab.json").keys) == {"K0", "K1", "K2", "K3",
                                                                     "K4"}
    assert {k for ks in train["keys"] for k in ks} == {"K0", "K1", "K2", "K3", "K4"}
    assert meta["vocab_splits"] == ["train"]


def test_sequences_cli_defaults_follow_the_protocol(tmp_path):
    from logdata.cli import build_parser
    from logdata.keyseq.sequences import run

    _burst_log(3).to_parquet(tmp_path / "structured.parquet")
    for protocol, context, long, grid in (("loggpt", 512, "drop", "loggpt"),
                                          ("chronological", 1024, "chunk", "half_open")):
        argv = ["sequences", "--structured", str(tmp_path / "structured.parquet"), "--out",
                str(tmp_path / protocol), "--data-source", "bgl", "--protocol", protocol,
                "--n-train", "20"]
        assert run(build_parser(argv).parse_args(argv)) == 0
        params = json.loads((tmp_path / protocol / "meta.json").read_text())["params"]
        assert (params["context"], params["long_sequences"], params["window"]["grid"]) == (
            context, long, grid)


def test_drain_preset_loggpt_thunderbird_depth_2_similarity_03():
    from logdata.drain import TemplateMiner
    from logdata.formats import FORMATS, LOGGPT_DRAIN, with_drain_preset
    from logdata.parse import miner_settings

    lines = ["alpha x y z w v", "beta x y z w v",  # differ in the first (routing) token only
             "a b c d e f g h i j", "a b c k l m n o p q"]  # 3 of 10 tokens equal: 0.3
    loggpt = TemplateMiner(miner_settings(with_drain_preset(FORMATS["thunderbird"], "loggpt")))
    ids = loggpt.add_batch(pa.array(lines))
    # depth 2 routes by token count only, so alpha/beta meet and merge; similarity 0.3 >= 0.3
    assert ids.tolist() == [0, 0, 1, 1]
    assert loggpt.templates() == ["<*> x y z w v", "a b c <*> <*> <*> <*> <*> <*> <*>"]
    default = TemplateMiner(miner_settings(FORMATS["thunderbird"]))  # loghub: depth 4 / 0.5
    assert default.add_batch(pa.array(lines)).tolist() == [0, 1, 2, 3]
    # LogGPT's BGL and HDFS settings are ours
    for name in ("bgl", "hdfs"):
        assert (FORMATS[name].depth, FORMATS[name].similarity) == LOGGPT_DRAIN[name]
    assert with_drain_preset(FORMATS["spirit"], "loggpt") == FORMATS["spirit"]
    with pytest.raises(LogDataError):
        with_drain_preset(FORMATS["bgl"], "nope")


def test_parse_drain_preset_flag_and_loggpt_parser_warning(tmp_path, caplog):
    from logdata.cli import build_parser
    from logdata.keyseq.sequences import parser_settings, warn_parser_mismatch
    from logdata.parse import run as parse_run

    log = tmp_path / "tb.log"
    log.write_text("- 1131566461 2005.11.09 tbird-admin1 Nov 9 12:01:01 local@tbird-admin1 "
                   "postfix/postdrop[10896]: warning: unable to look up public/pickup\n"
                   "- 1131566462 2005.11.09 tbird-admin1 Nov 9 12:01:02 local@tbird-admin1 "
                   "kernel: disk ok\n")
    argv = ["parse", "--dataset", "thunderbird", "--input", str(log), "--out",
            str(tmp_path / "p"), "--no-progress", "--drain-preset", "loggpt"]
    assert parse_run(build_parser(argv).parse_args(argv)) == 0
    settings = parser_settings(tmp_path / "p" / "structured.parquet")
    assert settings == {"depth": 2, "similarity": 0.3}
    with caplog.at_level("WARNING", logger="logdata.keyseq.sequences"):
        warn_parser_mismatch("loggpt", "thunderbird", settings)
        warn_parser_mismatch("chronological", "thunderbird", {"depth": 4, "similarity": 0.5})
        assert not caplog.records
        warn_parser_mismatch("loggpt", "thunderbird", {"depth": 4, "similarity": 0.5})
    assert len(caplog.records) == 1 and "--drain-preset loggpt" in caplog.records[0].message


# --- the data source from prepare's meta.json, staged writes, checksums ----------------------

def _mixed_log():
    """120 lines every 5 s (A-D), the last three abnormal: normal and abnormal time windows."""
    keys = ["A", "B", "C", "D"] * 30
    labels = ["normal"] * 117 + ["abnormal"] * 3
    return frame(np.arange(0, 600, 5.0), keys, labels)


def _prepared(folder, meta, log=None):
    """``folder/structured.parquet`` with a data-stage ``meta.json`` listing its sha256."""
    from logdata.staging import write_meta

    folder.mkdir(parents=True, exist_ok=True)
    (log if log is not None else _mixed_log()).to_parquet(folder / "structured.parquet")
    if meta is not None:
        write_meta(folder, meta)
    return folder / "structured.parquet"


def _sequences(structured, out, *extra):
    """Run ``python -m logdata sequences`` in-process (errors raise)."""
    from logdata.cli import build_parser
    from logdata.keyseq.sequences import run

    argv = ["sequences", "--input", str(structured), "--out", str(out), "--n-train", "10",
            *extra]
    assert run(build_parser(argv).parse_args(argv)) == 0
    return json.loads((out / "meta.json").read_text())


# Issue: "`sequences` guesses the dataset from words in the path (fails on `tb/`, guesses `hdfs`
# for a BGL file under `hdfs_mount/`) instead of reading the meta.json that prepare wrote".
@pytest.mark.parametrize(("folder", "meta", "expected", "origin"), [
    ("tb", {"params": {"dataset": "thunderbird"}}, "thunderbird", "meta.json:params.dataset"),
    ("hdfs_mount/run1", {"dataset": "bgl"}, "bgl", "meta.json:dataset"),
    ("hdfs_mount/bgl", {"format": {"name": "bgl"}, "params": {}}, "bgl", "meta.json:format.name"),
], ids=["tb", "mount-plain", "mount-named"])
def test_sequences_take_the_dataset_from_the_prepare_meta(tmp_path, folder, meta, expected,
                                                          origin):
    structured = _prepared(tmp_path / folder, meta)
    out = _sequences(structured, tmp_path / "out")
    assert out["params"]["data_source"] == expected
    assert out["data_source_from"] == origin
    assert out["params"]["window"]["kind"] == "time"  # not hdfs's block windows
    rl = pd.read_parquet(tmp_path / "out" / "rl_test.parquet")
    assert set(rl["data_source"]) == {expected}


def test_meta_dataset_keys_in_order_and_the_flag_wins(tmp_path, caplog):
    from logdata.keyseq.sequences import meta_dataset, resolve_data_source

    assert meta_dataset({"dataset": "a", "params": {"dataset": "b"}, "format": {"name": "c"}}) == (
        "a", "dataset")
    assert meta_dataset({"params": {"dataset": "b"}, "format": {"name": "c"}})[0] == "b"
    assert meta_dataset({"params": {"dataset": ""}, "format": {"name": "c"}})[0] == "c"
    structured = _prepared(tmp_path / "bgl", {"params": {"dataset": "bgl"}})
    with caplog.at_level("WARNING", logger="logdata.keyseq.sequences"):
        # any name (a user format), not only the built-in ones; it gets the default windowing
        meta = _sequences(structured, tmp_path / "out", "--data-source", "my_format")
    assert meta["params"]["data_source"] == "my_format"
    assert meta["data_source_from"] == "--data-source"
    assert meta["params"]["window"]["kind"] == "time"
    assert any("overrides 'bgl'" in r.getMessage() for r in caplog.records)
    assert resolve_data_source("hdfs", structured, pd.DataFrame()) == ("hdfs", "--data-source")


def test_without_meta_the_path_guess_warns_and_a_meta_without_dataset_is_refused(tmp_path,
                                                                                 caplog):
    from logdata.keyseq.sequences import resolve_data_source

    guessed = _prepared(tmp_path / "spirit_logs", None)
    with caplog.at_level("WARNING", logger="logdata.keyseq.sequences"):
        assert resolve_data_source(None, guessed, pd.DataFrame()) == ("spirit", "guessed")
    assert any("guessed the data source 'spirit'" in r.getMessage() for r in caplog.records)
    with pytest.raises(LogDataError, match="cannot tell the data source"):
        resolve_data_source(None, _prepared(tmp_path / "plain", None), pd.DataFrame())
    # a meta.json exists: the path words ("spirit") never decide
    named_nothing = _prepared(tmp_path / "spirit_run", {"kind": "other"})
    with pytest.raises(LogDataError, match="names no dataset"):
        resolve_data_source(None, named_nothing, pd.DataFrame())


def test_sequences_refuse_a_structured_parquet_changed_after_prepare(tmp_path, repo_root):
    structured = _prepared(tmp_path / "p", {"params": {"dataset": "bgl"}})
    _mixed_log().head(60).to_parquet(structured)  # edited after prepare wrote meta.json
    done = run_cli("sequences", "--input", str(structured), "--out", str(tmp_path / "o"),
                   cwd=repo_root)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error:") and len(done.stderr.strip().splitlines()) == 1
    assert "does not match" in done.stderr and "structured.parquet" in done.stderr
    assert not (tmp_path / "o").exists()


def test_sequences_meta_lists_every_output_and_refuses_to_overwrite(tmp_path):
    from logdata.io import sha256_file
    from logdata.keyseq.sequences import OUTPUTS

    structured = _prepared(tmp_path / "p", {"params": {"dataset": "bgl"}})
    out = tmp_path / "seq"
    meta = _sequences(structured, out)
    names = {"train.parquet", "val.parquet", "test.parquet", "rl_train.parquet",
             "rl_test.parquet", "vocab.json"}
    assert set(meta["files"]) == names and set(OUTPUTS) == names | {"meta.json"}
    assert all(meta["files"][n] == sha256_file(out / n) for n in names)
    with pytest.raises(LogDataError, match="--overwrite"):
        _sequences(structured, out)
    again = _sequences(structured, out, "--overwrite", "--seed", "1")
    assert again["params"]["seed"] == 1
    # --out = the folder of --input: prepare's meta lists structured.parquet, which must survive
    inside = _sequences(structured, structured.parent, "--overwrite")
    assert structured.is_file() and "structured.parquet" not in inside["files"]


def test_a_failure_mid_way_leaves_the_previous_output_intact(tmp_path, monkeypatch):
    from logdata.io import sha256_file
    from logdata.keyseq import sequences as S

    structured = _prepared(tmp_path / "p", {"params": {"dataset": "bgl"}})
    out = tmp_path / "seq"
    _sequences(structured, out)
    before = {p.name: sha256_file(p) for p in out.iterdir()}
    seen = []

    def broken(rows, split, *args, **kwargs):
        # the splits are already written (staged) when the RL rows are made
        seen.extend(tmp_path.glob(".seq.staging-*/train.parquet"))
        raise RuntimeError("disk full")

    monkeypatch.setattr(S, "rl_rows", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        _sequences(structured, out, "--overwrite", "--seed", "7")
    assert seen, "the failure must come after train.parquet was written"
    assert {p.name: sha256_file(p) for p in out.iterdir()} == before
    assert json.loads((out / "meta.json").read_text())["params"]["seed"] == 0
    assert not list(tmp_path.glob(".seq.staging-*"))  # the staging folder is gone


@pytest.mark.parametrize(("labels", "normal", "abnormal"), [
    (["normal"] * 120, 3, 0),                      # no abnormal line at all
    (["normal"] * 24 + ["abnormal"] * 96, 0, 8),   # every normal window drawn: test all abnormal
], ids=["all-normal", "all-abnormal"])
def test_a_single_class_test_split_warns(tmp_path, caplog, labels, normal, abnormal):
    log = frame(np.arange(0, 600, 5.0), ["A", "B", "C", "D"] * 30, labels)
    spec = WindowSpec(kind="count", size=12, step=12, min_events=2)  # 10 windows
    config = SequenceConfig(data_source="bgl", window=spec, n_train=7, context=16)
    with caplog.at_level("WARNING", logger="logdata.keyseq.sequences"):
        meta = build_sequence_datasets(log, tmp_path / "o", config)
    warned = [r.getMessage() for r in caplog.records if "class" in r.getMessage()]
    assert meta["counts"]["test"]["sequences"] == normal + abnormal
    assert len(warned) == 1, warned
    assert "test split holds 1 class" in warned[0]
    assert f"({normal} normal, {abnormal} abnormal sequences)" in warned[0]


def test_a_mixed_test_split_does_not_warn(tmp_path, caplog):
    with caplog.at_level("WARNING", logger="logdata.keyseq.sequences"):
        build_sequence_datasets(_mixed_log(), tmp_path / "o", SequenceConfig(
            data_source="bgl", n_train=10))
    assert not [r for r in caplog.records if "class" in r.getMessage()]
