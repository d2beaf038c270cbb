"""Prediction with the hf backend on a tiny offline model: prompts, end to end, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from logdata.io import sha256_file
from reward.parsing import parse_answer
from validation import model_evaluate as E
from validation import model_predict as P

REPO = Path(__file__).resolve().parents[1]
SYSTEM = "You are a log analysis expert. Decide whether the log is normal or abnormal."
LOGS = [
    ("generating core.<*> ciod: failed to read message prefix", "abnormal", "bgl"),
    ("instruction cache parity error corrected", "normal", "bgl"),
    ("Receiving block blk_<*> src: /<*>:<*> dest: /<*>:<*>", "normal", "synthetic"),
    ("kernel panic: fatal machine check on node <*>", "abnormal", "synthetic"),
]


def verl_rows(n: int) -> pd.DataFrame:
    """A VeRL-format test parquet, built by hand after DESIGN.md's schema."""
    rows = []
    for i in range(n):
        log, label, source = LOGS[i % len(LOGS)]
        log = f"{log} #{i}"
        rows.append({
            "data_source": source,
            "prompt": [{"role": "system", "content": SYSTEM},
                       {"role": "user", "content": f"Log: {log}"}],
            "ability": "log_anomaly",
            "reward_model": {"style": "rule", "ground_truth": label},
            "extra_info": {"split": "test", "index": i, "log": log,
                           "reference_rationale": "<think>a routine status line</think>"},
        })
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def test_parquet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "test.parquet"
    verl_rows(16).to_parquet(path)
    return path


def test_prompt_ids_match_verl_rollout(tiny_chat_model: Path) -> None:
    """Predict renders prompts with the exact call VeRL 0.9.1's agent-loop rollout makes."""
    from transformers import AutoTokenizer
    from verl.utils.tokenizer.continuous_token_wiring import create_continuous_token_builder

    tokenizer = AutoTokenizer.from_pretrained(tiny_chat_model)
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Log: x <*>"}]
    builder = create_continuous_token_builder(tokenizer, hf_model_type="qwen2")
    ours = P.render_prompt_ids(tokenizer, messages)
    assert ours == builder.build_initial_tokens(messages)
    assert tokenizer.decode(ours).endswith("<|im_start|>assistant\n")

    # data.apply_chat_template_kwargs reach the template the same way in both.
    tokenizer.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
        "{% endfor %}<|im_start|>assistant\n{% if not enable_thinking %}<think></think>{% endif %}"
    )
    kwargs = {"enable_thinking": False}
    builder = create_continuous_token_builder(tokenizer, hf_model_type="qwen2",
                                              chat_template_kwargs=kwargs)
    with_kwargs = P.render_prompt_ids(tokenizer, messages, kwargs)
    assert with_kwargs == builder.build_initial_tokens(messages)
    assert with_kwargs != P.render_prompt_ids(tokenizer, messages, {"enable_thinking": True})


