"""`make real-bench`: a real chat model on real labelled BGL templates, stage by stage.

    python benchmarks/real_templates.py                      # the full benchmark (about 2 h here)
    python benchmarks/real_templates.py --profile smoke      # 2 GRPO steps on a handful (CI)
    python benchmarks/real_templates.py --only data,tfidf    # some stages (their inputs first)

Real data: LogPrompt's 1,766 expert-labelled BGL templates with RationAnomaly's label patch, and
R-Log's rationales (``$LOGRL_TEST_DATA`` or ``../shared/data``). Model: SmolLM2-135M-Instruct from
``make real-model`` (the stand-in for the paper's Llama-2-7B-chat, and the perplexity scorer of the
reward, since DistilGPT-2 cannot be fetched here).

Stages (each a folder under ``--work``; a stage whose outputs exist and verify is skipped, see
``benchmarks/stage_runner.py``):

==================  ===========================================================================
data                ``logdata prepare --templates`` (seeded stratified split, R-Log's templates
                    pinned to train), the SFT pool, the two SFT rationale sets, the GRPO prompts
majority, tfidf     baselines (``benchmarks/template_baselines.py``)
zeroshot_cot/expert the base model through ``model_predict.py --backend vllm``
sft_<data>_s<seed>  verl's SFT trainer (``model_train.sh sft_lora --cpu``, LoRA), export, predict
grpo_s<seed>        verl's ``main_ppo`` (``model_train.sh rationanomaly_grpo --cpu``) from the
                    chosen SFT model, export, predict
trl_step            the local TRL backend's GRPO step on the same model and batch (time ratio)
==================  ===========================================================================

Every model stage is scored on the same test split by ``model_evaluate.py``. The report
(``benchmarks/real_templates_report.py``) writes ``benchmarks/results/real_templates.{json,md,png}``.
The sizes of every stage are in :data:`PROFILES`; the chosen profile is recorded in the results.
"""

from __future__ import annotations

import json
import logging
import random
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from itertools import pairwise
from pathlib import Path
from typing import Any

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
for entry in (ROOT, ROOT / "benchmarks"):
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

from stage_runner import (  # noqa: E402
    Pipeline,
    Stage,
    StageContext,
    StageError,
    benchmark_parser,
    default_data,
    run_and_report,
    start,
    work_folder,
)

from logdata.templates.labelled import read_pinned  # noqa: E402
from logdata.templates.patch import normalise  # noqa: E402

logger = logging.getLogger("real_templates")

PY = sys.executable
DEFAULT_MODEL = ROOT / "models" / "smollm2-135m-instruct"
RESULTS = ROOT / "benchmarks" / "results"

#: real-data files, relative to the data folder
BGL_TEMPLATES = Path("template_labels/BGL_templates.csv")
LABEL_PATCH = Path("label_patches/anomaly_patch.json")
RLOG = Path("rationales/AnomalyDetection_with_reason.json")

#: SFT rationale sources: name → ``rationales`` teacher arguments (``{rlog}`` is R-Log's file)
SFT_SOURCES: dict[str, tuple[str, ...]] = {
    # short label-conditioned rule rationales (verl_recipes/local/chat/rationales.py) for all rows
    "rule": ("--teacher", "template"),
    # R-Log's rationales where they cover a row, rule rationales for the rest
    "rlog": ("--teacher", "{rlog}", "--fallback-teacher", "template"),
}

