"""Next-key models and top-K detection, including the synthetic end-to-end run."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from logdata.errors import LogDataError
from logdata.keyseq.vocab import KeyVocab
from validation.keyseq_detect import (
    DEFAULT_K,
    aggregate,
    cap_k,
    loop_ranks,
    resolve_k,
    score_chunks,
    true_key_ranks,
)
from verl_recipes.local.keyseq.model import ARCHITECTURES, build_keyseq_model, load_model, model_config

KEYS = [f"E{i}" for i in range(12)]


@pytest.fixture(scope="module")
def vocab():
    return KeyVocab.build([KEYS])


@pytest.fixture(scope="module")
def tiny(vocab, tmp_path_factory):
    out = tmp_path_factory.mktemp("keyseq_tiny")
    build_keyseq_model(vocab, "gpt_neo_tiny", out, context=64, seed=0)
    return out


def test_architecture_table(vocab):
    gpt2 = model_config("loggpt", vocab)
    assert (gpt2.n_layer, gpt2.n_head, gpt2.n_embd) == (6, 6, 60)
    assert gpt2.n_positions == 512  # LogGPT's max_lens
    neo = model_config("gpt_neo_1.3b", vocab)  # config only, never instantiated
    assert (neo.num_layers, neo.hidden_size, neo.max_position_embeddings) == (24, 2048, 2048)
    assert neo.vocab_size == len(vocab) and neo.bos_token_id == vocab.id_of("<bos>")
    assert set(ARCHITECTURES) == {"loggpt", "gpt_neo_tiny", "gpt_neo_1.3b", "llama_tiny",
                                  "llama_1.3b"}
    # the verl shape (logneo_ppo): key/value heads declared, ids of the key vocabulary
    llama = model_config("llama_1.3b", vocab)
    assert (llama.num_hidden_layers, llama.hidden_size, llama.num_key_value_heads) == (24, 2048, 16)
    assert llama.eos_token_id == vocab.id_of("<eos>") and llama.pad_token_id == vocab.id_of("<pad>")
    with pytest.raises(LogDataError):
        model_config("nope", vocab)


def test_tokenizer_one_token_per_key_and_unknown(tiny, vocab):
    _, tok = load_model(tiny)
    assert tok("E3 E0 NEW")["input_ids"] == [vocab.id_of("E3"), vocab.id_of("E0"),
                                              vocab.id_of("<unk>")]
    assert len(tok) == len(vocab)
    rendered = tok.apply_chat_template([{"role": "user", "content": "E1 E2"}], tokenize=False)
    assert rendered == "<bos>E1 E2"


def test_ranks_match_the_per_position_loop(tiny):
    model, tok = load_model(tiny)
    rng = np.random.default_rng(0)
    ids = [[tok.bos_token_id, *rng.integers(4, len(tok), size=n).tolist()] for n in (9, 3, 6, 1)]
    scores = score_chunks(model, ids, [1, 3, 5], tok.pad_token_id, batch_size=3)
    for row, seq in enumerate(ids):
        ref = np.array(loop_ranks(model, seq))
        assert scores.n_keys[row] == len(ref)
        assert scores.max_rank[row] == (ref.max() if len(ref) else 0)
        for j, k in enumerate([1, 3, 5]):
            assert scores.misses[row, j] == int((ref >= k).sum())
            first = np.flatnonzero(ref >= k)
            assert scores.first_miss[row, j] == (first[0] if len(first) else -1)


def test_true_key_rank_counts_strictly_greater_logits():
    logits = torch.tensor([[[3.0, 1.0, 2.0, 2.0], [0.0, 5.0, 1.0, 1.0]]])
    assert true_key_ranks(logits, torch.tensor([[2, 1]])).tolist() == [[1, 0]]


def test_skip_first_excludes_leading_keys(tiny):
    model, tok = load_model(tiny)
    ids = [[tok.bos_token_id, 5, 6, 7]]
    full = score_chunks(model, ids, [1], tok.pad_token_id)
    skipped = score_chunks(model, ids, [1], tok.pad_token_id, skip=[1])
    ref = loop_ranks(model, ids[0])
    assert full.misses[0, 0] == sum(r >= 1 for r in ref)
    assert skipped.misses[0, 0] == sum(r >= 1 for r in ref[1:])
    assert skipped.n_keys[0] == 2


def test_cap_and_default_k():
    assert cap_k(690, 100) == 95 and cap_k(7, 100) == 7
    assert resolve_k(None, "hdfs", 1000) == (7, 7)
    assert resolve_k(None, "bgl", 50) == (DEFAULT_K["bgl"], 47)
    with pytest.raises(LogDataError):
        resolve_k(None, "synthetic", 100)


def test_chunks_aggregate_per_sequence():
    from validation.keyseq_detect import ChunkScores

    rows = pd.DataFrame({"sequence_id": ["a", "a", "b"], "label": ["abnormal"] * 2 + ["normal"],
                         "offset": [0, 4, 0], "keys": [["x"] * 4, ["x"] * 2, ["x"] * 3]})
    scores = ChunkScores(misses=np.array([[0], [2], [0]]), first_miss=np.array([[-1], [1], [-1]]),
                         max_rank=np.array([0, 9, 0]), n_keys=np.array([4, 2, 3]))
    out = aggregate(rows, scores, min_misses=0).set_index("sequence_id")
    assert out.loc["a", "misses_per_k"].tolist() == [2]
    assert out.loc["a", "first_miss_per_k"].tolist() == [5]  # offset 4 + position 1
    assert out.loc["a", "n_events"] == 6 and out.loc["a", "max_rank"] == 9
    assert out.loc["b", "first_miss_per_k"].tolist() == [-1]


def _cli(args, cwd):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd)


@pytest.mark.slow
def test_synthetic_end_to_end_reaches_f1_090(tmp_path, repo_root):
    """build → pretrain → detect on synthetic HDFS-like logs whose anomalies break key order."""
    from logdata.synthetic import generate_logs

    log = generate_logs(tmp_path / "hdfs.log", 12000, fmt="hdfs", anomaly_rate=0.1, seed=1)
    parsed = _cli(["-m", "logdata", "parse", "--dataset", "hdfs", "--input", str(log), "--labels",
                   str(tmp_path / "anomaly_label.csv"), "--out", str(tmp_path / "p"),
                   "--no-progress"], repo_root)
    assert parsed.returncode == 0, parsed.stderr
    data = tmp_path / "seq"
    built = _cli(["-m", "logdata", "sequences", "--input",
                  str(tmp_path / "p" / "structured.parquet"), "--out", str(data),
                  "--data-source", "synthetic", "--window", "block", "--n-train", "600",
                  "--context", "64"], repo_root)
    assert built.returncode == 0, built.stderr
    # the README's command, one torch thread
    trained = _cli(["-m", "verl_recipes.local.keyseq.pretrain", "--input", str(data), "--out",
                    str(tmp_path / "model"), "--arch", "gpt_neo_tiny", "--epochs", "4", "--lr", "3e-3",
                    "--batch-size", "8", "--schedule", "linear", "--warmup-steps", "20", "--seed", "0",
                    "--threads", "1", "--no-progress"], repo_root)
    assert trained.returncode == 0, trained.stderr
    summary = json.loads((tmp_path / "model" / "pretrain_summary.json").read_text())
    assert summary["best_val_loss"] < 1.0
    assert (tmp_path / "model" / "model.safetensors").is_file()
    out = tmp_path / "detect"
    done = _cli([str(repo_root / "validation" / "keyseq_detect.py"), "--model",
                 str(tmp_path / "model"), "--input", str(data / "test.parquet"), "--out", str(out),
                 "--k", "1", "--skip-first", "1", "--k-sweep", "1,2,3,5"], repo_root)
    assert done.returncode == 0, done.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    overall = metrics["session"]["overall"]
    assert overall["f1"] >= 0.9, overall
    assert metrics["keyseq"]["k"] == 1 and [r["k"] for r in metrics["keyseq"]["sweep"]] == [1, 2,
                                                                                         3, 5]
    assert metrics["keyseq"]["sequences_per_s"] > 0
    scores = pd.read_parquet(out / "scores.parquet")
    assert {"sequence_id", "label", "misses", "first_miss", "pred"} <= set(scores.columns)
    flagged = scores[scores["pred"] == "abnormal"]
    assert (flagged["misses"] > 0).all() and (flagged["first_miss"] >= 0).all()
    assert (out / "k_sweep.png").read_bytes()[:4] == b"\x89PNG"


def test_detect_cli_rejects_bad_input(tmp_path, repo_root, tiny):
    done = _cli([str(repo_root / "validation" / "keyseq_detect.py"), "--model", str(tiny),
                 "--data", str(tmp_path / "missing.parquet"), "--out", str(tmp_path / "o"),
                 "--k", "3"], repo_root)
    assert done.returncode == 2 and done.stderr.strip().startswith("error:")
    assert "Traceback" not in done.stderr


# --- LogGPT's judged positions and K cap (github.com/nokia/LogGPT model/initGPT.py) ----------

ABC = KeyVocab.build([["A", "B", "C"]])  # <pad> 0, <bos> 1, <eos> 2, <unk> 3, A 4, B 5, C 6
#: Bigram preferences, best first: <bos> → A → B → C → <eos>.
PREFERENCES = {"<bos>": ["A", "B", "C", "<eos>"], "A": ["B", "C", "<eos>", "A"],
               "B": ["C", "<eos>", "A", "B"], "C": ["<eos>", "A", "B", "C"]}


class Bigram(torch.nn.Module):
    """A fake causal LM whose logits depend on the current token only (PREFERENCES)."""

    def __init__(self):
        super().__init__()
        table = torch.full((len(ABC), len(ABC)), -100.0)
        for prev, order in PREFERENCES.items():
            for rank, token in enumerate(order):
                table[ABC.id_of(prev), ABC.id_of(token)] = 10.0 - rank
        self.table = table

    def forward(self, input_ids, attention_mask=None):
        from types import SimpleNamespace

        return SimpleNamespace(logits=self.table[input_ids])


@pytest.fixture
def bigram_detect(tmp_path, monkeypatch):
    """Run ``detect`` with the Bigram model on hand-made rows; returns a runner."""
    from validation import keyseq_detect
    from verl_recipes.local.keyseq.model import build_tokenizer

    tokenizer = build_tokenizer(ABC, 16)
    monkeypatch.setattr(keyseq_detect, "load_model", lambda *a, **k: (Bigram(), tokenizer))

    def run(rows, kind, k, **kwargs):
        data = tmp_path / kind / "test.parquet"
        data.parent.mkdir(exist_ok=True)
        pd.DataFrame(rows, columns=["sequence_id", "keys", "label"]).to_parquet(data)
        meta = {"params": {"data_source": "bgl", "window": {"kind": kind}}}
        (data.parent / "meta.json").write_text(json.dumps(meta))
        result = keyseq_detect.detect(tmp_path, data, tmp_path / kind / "out", k=k,
                                      sweep=[k], **kwargs)
        scores = pd.read_parquet(tmp_path / kind / "out" / "scores.parquet")
        return result, scores.set_index("sequence_id")

    return run


ROWS = [("ok", ["A", "B", "C"], "normal"),       # every next token is the top prediction
        ("cut", ["A", "B"], "abnormal"),          # <eos> after B has rank 1 (C is preferred)
        ("badstart", ["B", "C"], "normal")]       # B after <bos> has rank 1 (A is preferred)


def test_loggpt_judges_eos_of_sessions_but_not_the_first_key(bigram_detect):
    # block sessions (HDFS): judged are every key but the first, and <eos>
    result, scores = bigram_detect(ROWS, "block", k=1)
    assert scores["misses"].to_dict() == {"ok": 0, "cut": 1, "badstart": 0}
    assert scores.loc["cut", "first_miss"] == 2  # position 2 of a 2-key sequence: the <eos>
    assert result["keyseq"]["judge_eos"] is True and result["keyseq"]["skip_first"] == 1
    assert result["keyseq"]["keys"] == 3 + 2 + 2  # judged: B C <eos>, B <eos>, C <eos>


def test_loggpt_does_not_judge_eos_of_time_windows(bigram_detect):
    result, scores = bigram_detect(ROWS, "time", k=1)
    assert scores["misses"].to_dict() == {"ok": 0, "cut": 0, "badstart": 0}
    assert result["keyseq"]["judge_eos"] is False
    assert result["keyseq"]["keys"] == 2 + 1 + 1  # judged: B C, B, C


def test_judged_position_flags_restore_the_old_rule(bigram_detect):
    # --skip-first 0 --no-judge-eos: the first key is judged against <bos>, <eos> never is
    _, scores = bigram_detect(ROWS, "block", k=1, skip_first=0, judge_eos=False)
    assert scores["misses"].to_dict() == {"ok": 0, "cut": 0, "badstart": 1}
    assert scores.loc["badstart", "first_miss"] == 0
    _, forced = bigram_detect(ROWS, "time", k=1, judge_eos=True)  # --judge-eos on windows
    assert forced["misses"].to_dict() == {"ok": 0, "cut": 1, "badstart": 0}


def test_k_cap_counts_real_keys_only(bigram_detect):
    # 3 keys (A B C) among 7 tokens: K = int(0.95 * 3) = 2, not int(0.95 * 7) = 6. In [A, A]
    # the second A has rank 3 after A and the <eos> rank 2: both outside the top-2.
    result, scores = bigram_detect([("aa", ["A", "A"], "abnormal")], "block", k=80)
    assert result["keyseq"]["k"] == 2 and result["keyseq"]["n_keys"] == 3
    assert scores.loc["aa", "misses"] == 2 and scores.loc["aa", "first_miss"] == 1
    assert cap_k(80, 3) == 2 and cap_k(690, 100) == 95 and cap_k(5, 1) == 1


def test_eos_follows_only_the_last_chunk():
    from validation.keyseq_detect import encode_chunks
    from verl_recipes.local.keyseq.model import build_tokenizer

    tok = build_tokenizer(ABC, 16)
    rows = pd.DataFrame({"keys": [["A", "B"], ["C"], ["B"]], "chunk": [0, 1, 0],
                         "n_chunks": [2, 2, 1]})
    assert encode_chunks(tok, rows, judge_eos=True) == [[1, 4, 5], [1, 6, 2], [1, 5, 2]]
    assert encode_chunks(tok, rows, judge_eos=False) == [[1, 4, 5], [1, 6], [1, 5]]


def test_detect_cli_defaults_are_loggpts():
    from validation.keyseq_detect import build_parser

    args = build_parser().parse_args(["--model", "m", "--data", "d", "--out", "o"])
    assert args.skip_first == 1 and args.judge_eos is None
    assert build_parser().parse_args(["--model", "m", "--data", "d", "--out", "o",
                                      "--no-judge-eos"]).judge_eos is False


# --- the model's vocabulary and the data's checksums -------------------------------------------

def _keyseq_folder(folder, keys, data_source="bgl"):
    """A ``logdata sequences``-like folder: ``vocab.json`` of ``keys``, ``test.parquet`` and a
    ``meta.json`` listing both (the way ``sequences`` writes it)."""
    from logdata.staging import write_meta

    folder.mkdir(parents=True)
    KeyVocab.build([keys]).save(folder / "vocab.json")
    rows = pd.DataFrame({"sequence_id": ["s0", "s1", "s2"],
                         "keys": [keys[:4], keys[2:6], keys[:1] + keys[:1]],
                         "label": ["normal", "normal", "abnormal"]})
    rows.to_parquet(folder / "test.parquet")
    write_meta(folder, {"kind": "keyseq", "params": {"data_source": data_source,
                                                     "window": {"kind": "time"}}})
    return folder / "test.parquet"


#: Two datasets whose parsers both number their templates E1, E2, …: the ids collide, the
#: vocabularies (keys by training frequency) differ.
BGL_KEYS = [f"E{i}" for i in (3, 1, 2, 7, 5, 4, 6, 8, 9, 10)]
HDFS_KEYS = [f"E{i}" for i in (1, 2, 3, 4, 5, 6, 7, 8, 9)]


@pytest.fixture(scope="module")
def bgl_model(tmp_path_factory):
    """A tiny model built from the BGL folder's vocab.json (recorded in its config)."""
    root = tmp_path_factory.mktemp("vocab_check")
    data = _keyseq_folder(root / "bgl_keyseq", BGL_KEYS)
    vocab_file = data.parent / "vocab.json"
    build_keyseq_model(KeyVocab.load(vocab_file), "gpt_neo_tiny", root / "model", context=64,
                       seed=0, vocab_file=vocab_file)
    return root / "model", data


