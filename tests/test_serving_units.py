"""Unit tests of the service's pure parts: scoring backends, sessions, line reading, decoding."""

from __future__ import annotations

import io
import os
import random
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch

from logdata.keyseq.grouping import count_windows, time_windows
from logdata.keyseq.vocab import KeyVocab
from serving.events import count_windows_of, decode_lines, time_windows_of
from serving.ingest import OVERSIZE, FileFollower, iter_lines
from serving.scoring import RankRequest, RecomputeScorer, TorchScorer, export_onnx, onnx_forward
from serving.transport import Message, partition_of
from serving.worker import decode, latency_buckets, percentile_from_histogram
from validation.keyseq_detect import true_key_ranks
from verl_recipes.local.keyseq.model import build_keyseq_model


def _model(arch: str):
    torch.manual_seed(0)
    vocab = KeyVocab.build([[f"E{i}" for i in range(1, 40)]])
    model, tokenizer = build_keyseq_model(vocab, arch)
    return model.eval(), tokenizer


def _full_ranks(model, ids: list[int]) -> list[int]:
    """The offline detector's ranks: one forward pass over the whole sequence."""
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([ids])).logits
    return true_key_ranks(logits[:, :-1], torch.tensor([ids[1:]]))[0].tolist()


def _sessions(tokenizer, n: int, seed: int) -> dict[str, list[int]]:
    rng = random.Random(seed)
    return {f"s{i}": [tokenizer.bos_token_id] + [rng.randrange(4, len(tokenizer))
                                                 for _ in range(rng.randrange(2, 45))]
            for i in range(n)}


def _stream(scorer, sessions: dict[str, list[int]], seed: int, forget: float = 0.0) -> dict:
    """Feed every session a few keys at a time, sessions interleaved, as a worker does."""
    rng = random.Random(seed)
    done = {s: 1 for s in sessions}
    ranks: dict[str, list[int]] = {s: [] for s in sessions}
    while any(done[s] < len(v) for s, v in sessions.items()):
        requests = []
        for s, ids in sessions.items():
            if done[s] < len(ids):
                n = rng.randrange(1, 6)
                requests.append(RankRequest(s, tuple(ids[:done[s]]), tuple(ids[done[s]:done[s] + n])))
                done[s] += n
        if forget and rng.random() < forget:
            scorer.forget([rng.choice(list(sessions))])  # a session moved away and back
        for request, got in zip(requests, scorer.ranks(requests), strict=True):
            ranks[request.session] += got
    return ranks


@pytest.mark.parametrize("arch", ["loggpt", "gpt_neo_tiny", "llama_tiny"])
def test_kv_cache_micro_batches_give_the_offline_ranks(arch):
    model, tokenizer = _model(arch)
    sessions = _sessions(tokenizer, 25, seed=1)
    scorer = TorchScorer(model, tokenizer.pad_token_id, max_batch=6)
    got = _stream(scorer, sessions, seed=2, forget=0.3)
    assert got == {s: _full_ranks(model, ids) for s, ids in sessions.items()}
    assert scorer.hits > 3 * scorer.misses  # the cache was used, not just pre-fills
    assert scorer.cached_tokens == sum(len(c.tokens) for c in scorer.cache.values())


def test_kv_cache_respects_its_budget_and_stays_exact():
    model, tokenizer = _model("loggpt")
    sessions = _sessions(tokenizer, 20, seed=3)
    scorer = TorchScorer(model, tokenizer.pad_token_id, max_batch=8, cache_tokens=60)
    got = _stream(scorer, sessions, seed=4)
    assert scorer.cached_tokens <= 60 and scorer.misses > len(sessions)
    assert got == {s: _full_ranks(model, ids) for s, ids in sessions.items()}


def test_onnx_backend_gives_the_offline_ranks(tmp_path):
    model, tokenizer = _model("loggpt")
    path = export_onnx(model, tmp_path / "model.onnx")
    scorer = RecomputeScorer(onnx_forward(path), tokenizer.pad_token_id, max_batch=5)
    sessions = _sessions(tokenizer, 12, seed=5)
    assert _stream(scorer, sessions, seed=6) == {s: _full_ranks(model, ids)
                                                 for s, ids in sessions.items()}


def test_rank_requests_need_context_and_new_tokens():
    model, tokenizer = _model("loggpt")
    with pytest.raises(ValueError, match="context and new"):
        TorchScorer(model, tokenizer.pad_token_id).ranks([RankRequest("s", (1,), ())])


def test_count_and_time_windows_match_the_offline_windows():
    rng = np.random.default_rng(0)
    n = 400
    frame = pd.DataFrame({"line_no": range(n), "event_id": [f"E{k}" for k in rng.integers(1, 9, n)],
                          "label": ["normal"] * n,
                          "timestamp": np.sort(rng.uniform(1000.0, 1900.0, n)).round(1)})
    for size, step in ((10, 10), (10, 3), (7, 5)):
        offline = count_windows(frame, size, step, min_events=1)
        streamed: dict[str, list[str]] = {}
        for pos, key in enumerate(frame["event_id"]):
            for sid in count_windows_of(pos, size, step):
                streamed.setdefault(sid, []).append(key)
        assert streamed == dict(zip(offline["sequence_id"], offline["keys"], strict=True))
    t0 = float(frame["timestamp"].iloc[0])
    for size, step in ((60.0, 30.0), (60.0, 60.0), (45.0, 20.0)):
        offline = time_windows(frame, size, step, min_events=1, grid="half_open")
        streamed = {}
        for t, key in zip(frame["timestamp"], frame["event_id"], strict=True):
            for sid in time_windows_of(float(t), size, step, t0):
                streamed.setdefault(sid, []).append(key)
        assert streamed == dict(zip(offline["sequence_id"], offline["keys"], strict=True))