#: the sizes of each profile, written into the results (see the README's real-data section)
PROFILES: dict[str, dict[str, Any]] = {
    "full": {
        "split": (0.6, 0.1, 0.3),
        "split_seed": 0,
        # SFT pool: every abnormal train template and this many normal ones per abnormal
        "sft_normal_per_abnormal": 2,
        # try 1 (lr 3e-4, 1 epoch, 12 steps: loss 1.34 -> 0.53) left greedy answers looping on
        # the system prompt: 94 % hit the 128-token cap, unknown rate 0.96, F1 0.004
        "sft": {"lora_rank": 16, "lora_alpha": 32, "lr": 1.0e-3, "epochs": 2, "batch": 16,
                "max_length": 512},
        "sft_runs": [("rule", 0), ("rule", 1), ("rule", 2), ("rlog", 0)],
        # GRPO prompts: every abnormal train template, normals up to this abnormal fraction
        "grpo_abnormal_fraction": 0.25,
        # the SFT run GRPO starts from, fixed before any test score is seen
        "grpo_from": ("rule", 0),
        # lr 5e-6 moved one test answer (SFT F1 0.590 -> 0.596): grad norms 0.007-1.3, most
        # groups all right (rollout accuracy 0.72-0.97), so few non-zero advantages; the next
        # try to measure is a larger step (2e-5) and more samples per prompt
        "grpo": {"steps": 6, "prompts": 8, "n": 4, "max_response": 128, "lr": 5.0e-6,
                 "temperature": 0.9, "class_weights": {"abnormal": 2.0, "normal": 1.0},
                 "perplexity": True},
        "grpo_seeds": [0],
        # later GRPO tries, each a stage grpo_<name>_s0 from the same SFT start, run last.
        # try2, from try 1's logs: SFT's errors are false alarms (P 0.43, R 0.94) and 2:1
        # weights reward the abnormal answer more, so no class weights (RationAnomaly's "AC");
        # few groups had mixed answers, so 8 samples per prompt (same 32 rollouts a step);
        # grad norms were small, so a 4x larger step
        # try3, from try 2's rollouts: only 3 of 32 groups held both right and wrong answers (the
        # SFT model answers a template the same way in all 8 samples at temperature 0.9), so the
        # correctness term gave almost no advantage, and step 8 lost format at lr 2e-5: sample
        # hotter (1.2) with a smaller step (1e-5)
        "grpo_tries": {"try2": {"lr": 2.0e-5, "prompts": 4, "n": 8, "steps": 8,
                                "class_weights": {"abnormal": 1.0, "normal": 1.0}},
                       "try3": {"lr": 1.0e-5, "prompts": 4, "n": 8, "steps": 8, "temperature": 1.2,
                                "class_weights": {"abnormal": 1.0, "normal": 1.0}}},
        # greedy answers; R-Log-trained models write longer rationales (mean 179 tokens, p95 282);
        # the zero-shot base model rambles to any budget, so it gets the smallest
        "predict": {"max_tokens": 128, "max_tokens_long": 320, "max_tokens_zero_shot": 96,
                    "max_model_len": 1024},
        "zero_shot": ["cot", "expert"],
        "trl_steps": 3,
        "test_limit": None,
    },
    # CI (tests/test_real_templates_smoke.py): the data stage and two GRPO steps from the base
    # model on a handful of templates, nothing predicted
    "smoke": {
        "split": (0.6, 0.1, 0.3),
        "split_seed": 0,
        "sft_normal_per_abnormal": 1,
        "grpo_abnormal_fraction": 0.5,
        "grpo_rows": 8,
        "grpo_from": None,
        "grpo": {"steps": 2, "prompts": 4, "n": 2, "max_response": 48, "lr": 1.0e-6,
                 "temperature": 0.9, "class_weights": {"abnormal": 2.0, "normal": 1.0},
                 "perplexity": True},
        "grpo_seeds": [0],
        "sft_runs": [],
        "zero_shot": [],
        "baselines": [],
        "predict": None,
        "trl_steps": 0,
        "test_limit": None,
    },
}

#: the environment of every command: offline, quiet, vLLM's CPU KV cache sized for this machine
RUN_ENV: dict[str, str] = {
    "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
    "WANDB_MODE": "offline", "TOKENIZERS_PARALLELISM": "false", "RAY_DEDUP_LOGS": "0",
    "VLLM_CPU_KVCACHE_SPACE": "2", "VLLM_CPU_OMP_THREADS_BIND": "nobind",
    "PYTHONPATH": str(ROOT),
}


# ----------------------------------------------------------------------------- data helpers


def rl_labels(frame: pd.DataFrame) -> list[str]:
    """Gold labels of a VeRL RL frame."""
    return [rm["ground_truth"] for rm in frame["reward_model"]]


def rl_logs(frame: pd.DataFrame) -> list[str]:
    """Log templates of a VeRL RL frame."""
    return [info["log"] for info in frame["extra_info"]]


