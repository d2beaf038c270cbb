"""Rationale distillation against a real OpenAI-compatible HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest

from verl_recipes.local.chat import rationales as R

REPO = Path(__file__).resolve().parents[1]
SECRET = "sk-test-secret-never-on-disk"

SYSTEM = {"role": "system", "content": "Classify the log."}
LOGS = [("disk failure on node <*>", "abnormal"), ("job <*> started", "normal"),
        ("kernel panic fatal", "abnormal"), ("heartbeat ok", "normal")]


def _rows():
    return [
        {"data_source": "synthetic", "prompt": [SYSTEM, {"role": "user", "content": f"Log: {log}"}],
         "ability": "log_anomaly", "reward_model": {"style": "rule", "ground_truth": label},
         "extra_info": {"split": "train", "index": i, "log": log}}
        for i, (log, label) in enumerate(LOGS)
    ]


class Behaviour:
    """What the fake teacher does per log: a list of actions consumed one per request."""

    def __init__(self):
        self.plan: dict[str, list[str]] = {}
        self.calls: dict[str, int] = {}
        self.auth: list[str | None] = []
        self.lock = threading.Lock()


def _handler(behaviour: Behaviour):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep pytest output clean
            return

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            user = body["messages"][-1]["content"]
            log = user.split("\n")[0].removeprefix("Log: ")
            label = user.rsplit("Correct label: ", 1)[1].strip()
            with behaviour.lock:
                behaviour.auth.append(self.headers.get("Authorization"))
                behaviour.calls[log] = behaviour.calls.get(log, 0) + 1
                plan = behaviour.plan.get(log, [])
                action = plan.pop(0) if plan else "ok"
            if action == "500":
                self.send_response(500)
                self.end_headers()
                return
            if action == "slow":
                time.sleep(1.0)
            other = "normal" if label == "abnormal" else "abnormal"
            answer = other if action == "disagree" else label
            content = f"<think>because {log}</think><answer>{answer}</answer>"
            data = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(data.encode())

    return Handler


@pytest.fixture()
def server():
    behaviour = Behaviour()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(behaviour))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", behaviour
    httpd.shutdown()
    httpd.server_close()


def test_retry_after_500_drop_disagreeing_and_timeout(server, tmp_path):
    url, behaviour = server
    behaviour.plan = {"disk failure on node <*>": ["500", "ok"], "job <*> started": ["disagree"],
                      "kernel panic fatal": ["slow", "slow", "slow"]}
    teacher = R.OpenAITeacher(url, "teacher", api_key=SECRET, timeout=0.3)
    sidecar = tmp_path / "sft.parquet.parts.jsonl"
    done, stats = R.distil(_rows(), teacher, sidecar, concurrency=2, retries=2, backoff=0.01,
                           progress=False)
    assert behaviour.calls["disk failure on node <*>"] == 2  # 500, then success
    assert (stats.kept, stats.disagreed, stats.failed) == (2, 1, 1)
    assert behaviour.calls["kernel panic fatal"] == 3  # timed out 1 + 2 retries
    assert all(a == f"Bearer {SECRET}" for a in behaviour.auth)
    assert SECRET not in sidecar.read_text()
    frame = R.sft_frame(_rows(), done)
    assert len(frame) == 2
    first = frame.iloc[0]
    assert [m["role"] for m in first["messages"]] == ["system", "user", "assistant"]
    assert first["messages"][-1]["content"] == (
        "<think>because disk failure on node <*></think><answer>abnormal</answer>"
    )
    assert first["extra_info"]["reference_rationale"] == "because disk failure on node <*>"

    # Resume: only the failed row is asked again.
    behaviour.calls.clear()
    done, stats = R.distil(_rows(), teacher, sidecar, concurrency=2, retries=0, backoff=0.01,
                           progress=False)
    assert behaviour.calls == {"kernel panic fatal": 1}
    assert stats.resumed == 3 and stats.kept == 1


def test_cli_writes_sft_and_merges_into_train(server, tmp_path):
    url, _ = server
    train = tmp_path / "train.parquet"
    pd.DataFrame(_rows()).to_parquet(train)
    out = tmp_path / "sft.parquet"
    env = {**os.environ, "MY_KEY": SECRET}
    proc = subprocess.run(
        [sys.executable, "-m", "logdata", "rationales", "--teacher", url, "--teacher-model", "t",
         "--api-key-env", "MY_KEY", "--in", str(train), "--out", str(out), "--merge-into", str(train),
         "--no-progress"], capture_output=True, text=True, cwd=REPO, env=env, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert SECRET not in proc.stdout + proc.stderr
    assert len(pd.read_parquet(out)) == 4
    merged = pd.read_parquet(train)
    assert all(info["reference_rationale"].startswith("because") for info in merged["extra_info"])


def test_cli_errors_are_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "logdata", "rationales", "--teacher", "http://127.0.0.1:9/v1",
         "--in", str(tmp_path / "missing.parquet"), "--out", str(tmp_path / "o.parquet")],
        capture_output=True, text=True, cwd=REPO, timeout=60,
    )
    assert proc.returncode == 2 and proc.stderr.startswith("error:") and "Traceback" not in proc.stderr


def test_template_teacher_agrees_with_labels():
    for log, label in LOGS:
        status, rationale = R.judge_reply(R.template_rationale(log, label), label)
        assert status == "ok" and log in rationale


def test_backoff_doubles():
    delays = []

    def failing(_messages):
        raise R.TeacherError("HTTP 503", True)

    with pytest.raises(R.TeacherError):
        R.call_with_retries(failing, [], retries=3, backoff=0.5, sleep=delays.append)
    assert delays == [0.5, 1.0, 2.0]


def test_local_hf_teacher_runs_through_distil(tiny_chat_model, tmp_path):
    """A local model folder as teacher: chat-template generation, every row judged and recorded."""
    teacher = R.HFTeacher(tiny_chat_model, max_new_tokens=8)
    reply = teacher([SYSTEM, {"role": "user", "content": "Log: heartbeat ok"}])
    assert isinstance(reply, str) and reply  # a random tiny model still generates tokens
    sidecar = tmp_path / "sft.parquet.parts.jsonl"
    records, stats = R.distil(_rows(), teacher, sidecar, concurrency=2, progress=False)
    assert stats.asked == len(LOGS) == len(records)
    # a random model cannot write an agreeing <answer>: nothing is kept, everything is counted
    assert stats.kept == 0 and stats.disagreed + stats.empty == len(LOGS)
    assert len(sidecar.read_text().splitlines()) == len(LOGS)
    _, again = R.distil(_rows(), teacher, sidecar, progress=False)
    assert again.asked == 0 and again.resumed == len(LOGS)
