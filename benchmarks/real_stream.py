#!/usr/bin/env python
"""`make real-stream`: the real-time service on the real HDFS 2 % log, stage by stage.

The model is the one ``make real-keyseq`` trained (LogGPT protocol, seed 0; its ``parse``,
``data_loggpt`` and ``pretrain_loggpt_s0`` stages are run first when missing). Stages:

* ``offline``: ``validation/keyseq_detect.py``'s detector at the benchmark's K on every block
  (train, val and test splits), the reference;
* ``consistency_<backend>``: a real ``redis-server``, a ``detect`` worker and ``replay`` of the raw
  log (``.gz``, as fast as replay goes, end markers, a session timeout longer than the run), then
  every block's session verdict compared with the offline one (``pred``, ``misses``,
  ``first_miss``, ``max_rank``);
* ``search_real`` / ``search_synthetic``: ``benchmarks/bench_stream.py``'s rate search (the highest
  rate held at p99 ≤ 45 ms, 3 repeats, 1 and 2 ONNX workers) on the real log and on the synthetic
  one;
* ``soak``: :mod:`stream_soak` for 10 minutes at 15,000 events/s, or at the highest rate the real
  search held with 2 workers when that is lower: worker RSS, Redis memory, lag and latency sampled,
  nothing may be lost.

Results: ``benchmarks/results/real_stream.{json,md,png}``.

Usage::

    python benchmarks/real_stream.py [--work DIR] [--data DIR] [--keyseq-work DIR] [--only …]
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]

from bench_stream import REAL_LOG, REAL_STAGES, Case, read_counters, worker_command  # noqa: E402
from stage_runner import (  # noqa: E402
    Pipeline,
    Stage,
    StageContext,
    benchmark_parser,
    default_data,
    fingerprint,
    run_and_report,
    run_stages,
    start,
    work_folder,
)

logger = logging.getLogger("real_stream")

RESULTS = HERE / "results"
#: the key-sequence stages the model comes from (benchmarks/real_keyseq.py)
KEYSEQ_STAGES = tuple(stage for stage, _ in REAL_STAGES.values())
#: session-verdict fields compared with the offline detector's scores
COMPARED = ("pred", "misses", "first_miss", "max_rank")
SPLITS = ("train", "val", "test")

#: the sizes of each profile, written into the results
PROFILES: dict[str, dict[str, Any]] = {
    "full": {"k": 7, "backends": ["onnx", "torch"], "partitions": 4,
             "search": {"repeats": 3, "workers": [1, 2], "lo": 2000, "hi": 24000, "step": 1000,
                        "seconds": 8},
             # the real log costs ~5x more per event (each event is its own forward row) and
             # replay offers at most ~12k/s of it beside the workers: a range that fits
             "search_real": {"lo": 1000, "hi": 10000, "step": 500},
             "soak": {"seconds": 600, "rate": 15000, "workers": 2, "sample_s": 5.0,
                      "session_timeout": 2.0, "retention": 120}},
    # CI-sized: one backend, a short search and soak (needs the real-keyseq smoke's stages)
    "smoke": {"k": 7, "backends": ["onnx"], "partitions": 2,
              "search": {"repeats": 1, "workers": [1], "lo": 2000, "hi": 4000, "step": 2000,
                         "seconds": 3},
              "soak": {"seconds": 20, "rate": 2000, "workers": 1, "sample_s": 2.0,
                       "session_timeout": 2.0, "retention": 120}},
}


def differences(offline: Mapping[str, Mapping[str, Any]], served: Mapping[str, Mapping[str, Any]],
                fields: tuple[str, ...] = COMPARED) -> list[dict[str, Any]]:
    """Every offline session whose served verdict is missing or differs in one of ``fields``.

    >>> differences({"a": {"pred": "normal"}, "b": {"pred": "abnormal"}, "c": {"pred": "normal"}},
    ...             {"a": {"pred": "normal"}, "b": {"pred": "normal"}}, ("pred",))
    [{'session': 'b', 'offline': {'pred': 'abnormal'}, 'served': {'pred': 'normal'}}, \
{'session': 'c', 'offline': {'pred': 'normal'}, 'served': None}]
    """
    out = []
    for session, want in offline.items():
        got = served.get(session)
        if got is None or any(got.get(f) != want[f] for f in fields):
            out.append({"session": session, "offline": {f: want[f] for f in fields},
                        "served": None if got is None else {f: got.get(f) for f in fields}})
    return out


def offline_verdicts(folder: Path) -> dict[str, dict[str, Any]]:
    """``{sequence_id: {field: value}}`` from the ``scores.parquet`` of every split under ``folder``."""
    import pandas as pd

    frames = [pd.read_parquet(folder / split / "scores.parquet") for split in SPLITS]
    rows = pd.concat(frames, ignore_index=True)
    if rows["sequence_id"].duplicated().any():
        raise SystemExit(f"error: a block is in two splits under {folder}")
    return {row["sequence_id"]: {f: _plain(row[f]) for f in (*COMPARED, "label")}
            for row in rows.to_dict("records")}


def _plain(value: Any) -> Any:
    """numpy scalars as Python ones, NaN/None as None (the served JSON's types)."""
    if value is None:
        return None
    if hasattr(value, "item"):
        value = value.item()
    return None if isinstance(value, float) and value != value else value


class Bench:
    """The stages of one profile over one work folder."""

    def __init__(self, work: Path, data: Path, keyseq_work: Path, profile: str,
                 max_lines: int | None = None) -> None:
        self.work, self.data, self.keyseq_work, self.name = work, data, keyseq_work, profile
        #: replay only the head of the log the model's stages parsed (the smoke profile's slice)
        self.max_lines = max_lines
        self.p = PROFILES[profile]
        self.pipeline = Pipeline(work, env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})

    @property
    def log(self) -> Path:
        """The raw real log."""
        return self.data / REAL_LOG

    def keyseq(self, what: str) -> Path:
        """A folder of the real-keyseq stages: ``parsed``, ``sequences`` or ``model``."""
        stage, sub = REAL_STAGES[what]
        return self.keyseq_work / stage / sub

    def model_fingerprint(self) -> str:
        """The real-keyseq pretraining record's fingerprint (a new model reruns every stage)."""
        record = json.loads((self.keyseq_work / "pretrain_loggpt_s0" / "stage.json").read_text())
        return fingerprint(record)

    # -- stage bodies

    def offline_stage(self, ctx: StageContext) -> dict[str, Any]:
        """The offline detector on every split at the profile's K."""
        from validation.keyseq_detect import detect

        out: dict[str, Any] = {}
        for split in SPLITS:
            started = time.perf_counter()
            detect(self.keyseq("model"), self.keyseq("sequences") / f"{split}.parquet", ctx.work / split,
                   k=self.p["k"], sweep=(self.p["k"],), progress=False)
            (ctx.work / split / "k_sweep.png").unlink(missing_ok=True)
            out[split] = {"seconds": round(time.perf_counter() - started, 1)}
        verdicts = offline_verdicts(ctx.work)
        out["blocks"] = len(verdicts)
        out["abnormal_predicted"] = sum(v["pred"] == "abnormal" for v in verdicts.values())
        return out

    def consistency_stage(self, backend: str) -> Callable[[StageContext], dict[str, Any]]:
        """Replay the raw log through one worker; compare every block with the offline verdict."""
        def body(ctx: StageContext) -> dict[str, Any]:
            import pandas as pd
            from bench_stream import wait_ready

            from serving.redis_server import RedisServer
            from serving.transport import RedisStreams

            offline = offline_verdicts(self.folder("offline"))
            log = ctx.work / "worker.log"
            with RedisServer(ctx.work / "redis") as server:
                transport = RedisStreams(server.client(), "logrl", self.p["partitions"])
                case = Case(self.log, self.keyseq("parsed"), self.keyseq("sequences"),
                            self.keyseq("model"))
                # sessions close at the end markers only, as offline judges whole blocks
                cmd = worker_command(server.url, case, backend, self.p["partitions"], 86_400, 10,
                                     "--k", self.p["k"])
                with log.open("wb") as handle:
                    worker = subprocess.Popen(cmd, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT)
                try:
                    wait_ready(transport, [worker], [log])
                    started = time.perf_counter()
                    ctx.run("replay", [sys.executable, "-m", "serving", "replay", "--redis",
                                       server.url, "--input", self.log, "--rate", 0, "--no-progress",
                                       *(["--max-lines", self.max_lines] if self.max_lines else [])],
                            cwd=ROOT)
                    code = worker.wait(timeout=3600)
                finally:
                    if worker.poll() is None:
                        worker.kill()
                        worker.wait()
                seconds = time.perf_counter() - started
                if code != 0:
                    raise SystemExit(f"worker exited with {code}:\n{log.read_text()[-3000:]}")
                client = server.client()
                served = {k.decode(): json.loads(v)
                          for k, v in client.hgetall(transport.key("session_verdicts")).items()}
                stats = read_counters(client, transport.key("stats"))
            pd.DataFrame([{"sequence_id": s, **{f: v.get(f) for f in (*COMPARED, "closed_by")}}
                          for s, v in sorted(served.items())]).to_parquet(
                ctx.work / "served.parquet", index=False)
            differ = differences(offline, served)
            return {"backend": backend, "blocks_offline": len(offline), "blocks_served": len(served),
                    "served_only": len(set(served) - set(offline)), "differences": len(differ),
                    "examples": differ[:5], "events": stats.get("events", 0),
                    "ingested": stats.get("ingest:events", 0),
                    "skipped": {k: v for k, v in stats.items() if "skipped:" in k},
                    "seconds": round(seconds, 1),
                    "events_per_s": stats.get("events", 0) / seconds if seconds else None,
                    "closed_by": sorted({v.get("closed_by") for v in served.values()} - {None})}
        return body

    def search_settings(self, case: str) -> dict[str, Any]:
        """The profile's rate-search sizes, with the case's own range where it has one."""
        return {**self.p["search"], **self.p.get(f"search_{case}", {})}

    def search_stage(self, case: str) -> Callable[[StageContext], dict[str, Any]]:
        """``bench_stream.py``'s rate search on one case, its results kept in the stage."""
        def body(ctx: StageContext) -> dict[str, Any]:
            s = self.search_settings(case)
            ctx.run("bench_stream", [
                sys.executable, HERE / "bench_stream.py", "--case", case, "--keyseq-work",
                self.keyseq_work, "--data", self.data, "--out", ctx.work / "bench",
                "--results", ctx.work, "--plot", ctx.work / "latency.png", "--backends", "onnx",
                "--workers", *s["workers"], "--repeats", s["repeats"], "--lo", s["lo"],
                "--hi", s["hi"], "--step", s["step"], "--seconds", s["seconds"]], cwd=ROOT)
            import shutil

            shutil.rmtree(ctx.work / "bench", ignore_errors=True)  # redis files, run logs
            stem = "bench_stream" if case == "synthetic" else "bench_stream_real"
            payload = json.loads((ctx.work / f"{stem}.json").read_text())
            return {"case": case, "search": payload["search"], "total_s": payload["total_s"],
                    "load_average_at_end": payload["load_average_at_end"]}
        return body

    def soak_rate(self) -> int:
        """15,000/s, or the mean highest rate the real search held with the soak's workers when
        lower (rounded down to the search step)."""
        s, soak = self.search_settings("real"), self.p["soak"]
        record = self.pipeline.record("search_real")
        held = [r for r in (record or {}).get("summary", {}).get("search", [])
                if r["workers"] == soak["workers"]]
        if not held:
            return soak["rate"]
        mean = int(held[0]["mean"]) // s["step"] * s["step"]
        return max(s["step"], min(soak["rate"], mean))

    def soak_stage(self, ctx: StageContext) -> dict[str, Any]:
        """:func:`stream_soak.soak` on the real log."""
        from stream_soak import SoakConfig, soak

        s = self.p["soak"]
        config = SoakConfig(rate=self.soak_rate(), seconds=s["seconds"], workers=s["workers"],
                            sample_s=s["sample_s"], session_timeout=s["session_timeout"],
                            retention=s["retention"], partitions=self.p["partitions"], k=self.p["k"])
        from bench_stream import real_case

        case = real_case(ctx.work / "case", self.keyseq_work, self.data)
        return soak(case, config, ctx.work)

    # -- the stage list

    def stages(self) -> list[Stage]:
        """Offline reference, consistency per backend, the two searches, the soak."""
        p, model = self.p, self.model_fingerprint()
        base = {"k": p["k"], "model": model, "partitions": p["partitions"]}
        base["max_lines"] = self.max_lines
        out = [Stage("offline", self.offline_stage, base)]
        out += [Stage(f"consistency_{b}", self.consistency_stage(b), {**base, "backend": b},
                      ("offline",)) for b in p["backends"]]
        out += [Stage(f"search_{case}", self.search_stage(case),
                      {**base, "search": self.search_settings(case), "case": case})
                for case in ("real", "synthetic")]
        out.append(Stage("soak", self.soak_stage, {**base, "soak": p["soak"]}, ("search_real",)))
        return out

    def folder(self, stage: str) -> Path:
        """The finished folder of a stage."""
        return self.pipeline.folder(stage)