def balanced_rows(frame: pd.DataFrame, normal_per_abnormal: float, seed: int,
                  prefer: set[str] = frozenset(), limit: int | None = None) -> pd.DataFrame:
    """Every abnormal row and ``normal_per_abnormal`` × as many normal ones, seeded.

    Normal rows whose template is in ``prefer`` come first (R-Log covers them, so both SFT
    sources can be compared on the same rows). ``limit`` caps the total, half abnormal.
    """
    labels = pd.Series(rl_labels(frame), index=frame.index)
    abnormal = list(frame.index[labels == "abnormal"])
    normal = list(frame.index[labels == "normal"])
    rng = random.Random(seed)
    rng.shuffle(abnormal)
    rng.shuffle(normal)
    logs = dict(zip(frame.index, rl_logs(frame), strict=True))
    normal.sort(key=lambda i: normalise(logs[i]) not in prefer)  # stable: keeps the shuffle
    if limit is not None:
        abnormal = abnormal[: max(1, round(limit / (1 + normal_per_abnormal)))]
        keep_normal = limit - len(abnormal)
    else:
        keep_normal = round(len(abnormal) * normal_per_abnormal)
    chosen = abnormal + normal[:keep_normal]
    rng.shuffle(chosen)
    return frame.loc[chosen].reset_index(drop=True)


def abnormal_fraction_rows(frame: pd.DataFrame, fraction: float, seed: int,
                           limit: int | None = None) -> pd.DataFrame:
    """Every abnormal row (or half of ``limit``) and enough normal rows for ``fraction`` abnormal."""
    return balanced_rows(frame, (1 - fraction) / fraction, seed, limit=limit)


def write_rl(frame: pd.DataFrame, path: Path) -> None:
    """Write a VeRL RL frame (index reset, ``extra_info.index`` renumbered)."""
    frame = frame.reset_index(drop=True).copy()
    frame["extra_info"] = [{**info, "index": i} for i, info in enumerate(frame["extra_info"])]
    frame.to_parquet(path, index=False)


def count_overlap(frame: pd.DataFrame, templates: set[str]) -> int:
    """How many rows of ``frame`` have a template in ``templates``."""
    return sum(normalise(log) in templates for log in rl_logs(frame))


def class_counts(frame: pd.DataFrame) -> dict[str, int]:
    """``{"rows", "abnormal"}`` of a VeRL RL frame."""
    labels = rl_labels(frame)
    return {"rows": len(labels), "abnormal": labels.count("abnormal")}


def teacher_counts(log_text: str) -> dict[str, int]:
    """Rows a ``rationales`` run took from the reference file and from the fallback (0 if none)."""
    match = re.search(r"from the reference file ([\d,]+), from the fallback ([\d,]+)", log_text)
    if not match:
        return {}
    return {"reference": int(match[1].replace(",", "")), "fallback": int(match[2].replace(",", ""))}


# ----------------------------------------------------------------------------- stages