def test_partitions_are_stable_and_spread():
    counts = Counter(partition_of(f"blk_{i}", 4) for i in range(4000))
    assert set(counts) == {0, 1, 2, 3} and min(counts.values()) > 800
    assert partition_of("blk_7", 4) == partition_of("blk_7", 4)


def test_iter_lines_bounds_memory_and_flags_oversize_lines():
    data = b"a\n" + b"x" * 5000 + b"\nb\r\n" + b"y" * 20 + b"\nlast"
    got = list(iter_lines(io.BytesIO(data), max_line_bytes=16))
    assert got == [b"a", OVERSIZE, b"b", OVERSIZE, b"last"]
    lines, skipped = decode_lines([b"ok", b"\xff\xfe", "é".encode()], 64)
    assert lines == ["ok", "é"] and skipped == Counter({"invalid_utf8": 1})


def test_follow_reads_a_rotated_file_from_its_start(tmp_path):
    path = tmp_path / "app.log"
    path.write_bytes(b"one\ntwo\n")
    follower = FileFollower(path, from_start=True)
    lines = iter_lines(follower.stream, 1024, follow=True, reopen=follower.reopen)
    assert [next(lines), next(lines), next(lines)] == [b"one", b"two", None]
    os.rename(path, tmp_path / "app.log.1")  # logrotate: move, then a new file
    path.write_bytes(b"three\n")
    got = [line for line, _ in zip(lines, range(5), strict=False) if line is not None]
    assert got[:1] == [b"three"]


def test_bad_entries_are_classified():
    def entry(**fields):
        return Message(0, "1-0", {k.encode(): v for k, v in fields.items()})

    ok = decode(entry(e=b"7", t=b"1", f=b"hdfs", c=b"hello", s=b"blk_1 blk_2"), "hdfs", 100)
    assert ok.id == 7 and ok.sessions == ["blk_1", "blk_2"] and ok.content == "hello"
    assert decode(entry(e=b"7", t=b"1"), "hdfs", 100) == "malformed"
    assert decode(entry(e=b"x", t=b"1", c=b"a"), "hdfs", 100) == "malformed"
    assert decode(entry(e=b"7", t=b"1", f=b"bgl", c=b"a"), "hdfs", 100) == "unknown_format"
    assert decode(entry(e=b"7", t=b"1", f=b"hdfs", c=b"a" * 101), "hdfs", 100) == "oversize"
    assert decode(entry(e=b"7", t=b"1", f=b"hdfs", c=b"\xc3("), "hdfs", 100) == "invalid_utf8"
    assert decode(entry(ctl=b"end"), "hdfs", 100) is None


def test_latency_percentiles_from_the_histogram():
    rng = np.random.default_rng(0)
    lat_us = rng.lognormal(mean=np.log(5000), sigma=0.5, size=20000)
    hist = latency_buckets(lat_us)
    for q in (0.5, 0.99):
        exact = float(np.quantile(lat_us, q)) / 1000
        assert abs(percentile_from_histogram(hist, q) - exact) / exact < 0.06
    assert percentile_from_histogram({}, 0.5) is None


class _RecordingPublisher:
    """Stands in for ``serving.ingest.Publisher`` where only the lines sent matter."""

    max_line_bytes = 1 << 16

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.ended = False

    def send(self, batch: list) -> None:
        self.lines.extend(batch)

    def end(self) -> None:
        self.ended = True


@pytest.mark.parametrize("max_lines", [1, 14, 15, 16, 100, 1000])
def test_replay_max_lines_is_exact(tmp_path, max_lines: int):
    # the cap used to be checked per tick (rate/100 lines), so it overshot by up to a tick
    from serving.ingest import replay

    log = tmp_path / "a.log"
    log.write_bytes(b"".join(f"line {i}\n".encode() for i in range(200)))
    publisher = _RecordingPublisher()
    result = replay(publisher, log, rate=0, end=False, max_lines=max_lines, progress=False)
    expected = [f"line {i}".encode() for i in range(min(max_lines, 200))]
    assert [bytes(line).rstrip(b"\n") for line in publisher.lines] == expected
    assert result["lines"] == len(expected) and not publisher.ended


def test_replay_loops_a_gzip_log_and_stops_at_max_lines(tmp_path):
    # soak runs replay the real (gzip) HDFS log again and again: pass after pass, in file order
    import gzip

    from serving.ingest import replay

    log = tmp_path / "a.log.gz"
    with gzip.open(log, "wb") as out:
        out.write(b"".join(f"line {i}\n".encode() for i in range(7)))
    publisher = _RecordingPublisher()
    result = replay(publisher, log, rate=0, end=True, max_lines=17, progress=False, loop=True)
    assert [bytes(line) for line in publisher.lines] == [f"line {i % 7}".encode() for i in range(17)]
    assert result["lines"] == 17 and publisher.ended


def test_replay_of_an_empty_log_with_loop_ends(tmp_path):
    from serving.ingest import replay

    log = tmp_path / "empty.log"
    log.write_bytes(b"")
    publisher = _RecordingPublisher()
    assert replay(publisher, log, rate=0, end=False, progress=False, loop=True)["lines"] == 0
    assert publisher.lines == []