def ensure_model(keyseq_work: Path, data: Path, profile: str) -> dict[str, Any]:
    """Run the real-keyseq stages the model comes from (each is skipped when done).

    Returns:
        The real-keyseq profile (its ``block_limit`` says how much of the log was parsed).
    """
    from real_keyseq import PROFILES as KEYSEQ_PROFILES
    from real_keyseq import Bench as KeyseqBench

    keyseq = KeyseqBench(keyseq_work, data, profile)
    stages = [s for s in keyseq.stages() if s.name in KEYSEQ_STAGES]
    if run_stages(keyseq.pipeline, stages, None) is None:
        raise SystemExit(f"error: the real-keyseq stages {', '.join(KEYSEQ_STAGES)} failed")
    return KEYSEQ_PROFILES[profile]


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = benchmark_parser(__doc__.split("\n\n")[0], list(PROFILES), "real_stream")
    parser.add_argument("--keyseq-work", type=Path, default=None,
                        help="the work folder of benchmarks/real_keyseq.py (default: "
                             "outputs/real_keyseq[_PROFILE])")
    args = parser.parse_args(argv)
    start()
    data = (args.data or default_data(ROOT)).resolve()
    keyseq_work = (args.keyseq_work or ROOT / "outputs" / (
        "real_keyseq" if args.profile == "full" else f"real_keyseq_{args.profile}")).resolve()
    keyseq = ensure_model(keyseq_work, data, args.profile)
    bench = Bench(work_folder(args, ROOT, "real_stream"), data, keyseq_work, args.profile,
                  keyseq["block_limit"])
    from real_stream_report import write_report

    results = args.results or (RESULTS if args.profile == "full" else None)
    return run_and_report(bench.pipeline, bench.stages(), args.only, results,
                          lambda records: write_report(records, bench.p, results, bench.work))


if __name__ == "__main__":
    sys.exit(main())