class Bench:
    """Builds the stages of one profile (see the module doc)."""

    def __init__(self, work: Path, data: Path, model: Path, profile: str) -> None:
        """Set the folders and the profile's sizes."""
        self.work, self.data, self.model, self.name = work, data, model, profile
        self.p = PROFILES[profile]
        self.pipeline = Pipeline(work, env=RUN_ENV, timeout=3600)

    # -- shared pieces

    def folder(self, stage: str) -> Path:
        """The finished folder of ``stage``."""
        return self.pipeline.folder(stage)

    def split_dir(self) -> Path:
        """The prepared split (train/val/test.parquet) of the data stage."""
        return self.folder("data") / "split"

    def evaluate(self, ctx: StageContext, predictions: Path) -> dict[str, Any]:
        """Run model_evaluate.py on ``predictions``; return its overall template metrics."""
        out = ctx.work / "eval"
        ctx.run("evaluate", [PY, ROOT / "validation" / "model_evaluate.py", "--predictions",
                             predictions, "--out", out])
        metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
        return metrics["template"]["overall"]

    def predict(self, ctx: StageContext, model: Path, max_tokens: int,
                conversation: str | None = None) -> dict[str, Any]:
        """vLLM greedy answers for the test split, then evaluation; returns metrics and times."""
        pred = ctx.work / "predictions.parquet"
        cmd: list[Any] = [PY, ROOT / "validation" / "model_predict.py", "--backend", "vllm",
                          "--model", model, "--input", self.split_dir() / "test.parquet",
                          "--out", pred, "--max-tokens", max_tokens, "--temperature", 0,
                          "--seed", 0, "--max-model-len", self.p["predict"]["max_model_len"]]
        if conversation:
            cmd += ["-c", conversation]
        if self.p["test_limit"]:
            cmd += ["--limit", self.p["test_limit"]]
        ctx.run("predict", cmd)
        metrics = self.evaluate(ctx, pred)
        frame = pd.read_parquet(pred)
        capped = response_stats(frame["response"].tolist(), model, max_tokens)
        return {"metrics": metrics, "max_tokens": max_tokens, **capped,
                "predict_seconds": ctx.seconds("predict")}

    # -- stage bodies

    def data_stage(self, ctx: StageContext) -> dict[str, Any]:
        """Split, SFT pool and rationales, GRPO prompts; the R-Log overlap check."""
        split = ctx.work / "split"
        p = self.p
        ctx.run("prepare", [PY, "-m", "logdata", "prepare", "--templates", self.data / BGL_TEMPLATES,
                            "--name", "bgl", "--patch", self.data / LABEL_PATCH, "--pin-train",
                            self.data / RLOG, "--split", *p["split"], "--seed", p["split_seed"],
                            "--out", split, "--no-progress"])
        train = pd.read_parquet(split / "train.parquet")
        covered = read_pinned(self.data / RLOG)
        overlap = {name: count_overlap(pd.read_parquet(split / f"{name}.parquet"), covered)
                   for name in ("train", "val", "test")}
        if overlap["val"] or overlap["test"]:
            raise StageError(f"R-Log rationales cover evaluation templates: {overlap}")
        pool = balanced_rows(train, p["sft_normal_per_abnormal"], p["split_seed"], prefer=covered)
        write_rl(pool, ctx.work / "sft_pool.parquet")
        sources: dict[str, Any] = {}
        for source, teacher in SFT_SOURCES.items():
            args = [a.format(rlog=self.data / RLOG) for a in teacher]
            out = ctx.work / f"sft_{source}.parquet"
            ctx.run(f"rationales_{source}", [PY, "-m", "logdata", "rationales", *args, "--input",
                                             ctx.work / "sft_pool.parquet", "--out", out,
                                             "--no-progress"])
            log = (ctx.work / "logs" / f"rationales_{source}.log").read_text(encoding="utf-8")
            kept = pd.read_parquet(out)
            sources[source] = {"rows": len(kept), **teacher_counts(log)}
        grpo = abnormal_fraction_rows(train, p["grpo_abnormal_fraction"], p["split_seed"] + 1,
                                      limit=p.get("grpo_rows"))
        write_rl(grpo, ctx.work / "grpo_train.parquet")
        ctx.run("rationales_grpo", [PY, "-m", "logdata", "rationales", "--teacher", "template",
                                    "--input", ctx.work / "grpo_train.parquet", "--out",
                                    ctx.work / "grpo_rationales.parquet", "--merge-into",
                                    ctx.work / "grpo_train.parquet", "--no-progress"])
        splits = {name: class_counts(pd.read_parquet(split / f"{name}.parquet"))
                  for name in ("train", "val", "test")}
        return {"splits": splits, "rlog_overlap": overlap, "sft_pool": class_counts(pool),
                "sft_sources": sources, "grpo_train": class_counts(grpo)}

    def baseline_stage(self, name: str) -> Callable[[StageContext], dict[str, Any]]:
        """A baseline of ``benchmarks/template_baselines.py``, evaluated."""
        def body(ctx: StageContext) -> dict[str, Any]:
            pred = ctx.work / "predictions.parquet"
            ctx.run("baseline", [PY, ROOT / "benchmarks" / "template_baselines.py", "--train",
                                 self.split_dir() / "train.parquet", "--test",
                                 self.split_dir() / "test.parquet", "--baseline", name, "--out",
                                 pred])
            return {"metrics": self.evaluate(ctx, pred), "train_seconds": ctx.seconds("baseline")}
        return body

    def zero_shot_stage(self, conversation: str) -> Callable[[StageContext], dict[str, Any]]:
        """The base model with one of the registry's prompts."""
        def body(ctx: StageContext) -> dict[str, Any]:
            return self.predict(ctx, self.model, self.p["predict"]["max_tokens_zero_shot"], conversation)
        return body

    def sft_stage(self, source: str, seed: int) -> Callable[[StageContext], dict[str, Any]]:
        """verl SFT (LoRA) on one rationale source, export, predict."""
        def body(ctx: StageContext) -> dict[str, Any]:
            s = self.p["sft"]
            ckpt = ctx.work / "ckpt"
            ctx.run("train", ["bash", ROOT / "model_train.sh", "sft_lora", "--cpu", "--cpu-ranks", 1,
                              f"model.path={self.model}",
                              f"data.train_files={self.folder('data') / f'sft_{source}.parquet'}",
                              f"trainer.default_local_dir={ckpt}", "trainer.experiment_name=real_sft",
                              f"model.lora_rank={s['lora_rank']}", f"model.lora_alpha={s['lora_alpha']}",
                              "model.enable_gradient_checkpointing=false",
                              f"data.train_batch_size={s['batch']}", "data.micro_batch_size_per_gpu=8",
                              f"data.max_length={s['max_length']}", "data.max_token_len_per_gpu=4096",
                              f"trainer.total_epochs={s['epochs']}", f"optim.lr={s['lr']}",
                              "trainer.save_freq=-1", "trainer.test_freq=-1",
                              "trainer.logger=[console]", f"trainer.seed={seed}"])
            ctx.run("export", ["bash", ROOT / "model_export.sh", ckpt, ctx.work / "model"])
            shutil.rmtree(ckpt)
            tokens = self.p["predict"]["max_tokens_long" if source == "rlog" else "max_tokens"]
            out = self.predict(ctx, ctx.work / "model", tokens)
            return {**out, "train_seconds": ctx.seconds("train") + ctx.seconds("export"),
                    "sft_loss": sft_losses(ctx.work / "logs" / "train.log")}
        return body

    def grpo_start(self) -> tuple[Path, tuple[str, ...]]:
        """The model GRPO starts from and the stage it comes from (none: the base model)."""
        if self.p["grpo_from"] is None:
            return self.model, ()
        source, seed = self.p["grpo_from"]
        stage = f"sft_{source}_s{seed}"
        return self.folder(stage) / "model", (stage,)

    def grpo_settings(self, variant: str | None = None) -> dict[str, Any]:
        """The profile's GRPO sizes, with a later try's changes (``grpo_tries``) applied."""
        return {**self.p["grpo"], **(self.p.get("grpo_tries", {}).get(variant) or {})}

    def grpo_overrides(self, start: Path, ckpt: Path, ray_tmp: str, seed: int,
                       metrics: Path, rollouts: Path, g: Mapping[str, Any]) -> list[str]:
        """The ``model_train.sh rationanomaly_grpo --cpu`` overrides for GRPO sizes ``g``."""
        batch = g["prompts"] * g["n"]
        out = [
            f"actor_rollout_ref.model.path={start}",
            f"data.train_files={self.folder('data') / 'grpo_train.parquet'}",
            f"data.val_files={self.split_dir() / 'val.parquet'}",
            f"trainer.default_local_dir={ckpt}", "trainer.experiment_name=real_grpo",
            f"++ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH='{metrics}'",
            f"++ray_kwargs.ray_init._temp_dir='{ray_tmp}'",
            "actor_rollout_ref.model.enable_gradient_checkpointing=false",
            f"data.train_batch_size={g['prompts']}", f"actor_rollout_ref.rollout.n={g['n']}",
            # one update per step (on-policy), so the rollout's own log-probs are the old ones
            f"actor_rollout_ref.actor.ppo_mini_batch_size={g['prompts']}",
            f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={min(batch, 8)}",
            f"actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu={min(batch, 16)}",
            "data.max_prompt_length=320", f"data.max_response_length={g['max_response']}",
            "actor_rollout_ref.rollout.max_model_len=512",
            "actor_rollout_ref.rollout.max_num_batched_tokens=4096",
            # CPU time: no reference model (no KL term) and no recomputed old log-probs
            "actor_rollout_ref.actor.use_kl_loss=false",
            "algorithm.rollout_correction.bypass_mode=true",
            "actor_rollout_ref.rollout.calculate_log_probs=true",
            f"actor_rollout_ref.rollout.temperature={g['temperature']}",
            f"actor_rollout_ref.actor.optim.lr={g['lr']}",
            f"trainer.total_training_steps={g['steps']}", f"trainer.save_freq={g['steps']}",
            "trainer.test_freq=-1", "trainer.val_before_train=false",
            "trainer.logger=[console,file]", f"trainer.rollout_data_dir={rollouts}",
            f"data.seed={seed}",
        ]
        for label, weight in g["class_weights"].items():
            out.append(f"reward.custom_reward_function.reward_kwargs.class_weights.{label}={weight}")
        if g["perplexity"]:
            out.append(f"++reward.custom_reward_function.reward_kwargs.perplexity_model={self.model}")
        return out

    def grpo_stage(self, seed: int, variant: str | None = None
                   ) -> Callable[[StageContext], dict[str, Any]]:
        """verl main_ppo GRPO from the chosen start, export, predict (when the profile predicts)."""
        g = self.grpo_settings(variant)

        def body(ctx: StageContext) -> dict[str, Any]:
            start, _ = self.grpo_start()
            ckpt, rollouts = ctx.work / "ckpt", ctx.work / "rollouts"
            metrics = ctx.work / "grpo_metrics.jsonl"
            ray_tmp = tempfile.mkdtemp(prefix="lrl", dir="/tmp")  # short: Ray's socket paths
            try:
                ctx.run("train", ["bash", ROOT / "model_train.sh", "rationanomaly_grpo", "--cpu",
                                  "--cpu-ranks", 1,
                                  *self.grpo_overrides(start, ckpt, ray_tmp, seed, metrics, rollouts, g)],
                        env={"VERL_FILE_LOGGER_PATH": str(metrics)})
            finally:
                kill_ray(ray_tmp)
            out: dict[str, Any] = {"train_seconds": ctx.seconds("train"),
                                   "start": str(start.relative_to(self.work)
                                                if start.is_relative_to(self.work) else start.name)}
            if self.p["predict"] is None:
                shutil.rmtree(ckpt)
                return out
            ctx.run("export", ["bash", ROOT / "model_export.sh", ckpt, ctx.work / "model"])
            shutil.rmtree(ckpt)
            return {**out, **self.predict(ctx, ctx.work / "model", self.p["predict"]["max_tokens"])}
        return body

    def trl_stage(self, ctx: StageContext) -> dict[str, Any]:
        """The local TRL backend's GRPO steps on the same start model and batch."""
        g = self.p["grpo"]
        start, _ = self.grpo_start()
        ctx.run("train", ["bash", ROOT / "model_train.sh", "local", f"model={start}",
                          f"data.train_files={self.folder('data') / 'grpo_train.parquet'}",
                          f"trainer.output_dir={ctx.work / 'out'}",
                          f"trainer.max_steps={self.p['trl_steps']}",
                          f"trainer.per_device_train_batch_size={g['prompts'] * g['n']}",
                          f"grpo.num_generations={g['n']}",
                          f"grpo.max_completion_length={g['max_response']}",
                          f"grpo.temperature={g['temperature']}", "grpo.beta=0.0",
                          f"trainer.learning_rate={g['lr']}", "trainer.save_steps=1000",
                          "data.max_prompt_length=320"])
        steps = trl_step_seconds(ctx.work / "out")
        shutil.rmtree(ctx.work / "out")
        return {"step_seconds": steps, "train_seconds": ctx.seconds("train")}

    # -- the stage list

    def stages(self) -> list[Stage]:
        """Every stage of the profile, the ones the GRPO comparison needs first.

        Order: data, baselines, the first zero-shot prompt, the SFT run GRPO starts from, GRPO,
        then the other SFT seeds and sources, the other zero-shot prompts and the TRL timing, so
        an interrupted run has the main comparison first.
        """
        p = self.p
        data_settings = {k: p.get(k) for k in ("split", "split_seed", "sft_normal_per_abnormal",
                                                "grpo_abnormal_fraction", "grpo_rows")}
        first = [Stage("data", self.data_stage, {"profile": data_settings, "sources": SFT_SOURCES})]
        for name in p.get("baselines", ["majority", "tfidf"]):
            first.append(Stage(name, self.baseline_stage(name), {"baseline": name}, ("data",)))
        zero_shot = [Stage(f"zeroshot_{conv}", self.zero_shot_stage(conv),
                           {"predict": p["predict"], "limit": p["test_limit"]}, ("data",))
                     for conv in p["zero_shot"]]
        sft = [Stage(f"sft_{source}_s{seed}", self.sft_stage(source, seed),
                     {"sft": p["sft"], "seed": seed, "source": source, "predict": p["predict"],
                      "limit": p["test_limit"]}, ("data",))
               for source, seed in p["sft_runs"]]
        _, after = self.grpo_start()
        grpo = [Stage(f"grpo_s{seed}", self.grpo_stage(seed),
                      {"grpo": p["grpo"], "seed": seed, "predict": p["predict"],
                       "limit": p["test_limit"]}, ("data", *after)) for seed in p["grpo_seeds"]]
        if p["trl_steps"]:
            grpo.append(Stage("trl_step", self.trl_stage, {"grpo": p["grpo"], "steps": p["trl_steps"]},
                              ("data", *after)))
        for variant in p.get("grpo_tries", {}):
            grpo.append(Stage(f"grpo_{variant}_s0", self.grpo_stage(0, variant),
                              {"grpo": self.grpo_settings(variant), "seed": 0,
                               "predict": p["predict"], "limit": p["test_limit"]}, ("data", *after)))
        start = [s for s in sft if s.name in after]
        rest_sft = [s for s in sft if s.name not in after]
        return first + zero_shot[:1] + start + grpo[:len(p["grpo_seeds"])] + rest_sft \
            + zero_shot[1:] + grpo[len(p["grpo_seeds"]):]


