#!/usr/bin/env python
"""`make real-keyseq`: the key-sequence track on real HDFS blocks, stage by stage.

Data: LogLead's 2 % HDFS block sample (``../shared/data/hdfs_2pct``: 222,579 raw lines, 11,501
blocks, 350 anomalous), parsed with the built-in ``hdfs`` format and its labels, then cut by
``python -m logdata sequences`` under two protocols: ``loggpt`` (5,000 random normal blocks for
train/val 90/10, every other block is test) and ``chronological`` (train on the normal blocks of
the earliest 80 %).

Detectors, every one scored on the same test blocks and (where it has a K) over the same K sweep:

* simple baselines (:mod:`validation.keyseq_baselines`): a key never seen in training; PCA on
  tf-idf event counts (loglizer's); an isolation forest and a local outlier factor on counts;
* DeepLog (:mod:`verl_recipes.local.keyseq.deeplog`): LSTM, 2 × 64, window 10, top-g 9;
* LogGPT-size GPT-2 pretrained on normal blocks (``verl_recipes.local.keyseq.pretrain``), then
  fine-tuned three ways from it with the same steps (``verl_recipes.local.keyseq.rl``): LogGPT's
  ±1 REINFORCE, LogNEO's position-aware PPO, and LogNEO's PPO with the CE regulariser; the RL runs'
  own ``best/`` checkpoint (validation normal-key recall) and their ``last/`` are both scored;
  and ``topk_margin``, our teacher-forced objective aligned with what top-K detection judges
  (:mod:`verl_recipes.local.keyseq.rl`), with the same steps, batch and learning rate.

Every stage is a folder under ``--work`` (:mod:`stage_runner`): a stage whose outputs exist and
verify is skipped, so an interrupted run resumes; ``--only a,b`` runs some stages. Results:
``benchmarks/results/real_keyseq.{json,md,png}`` (:mod:`real_keyseq_report`).

Usage::

    python benchmarks/real_keyseq.py [--profile full|smoke] [--work DIR] [--data DIR] [--only …]
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE), str(ROOT / "scripts")]

from stage_runner import (  # noqa: E402
    Pipeline,
    Stage,
    StageContext,
    benchmark_parser,
    default_data,
    run_and_report,
    start,
    work_folder,
)

logger = logging.getLogger("real_keyseq")

RESULTS = HERE / "results"
RL_VARIANTS = ("loggpt_reinforce", "logneo_ppo", "logneo_ppo_ce", "topk_margin")
#: K values of every sweep (HDFS has 15 keys; LogGPT's K for HDFS is 7, DeepLog's g is 9)
SWEEP = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12)

#: the sizes of each profile, written into the results
PROFILES: dict[str, dict[str, Any]] = {
    "full": {
        "protocols": {"loggpt": ["--protocol", "loggpt", "--n-train", "5000"],
                      "chronological": ["--protocol", "chronological", "--train-ratio", "0.8"]},
        "seeds": [0, 1, 2],
        # RL variants run on these protocols only (CPU time)
        "rl_protocols": ["loggpt"],
        "k": 7,
        "pretrain": {"epochs": 6, "lr": 1e-3, "batch_size": 16, "schedule": "linear",
                     "warmup_steps": 50},
        "deeplog": {"epochs": 10, "batch_size": 256, "lr": 1e-3},
        # the settings of scripts/logneo_ablation.py (the synthetic ablation), unchanged
        "rl": {"steps": 100, "batch_size": 32, "lr": 5e-5, "ce_coef": 0.1, "kl_coef": 0.05,
               "eval_every": 10},
        "threads": 2,
        "block_limit": None,
    },
    # CI: a slice of the log, one seed, a few steps of everything
    "smoke": {
        "protocols": {"loggpt": ["--protocol", "loggpt", "--n-train", "300"]},
        "seeds": [0],
        "rl_protocols": ["loggpt"],
        "k": 7,
        "pretrain": {"epochs": 1, "lr": 1e-3, "batch_size": 16, "schedule": "linear",
                     "warmup_steps": 5},
        "deeplog": {"epochs": 1, "batch_size": 256, "lr": 1e-3},
        "rl": {"steps": 2, "batch_size": 8, "lr": 5e-5, "ce_coef": 0.1, "kl_coef": 0.05,
               "eval_every": 1},
        "threads": 1,
        "block_limit": 30000,
    },
}


def check_inputs(data: Path) -> tuple[Path, Path]:
    """The raw log and label file under ``data/hdfs_2pct``; exit with one line when absent."""
    log, labels = data / "hdfs_2pct" / "HDFS_2pct.log.gz", data / "hdfs_2pct" / "anomaly_label.csv"
    for path in (log, labels):
        if not path.is_file():
            raise SystemExit(f"error: {path} not found (pass --data, the folder holding hdfs_2pct/)")
    return log, labels


def head_lines(source: Path, out: Path, limit: int) -> Path:
    """The first ``limit`` lines of a gzip log, as a plain file (the smoke profile's slice)."""
    import gzip

    with gzip.open(source, "rt", encoding="utf-8", errors="replace") as src, \
            out.open("w", encoding="utf-8") as dst:
        for number, line in enumerate(src):
            if number >= limit:
                break
            dst.write(line)
    return out


def scores_summary(scores_path: Path) -> dict[str, Any]:
    """Counts of a ``scores.parquet`` (per-sequence ``label``, ``max_rank``)."""
    import pandas as pd

    frame = pd.read_parquet(scores_path)
    return {"sequences": len(frame), "abnormal": int((frame["label"] == "abnormal").sum())}


class Bench:
    """The stages of one profile over one work folder."""

    def __init__(self, work: Path, data: Path, profile: str) -> None:
        self.work, self.data, self.name = work, data, profile
        self.p = PROFILES[profile]
        self.pipeline = Pipeline(work, env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                                            "OMP_NUM_THREADS": str(self.p["threads"])})

    def folder(self, stage: str) -> Path:
        """The finished folder of a stage."""
        return self.pipeline.folder(stage)

    def seq(self, protocol: str) -> Path:
        """The ``logdata sequences`` folder of a protocol."""
        return self.folder(f"data_{protocol}") / "seq"

    # -- stage bodies

    def parse_stage(self, ctx: StageContext) -> dict[str, Any]:
        """``logdata parse --dataset hdfs --labels`` on the raw log (a slice in the smoke profile)."""
        log, labels = check_inputs(self.data)
        if self.p["block_limit"]:
            log = head_lines(log, ctx.work / "HDFS_head.log", self.p["block_limit"])
        ctx.run("parse", [sys.executable, "-m", "logdata", "parse", "--dataset", "hdfs", "--input",
                          log, "--labels", labels, "--out", ctx.work / "parsed", "--no-progress"])
        if self.p["block_limit"]:
            (ctx.work / "HDFS_head.log").unlink()
        meta = json.loads((ctx.work / "parsed" / "meta.json").read_text(encoding="utf-8"))
        return {"seconds": ctx.seconds("parse"), "templates": meta.get("templates"),
                "lines": meta.get("lines") or meta.get("counts")}

    def sequences_stage(self, protocol: str) -> Callable[[StageContext], dict[str, Any]]:
        """``logdata sequences`` under one protocol, from the parse stage's structured log."""
        def body(ctx: StageContext) -> dict[str, Any]:
            ctx.run("sequences", [sys.executable, "-m", "logdata", "sequences", "--input",
                                  self.folder("parse") / "parsed" / "structured.parquet",
                                  "--out", ctx.work / "seq", *self.p["protocols"][protocol]])
            meta = json.loads((ctx.work / "seq" / "meta.json").read_text(encoding="utf-8"))
            return {"counts": meta["counts"], "vocab_size": meta["vocab_size"],
                    "n_keys_train": meta["n_keys_train"],
                    "dropped_long_sequences": meta["dropped_long_sequences"]}
        return body

    def baselines_stage(self, protocol: str) -> Callable[[StageContext], dict[str, Any]]:
        """The simple detectors on one protocol's test split."""
        def body(ctx: StageContext) -> dict[str, Any]:
            import pandas as pd

            from logdata.keyseq.vocab import KeyVocab
            from validation.keyseq_baselines import run_baselines

            seq = self.seq(protocol)
            train = pd.concat([pd.read_parquet(seq / "train.parquet"),
                               pd.read_parquet(seq / "val.parquet")])
            started = time.perf_counter()
            runs = run_baselines(train, pd.read_parquet(seq / "test.parquet"),
                                 KeyVocab.load(seq / "vocab.json"), self.p["seeds"])
            for name, seeded in runs.items():
                for run in seeded:
                    pd.DataFrame({"sequence_id": run["sequence_id"], "label": run["labels"],
                                  "pred": run["pred"]}).to_parquet(
                        ctx.work / f"{name}_s{run['seed']}.parquet", index=False)
            return {"seconds": time.perf_counter() - started,
                    "fits": {name: [r["fit"] for r in seeded] for name, seeded in runs.items()}}
        return body

    def deeplog_stage(self, protocol: str, seed: int) -> Callable[[StageContext], dict[str, Any]]:
        """Train DeepLog on one protocol's normal training blocks and rank the test blocks."""
        def body(ctx: StageContext) -> dict[str, Any]:
            import pandas as pd

            from logdata.keyseq.vocab import KeyVocab
            from verl_recipes.local.keyseq.deeplog import (
                DeepLogConfig,
                save_deeplog,
                score_deeplog,
                train_deeplog,
            )

            seq = self.seq(protocol)
            vocab = KeyVocab.load(seq / "vocab.json")
            config = DeepLogConfig(seed=seed, threads=self.p["threads"], **self.p["deeplog"])
            model, summary = train_deeplog(pd.read_parquet(seq / "train.parquet"), vocab, config,
                                           with_eos=True, progress=False)
            save_deeplog(model, config, seq / "vocab.json", ctx.work / "model", summary)
            started = time.perf_counter()
            scores = score_deeplog(model, pd.read_parquet(seq / "test.parquet"), vocab, config,
                                   with_eos=True)
            scores.to_parquet(ctx.work / "scores.parquet", index=False)
            return {"train_seconds": summary["seconds"], "windows": summary["windows"],
                    "loss_per_epoch": summary["loss_per_epoch"],
                    "detect_seconds": time.perf_counter() - started,
                    **scores_summary(ctx.work / "scores.parquet")}
        return body

    def detect(self, model: Path, protocol: str, out: Path) -> dict[str, Any]:
        """``validation/keyseq_detect.py``'s detector on the test split (every K of the sweep)."""
        from validation.keyseq_detect import detect

        result = detect(model, self.seq(protocol) / "test.parquet", out, k=self.p["k"],
                        sweep=SWEEP, progress=False)
        for extra in ("k_sweep.png",):
            (out / extra).unlink(missing_ok=True)
        return {"detect_seconds": result["keyseq"]["seconds"],
                **scores_summary(out / "scores.parquet")}

    def pretrain_stage(self, protocol: str, seed: int) -> Callable[[StageContext], dict[str, Any]]:
        """LogGPT-size pretraining on normal blocks, then detection."""
        def body(ctx: StageContext) -> dict[str, Any]:
            import torch

            from verl_recipes.local.keyseq.pretrain import PretrainConfig, pretrain

            torch.set_num_threads(self.p["threads"])
            started = time.perf_counter()
            summary = pretrain(self.seq(protocol), ctx.work / "model", PretrainConfig(
                arch="loggpt", seed=seed, device="cpu", threads=self.p["threads"],
                **self.p["pretrain"]), progress=False)
            train_seconds = time.perf_counter() - started
            return {"train_seconds": train_seconds,
                    "best_val_loss": (summary or {}).get("best_val_loss"),
                    **self.detect(ctx.work / "model", protocol, ctx.work / "detect")}
        return body

    def rl_stage(self, variant: str, protocol: str, seed: int
                 ) -> Callable[[StageContext], dict[str, Any]]:
        """One RL variant from the same seed's pretrained model; its best/ and last/ detected."""
        def body(ctx: StageContext) -> dict[str, Any]:
            import torch
            from logneo_ablation import Settings, rl_config, training_summary

            from verl_recipes.local.keyseq.rl import train

            torch.set_num_threads(self.p["threads"])
            r = self.p["rl"]
            settings = replace(Settings(), rl_steps=r["steps"], rl_batch=r["batch_size"],
                               rl_lr=r["lr"], ce_coef=r["ce_coef"], kl_coef=r["kl_coef"],
                               eval_every=r["eval_every"], threads=self.p["threads"])
            started = time.perf_counter()
            summary = train(self.seq(protocol), self.folder(f"pretrain_{protocol}_s{seed}") / "model",
                            ctx.work / "run", rl_config(variant, settings, self.p["k"], seed),
                            overwrite=True, progress=False)
            out: dict[str, Any] = {"train_seconds": time.perf_counter() - started,
                                   "best_step": summary["best"]["step"],
                                   "training": training_summary(ctx.work / "run")}
            for checkpoint in ("best", "last"):
                out[checkpoint] = self.detect(ctx.work / "run" / checkpoint, protocol,
                                              ctx.work / f"detect_{checkpoint}")
            for name in ("best", "last"):  # the weights are large and not read again
                for weights in (ctx.work / "run" / name).glob("*.safetensors"):
                    weights.unlink()
            return out
        return body

    # -- the stage list

    def stages(self) -> list[Stage]:
        """Data first, then per protocol: baselines, and per seed DeepLog, pretraining, RL."""
        p = self.p
        out = [Stage("parse", self.parse_stage, {"block_limit": p["block_limit"]})]
        for protocol, flags in p["protocols"].items():
            data = f"data_{protocol}"
            out.append(Stage(data, self.sequences_stage(protocol), {"flags": flags}, ("parse",)))
            out.append(Stage(f"baselines_{protocol}", self.baselines_stage(protocol),
                             {"seeds": p["seeds"]}, (data,)))
            for seed in p["seeds"]:
                out.append(Stage(f"deeplog_{protocol}_s{seed}", self.deeplog_stage(protocol, seed),
                                 {"deeplog": p["deeplog"], "seed": seed}, (data,)))
                pre = f"pretrain_{protocol}_s{seed}"
                out.append(Stage(pre, self.pretrain_stage(protocol, seed),
                                 {"pretrain": p["pretrain"], "seed": seed, "k": p["k"]}, (data,)))
                if protocol in p["rl_protocols"]:
                    out += [Stage(f"{variant}_{protocol}_s{seed}",
                                  self.rl_stage(variant, protocol, seed),
                                  {"rl": p["rl"], "variant": variant, "seed": seed, "k": p["k"]},
                                  (data, pre)) for variant in RL_VARIANTS]
        return out


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    description = __doc__.split("\n\n")[0]
    args = benchmark_parser(description, list(PROFILES), "real_keyseq").parse_args(argv)
    start()
    data = (args.data or default_data(ROOT)).resolve()
    check_inputs(data)
    work = work_folder(args, ROOT, "real_keyseq")
    bench = Bench(work, data, args.profile)
    from real_keyseq_report import write_report

    results = args.results or (RESULTS if args.profile == "full" else None)
    return run_and_report(bench.pipeline, bench.stages(), args.only, results,
                          lambda records: write_report(records, PROFILES[args.profile], work,
                                                       results))


if __name__ == "__main__":
    sys.exit(main())