def test_the_model_records_its_vocabulary(bgl_model):
    from logdata.io import sha256_file
    from verl_recipes.local.keyseq.model import VOCAB_FIELD, model_vocab

    model_dir, data = bgl_model
    record = model_vocab(model_dir)
    assert record == {"path": str(data.parent / "vocab.json"),
                      "sha256": sha256_file(data.parent / "vocab.json")}
    assert json.loads((model_dir / "config.json").read_text())[VOCAB_FIELD] == record
    with pytest.raises(LogDataError, match="not the vocabulary"):
        build_keyseq_model(KeyVocab.build([HDFS_KEYS]), "gpt_neo_tiny", None, context=64,
                           vocab_file=data.parent / "vocab.json")


# Issue: "keyseq_detect.py scores an HDFS test set with a BGL model (event ids collide) and
# reports F1 0.939".
def test_detect_refuses_sequences_built_with_another_vocabulary(bgl_model, tmp_path, capsys):
    from validation.keyseq_detect import main

    model_dir, _ = bgl_model
    hdfs = _keyseq_folder(tmp_path / "hdfs_keyseq", HDFS_KEYS, data_source="hdfs")
    out = tmp_path / "detect"
    assert main(["--model", str(model_dir), "--input", str(hdfs), "--out", str(out),
                 "--k", "3", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and len(err.strip().splitlines()) == 1, err
    assert "built with another vocabulary" in err
    assert not out.exists()


def test_detect_scores_sequences_built_with_the_models_vocabulary(bgl_model, tmp_path):
    from logdata.io import sha256_file
    from validation.keyseq_detect import main

    model_dir, data = bgl_model
    out = tmp_path / "detect"
    assert main(["--model", str(model_dir), "--input", str(data), "--out", str(out),
                 "--k", "3", "--k-sweep", "3", "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["keyseq"]["vocab_sha256"] == sha256_file(data.parent / "vocab.json")


def test_detect_warns_for_a_model_without_a_vocabulary_record(tiny, bgl_model, tmp_path,
                                                              caplog):
    from validation.keyseq_detect import check_vocabulary

    _, data = bgl_model
    with caplog.at_level("WARNING", logger="validation.keyseq_detect"):
        assert check_vocabulary(tiny, data) is None  # built before the record existed
    assert any("records no vocabulary" in r.getMessage() for r in caplog.records)


def test_detect_refuses_a_test_parquet_changed_after_sequences(bgl_model, tmp_path, capsys):
    import shutil

    from validation.keyseq_detect import main

    model_dir, data = bgl_model
    copy = tmp_path / "copy"
    shutil.copytree(data.parent, copy)
    pd.read_parquet(copy / "test.parquet").head(1).to_parquet(copy / "test.parquet")
    assert main(["--model", str(model_dir), "--input", str(copy / "test.parquet"), "--out",
                 str(tmp_path / "o"), "--k", "3", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "does not match" in err and "test.parquet" in err


def test_pretrain_records_the_vocabulary_and_export_keeps_it(tmp_path):
    from logdata.io import sha256_file
    from logdata.keyseq.sequences import SequenceConfig, build_sequence_datasets
    from verl_recipes.local.export import export_local
    from verl_recipes.local.keyseq.model import model_vocab
    from verl_recipes.local.keyseq.pretrain import PretrainConfig, init_model, pretrain

    keys = ["A", "B", "C", "D"] * 30
    log = pd.DataFrame({"line_no": range(1, 121), "timestamp": np.arange(0, 600, 5.0),
                        "event_id": keys, "label": ["normal"] * 117 + ["abnormal"] * 3})
    data = tmp_path / "seq"
    build_sequence_datasets(log, data, SequenceConfig(data_source="bgl", n_train=10))
    expected = sha256_file(data / "vocab.json")
    pretrain(data, tmp_path / "model", PretrainConfig(arch="gpt_neo_tiny", epochs=1, max_steps=1,
                                                      batch_size=4, device="cpu", context=64),
             progress=False)
    assert model_vocab(tmp_path / "model")["sha256"] == expected
    init_model(data, tmp_path / "init", "gpt_neo_tiny", context=64)
    assert model_vocab(tmp_path / "init")["sha256"] == expected
    export_local(tmp_path / "model", tmp_path / "export")
    assert model_vocab(tmp_path / "export") == model_vocab(tmp_path / "model")
    # a vocab.json changed after `sequences` wrote it is refused before training
    (data / "vocab.json").write_text((data / "vocab.json").read_text().replace('"A"', '"Z"'))
    with pytest.raises(LogDataError, match="does not match"):
        pretrain(data, tmp_path / "again", PretrainConfig(arch="gpt_neo_tiny", max_steps=1,
                                                          device="cpu", context=64))


def test_llama_tiny_key_model_builds_and_scores(vocab, tmp_path):
    build_keyseq_model(vocab, "llama_tiny", tmp_path / "llama", seed=0)
    reloaded, tok = load_model(tmp_path / "llama")
    ids = tok("E1 E2 E3", return_tensors="pt")["input_ids"]
    assert reloaded(ids).logits.shape == (1, 3, len(vocab))
    assert type(reloaded).__name__ == "LlamaForCausalLM"