# ----------------------------------------------------------------------------- readers


def response_stats(responses: list[str], model: Path, max_tokens: int) -> dict[str, float]:
    """Mean response length in tokens and the share of responses that used the whole budget."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model))
    lengths = [len(tokenizer(r, add_special_tokens=False)["input_ids"]) for r in responses]
    if not lengths:
        return {"response_tokens": 0.0, "capped_rate": 0.0}
    return {"response_tokens": round(sum(lengths) / len(lengths), 1),
            "capped_rate": round(sum(n >= max_tokens - 1 for n in lengths) / len(lengths), 4)}


def sft_losses(log: Path) -> list[float]:
    """Training losses per step from verl's SFT console log (``train/loss:`` fields)."""
    text = log.read_text(encoding="utf-8", errors="replace")
    return [round(float(m), 4) for m in re.findall(r"train/loss:\s*([0-9.]+)", text)]


def trl_step_seconds(out: Path) -> list[float]:
    """Seconds between consecutive optimiser steps of a local TRL run (``metrics.jsonl`` wall times).

    The first step has no predecessor and is left out, so ``n`` steps give ``n - 1`` values.
    """
    from verl_recipes.local.common import read_metrics

    times: dict[int, float] = {}
    for row in read_metrics(out):
        if "loss" in row:
            times[int(row["step"])] = float(row["wall_time"])
    steps = sorted(times)
    return [round(times[b] - times[a], 1) for a, b in pairwise(steps)]