def test_hf_predict_end_to_end(tiny_chat_model: Path, test_parquet: Path, tmp_path: Path) -> None:
    out = tmp_path / "pred" / "predictions.parquet"
    code = P.main(["--model", str(tiny_chat_model), "--data", str(test_parquet), "--out", str(out),
                   "--backend", "hf", "--max_tokens", "8", "--n", "2", "--limit", "6",
                   "--temperature", "0.8", "--chunk_size", "4", "--batch_size", "3"])
    assert code == 0
    frame = pd.read_parquet(out)
    assert list(frame.columns) == list(P.OUTPUT_COLUMNS)
    assert len(frame) == 12  # 6 rows x 2 samples
    pairs = sorted(zip(frame["index"], frame["sample"], strict=True))
    assert pairs == [(i, s) for i in range(6) for s in (0, 1)]
    assert list(frame["pred"]) == [parse_answer(r) for r in frame["response"]]
    assert (frame["response_tokens"] <= 8).all() and (frame["response_tokens"] > 0).all()
    src = pd.read_parquet(test_parquet)
    assert list(frame["log"][::2]) == [e["log"] for e in src["extra_info"][:6]]
    assert list(frame["label"][::2]) == [r["ground_truth"] for r in src["reward_model"][:6]]
    assert not out.with_name(out.name + ".parts").exists()

    meta = E.read_run_metadata(out)
    key = meta["run_key"]
    assert key["model"] == str(tiny_chat_model.resolve())
    assert key["data_sha256"] == sha256_file(test_parquet)
    assert key["sampling"] == {"temperature": 0.8, "top_p": 0.7, "max_tokens": 8, "n": 2, "seed": 0}
    assert key["backend"] == "hf"
    assert meta["generated_rows"] == 12 and meta["reused_rows"] == 0

    # ... into evaluation, with sessions over the predicted templates.
    logs = list(frame["log"].unique())
    sessions = pd.DataFrame({"session_id": ["a", "b"], "templates": [logs[:3], logs[3:]],
                             "label": ["abnormal", "normal"]})
    sessions.to_parquet(tmp_path / "sessions.parquet")
    assert E.main(["--predictions", str(out), "--sessions", str(tmp_path / "sessions.parquet"),
                   "--out", str(tmp_path / "eval")]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["template"]["overall"]["n"] == 12
    unknown = (frame["pred"] == "unknown").mean()
    assert metrics["template"]["overall"]["unknown_rate"] == pytest.approx(unknown)
    assert metrics["session"]["overall"]["n_sessions"] == 2
    assert metrics["session"]["overall"]["coverage"] == 1.0
    assert metrics["run"]["run_key"]["data_sha256"] == key["data_sha256"]

    # A rerun with the same settings does nothing; other settings are refused.
    assert P.main(["--model", str(tiny_chat_model), "--data", str(test_parquet), "--out",
                   str(out), "--max_tokens", "8", "--n", "2", "--limit", "6", "--temperature",
                   "0.8", "--chunk_size", "4", "--batch_size", "3"]) == 0
    assert E.read_run_metadata(out) == meta
    assert P.main(["--model", str(tiny_chat_model), "--data", str(test_parquet), "--out",
                   str(out), "--max_tokens", "9"]) == 2


def test_resume_after_kill(tiny_chat_model: Path, test_parquet: Path, tmp_path: Path) -> None:
    """Kill the CLI after its first chunk; the rerun keeps finished chunks and only adds the rest."""
    out = tmp_path / "predictions.parquet"
    parts = tmp_path / "predictions.parquet.parts"
    args = ["--model", str(tiny_chat_model), "--data", str(test_parquet), "--out", str(out),
            "--backend", "hf", "--max_tokens", "32", "--chunk_size", "2", "--batch_size", "1",
            "--temperature", "0"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen([sys.executable, str(REPO / "validation" / "model_predict.py"), *args],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 90
    try:
        while not (parts / "part-00000.parquet").exists():
            assert proc.poll() is None, "predict exited before writing a chunk"
            assert time.monotonic() < deadline, "no chunk written in 90 s"
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not out.exists(), "the run finished before it could be killed"
    finished = sorted(parts.glob("part-*.parquet"))
    assert 1 <= len(finished) < 8
    before = {p.name: (p.stat().st_mtime_ns, pd.read_parquet(p)) for p in finished}

    assert P.main(args) == 0
    meta = E.read_run_metadata(out)
    reused = sum(len(f) for _, f in before.values())
    assert meta["reused_rows"] == reused
    assert meta["generated_rows"] == 16 - reused
    final = pd.read_parquet(out)
    assert list(final["index"]) == list(range(16))
    for _, frame in before.values():  # finished rows kept verbatim
        kept = final[final["index"].isin(frame["index"])].reset_index(drop=True)
        pd.testing.assert_frame_equal(kept, frame.reset_index(drop=True))


def test_registry_and_conversation(tiny_chat_model: Path, test_parquet: Path,
                                   tmp_path: Path) -> None:
    registry = tmp_path / "validation" / "reg.yaml"
    registry.parent.mkdir()
    registry.write_text(
        f"models:\n  - name: tiny\n    path: {tiny_chat_model}\n"
        f"test_sets:\n  - name: t\n    data: {test_parquet}\n"
        "conversations:\n  - name: parquet\n  - name: lit\n    system_prompt_text: BE BRIEF\n"
        "  - name: expert\n    system_prompt: expert\n"
    )
    parser = P.build_parser()
    args = parser.parse_args(["-m", "0", "-t", "t", "-c", "lit", "--registry", str(registry),
                              "--out", str(tmp_path / "o.parquet")])
    model, data, system, conversation = P.resolve_inputs(args)
    assert (model, data, system, conversation) == (str(tiny_chat_model), test_parquet,
                                                    "BE BRIEF", "lit")
    requests = P.load_requests(data, limit=2, system_prompt=system)
    assert requests["messages"][0][0] == {"role": "system", "content": "BE BRIEF"}
    assert [m["role"] for m in requests["messages"][0]] == ["system", "user"]

    args = parser.parse_args(["-m", "tiny", "-t", "0", "-c", "expert", "--registry",
                              str(registry), "--out", str(tmp_path / "o.parquet")])
    from logdata.templates.prompts import SYSTEM_PROMPTS

    assert P.resolve_inputs(args)[2] == SYSTEM_PROMPTS["expert"]
    args = parser.parse_args(["-m", "9", "-t", "t", "--registry", str(registry),
                              "--out", str(tmp_path / "o.parquet")])
    with pytest.raises(P.PredictError, match="no model '9'"):
        P.resolve_inputs(args)


def test_bad_data_is_a_one_line_error(tiny_chat_model: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.parquet"
    frame = verl_rows(2)
    frame["reward_model"] = [{"style": "rule", "ground_truth": "Anomaly"}] * 2
    frame.to_parquet(bad)
    code = P.main(["--model", str(tiny_chat_model), "--data", str(bad), "--out",
                   str(tmp_path / "o.parquet")])
    assert code == 2
    assert "ground_truth must be one of" in capsys.readouterr().err


@pytest.mark.gpu
def test_vllm_backend(tiny_chat_model: Path, test_parquet: Path, tmp_path: Path) -> None:
    pytest.importorskip("vllm")
    out = tmp_path / "predictions.parquet"
    assert P.main(["--model", str(tiny_chat_model), "--data", str(test_parquet), "--out", str(out),
                   "--backend", "vllm", "--max_tokens", "16", "--n", "2", "--chunk_size", "8",
                   "--gpu_memory_utilization", "0.3", "--max_model_len", "1024"]) == 0
    frame = pd.read_parquet(out)
    assert len(frame) == 32
    assert list(frame["pred"]) == [parse_answer(r) for r in frame["response"]]
    assert E.read_run_metadata(out)["run_key"]["backend"] == "vllm"


# ---------------------------------------------------------------------------------------------
# A run that fails before generating leaves nothing that blocks the corrected rerun (issue 11)
# ---------------------------------------------------------------------------------------------


def _predict_args(model: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return ["--model", str(model), "--data", str(data), "--out", str(out), "--max-tokens", "4",
            "--limit", "4", "--temperature", "0", *extra]


def test_missing_vllm_names_the_fix_and_leaves_no_parts(
        tiny_chat_model: Path, test_parquet: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # as if vLLM were not installed
    out = tmp_path / "predictions.parquet"
    assert P.main(_predict_args(tiny_chat_model, test_parquet, out, "--backend", "vllm")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and len(err.strip().splitlines()) == 1
    assert "pip install vllm" in err and "--backend hf" in err
    assert not out.with_name(out.name + ".parts").exists()
    # the corrected rerun is not refused
    assert P.main(_predict_args(tiny_chat_model, test_parquet, out, "--backend", "hf")) == 0
    assert len(pd.read_parquet(out)) == 4


def test_bad_model_folder_leaves_no_parts(tiny_chat_model: Path, test_parquet: Path,
                                          tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "predictions.parquet"
    parts = out.with_name(out.name + ".parts")
    empty = tmp_path / "not_a_model"
    empty.mkdir()
    assert P.main(_predict_args(empty, test_parquet, out)) == 2
    assert "config.json" in capsys.readouterr().err
    assert not parts.exists()
    broken = tmp_path / "broken_model"  # a config but no weights: fails while loading
    broken.mkdir()
    (broken / "config.json").write_text((tiny_chat_model / "config.json").read_text())
    assert P.main(_predict_args(broken, test_parquet, out)) != 0
    assert not parts.exists()
    assert P.main(_predict_args(tiny_chat_model, test_parquet, out)) == 0


def test_parts_without_any_part_file_do_not_block(tiny_chat_model: Path, test_parquet: Path,
                                                  tmp_path: Path) -> None:
    """A parts folder that an earlier failed start left with only a manifest holds no work."""
    out = tmp_path / "predictions.parquet"
    parts = out.with_name(out.name + ".parts")
    parts.mkdir()
    (parts / P.MANIFEST).write_text(json.dumps({"backend": "vllm", "model": "/elsewhere"}))
    assert P.main(_predict_args(tiny_chat_model, test_parquet, out)) == 0
    assert not parts.exists()


def test_data_changed_after_build_is_refused_before_any_model_loads(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from logdata.staging import write_meta

    data = tmp_path / "bgl" / "test.parquet"
    data.parent.mkdir()
    verl_rows(4).to_parquet(data)
    write_meta(data.parent, {"params": {"dataset": "bgl"}})  # as build/prepare write it
    model = tmp_path / "model"  # never loaded: a config.json is all resolve_inputs looks at
    model.mkdir()
    (model / "config.json").write_text("{}")
    loaded: list[object] = []

    def no_backend(*args: object) -> None:
        loaded.append(args)
        raise AssertionError("the model must not load")

    monkeypatch.setattr(P, "make_backend", no_backend)
    out = tmp_path / "predictions.parquet"
    argv = ["--model", str(model), "--input", str(data), "--out", str(out)]
    assert P.resolve_inputs(P.build_parser().parse_args(argv))[1] == data  # untouched: accepted
    verl_rows(3).to_parquet(data)  # changed after build wrote meta.json
    assert P.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and len(err.strip().splitlines()) == 1, err
    assert "does not match" in err and "test.parquet" in err
    assert not loaded and not out.exists() and not out.with_name(out.name + ".parts").exists()