def kill_ray(temp_dir: str) -> None:
    """Kill what a GRPO run left under its private Ray temp dir (scripts/stage.sh), then remove it."""
    subprocess.run(["bash", "-c", f'source "{ROOT}/scripts/stage.sh"; kill_ray_processes "$0"',
                    temp_dir], check=False)
    shutil.rmtree(temp_dir, ignore_errors=True)


def check_inputs(data: Path, model: Path) -> None:
    """Fail before any stage when a real-data file or the model is missing."""
    missing = [str(data / f) for f in (BGL_TEMPLATES, LABEL_PATCH, RLOG) if not (data / f).is_file()]
    if missing:
        raise SystemExit(f"error: real data missing: {', '.join(missing)} (set LOGRL_TEST_DATA or "
                         "--data to the folder of ../shared/data)")
    if not (model / "config.json").is_file():
        raise SystemExit(f"error: no model at {model}: run `make real-model` first")


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    description = __doc__.split("\n\n")[0]
    parser = benchmark_parser(description, list(PROFILES), "real_templates")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL,
                        help="HF chat model folder (default: models/smollm2-135m-instruct)")
    args = parser.parse_args(argv)
    start()
    data = (args.data or default_data(ROOT)).resolve()
    model = args.model.resolve()
    check_inputs(data, model)
    work = work_folder(args, ROOT, "real_templates")
    bench = Bench(work, data, model, args.profile)
    from real_templates_report import write_report

    results = args.results or (RESULTS if args.profile == "full" else None)
    return run_and_report(bench.pipeline, bench.stages(), args.only, results,
                          lambda records: write_report(records, PROFILES[args.profile], work,
                                                       results))


if __name__ == "__main__":
    sys.exit(main())
