#!/usr/bin/env python
r"""LogNEO ablation at CPU scale: pretrain-only vs LogGPT REINFORCE vs LogNEO PPO without / with CE.

Two synthetic KEY datasets are generated directly as key sequences (so every anomaly has a known
type and is checked to break the grammar of normal sequences), written as structured logs and cut
by ``python -m logdata sequences``'s own code (:func:`logdata.keyseq.sequences.build_sequence_datasets`,
LogGPT protocol: a seeded draw of normal sequences for train/val, the rest plus every abnormal
sequence as test):

* ``hdfs_like``: one block per sequence (block windows, ``<eos>`` judged, prompts of at least 2
  keys). A *write* block is ``allocate``, ``receiving × r`` (r = 1–3 replicas), the ``r``
  responder/received pairs interleaved, ``addStored × r``, optional ``verify`` and ``delete``; a
  *replicate* block is four fixed keys and an optional fifth. Anomalies: ``count`` (one replica
  group one too long or too short: every key is plausible, only counting tells), ``swap`` (two
  neighbouring keys of different groups exchanged: the right keys at the wrong positions),
  ``early_end`` (the block stops inside a group: only the judged ``<eos>`` tells) and ``alert``
  (an alert key never seen in training: easy).
* ``bgl_like``: tumbling 60 s windows, each the random interleaving (a fair coin at every line)
  of a pair of workflows (6 allowed pairs of 5 kinds with 4–6 steps, one step of some kinds
  repeated 1–3×); no ``<eos>`` judged, as LogGPT does for time windows. Anomalies in one
  workflow: ``swap`` (two neighbouring steps exchanged), ``repeat`` (a step once too often),
  ``skip`` (a step left out) and ``alert``.

``swap``, ``count`` and ``repeat`` are the hard cases: their keys are plausible in the window, and
a pretrained model still ranks many of them inside the top-K (the per-type recall of
``pretrain`` shows how many).

For every dataset and seed (the data are fixed; the seed drives model initialisation, shuffling
and RL sampling) one LogGPT-size model is pretrained (``verl_recipes.local.keyseq.pretrain``) and
fine-tuned three ways (``verl_recipes.local.keyseq.rl``, same steps, batch and learning rate):
``loggpt_reinforce`` (±1 reward, baseline-free REINFORCE), ``logneo_ppo`` (position-aware
``logneo`` reward, PPO with critic, GAE and KL penalty, μ = 0) and ``logneo_ppo_ce`` (the same with
the CE regulariser). Every model is scored on the test split by ``validation/keyseq_detect.py``'s
:func:`~validation.keyseq_detect.detect` (the ``best/`` checkpoint, the run's own selection by
normal-key recall on validation; the ``last/`` checkpoint is scored too and reported in
``results.json`` and a second table).

Writes ``table.md`` (P/R/F1 at the chosen K, the best recall over the K sweep at a precision
at least the pretrained model's, recall per anomaly type, mean ± standard deviation over seeds;
the same for ``last/``; reward, KL and gold CE during RL), ``f1_vs_k.png`` (F1 against K, mean
over seeds, one column per dataset, ``best/`` and ``last/`` rows), ``results.json`` (every
number, the settings and the wall time) under ``--out`` (default ``outputs/logneo_ablation``)
and prints the table.

Usage::

    python scripts/logneo_ablation.py [--out outputs/logneo_ablation] [--seeds 0,1,2] [--workers 2]
        [--rl-steps 100] [--rl-lr 5e-5] [--pretrain-epochs 0] [--ce-coef 0.1] [--quick] [--overwrite]

Defaults finish in under 15 minutes on 2 CPU cores (measured wall time: verl_recipes/local/keyseq/README.md in
``verl_recipes/local/keyseq``). ``--quick`` shrinks everything to a smoke run (tests).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import json
import logging
import os
import random
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from multiprocessing import get_context
from typing import Any

import numpy as np
import pandas as pd

from logdata.cliargs import add_flag, add_out_flag, add_overwrite_flag, add_progress_flag, new_parser
from logdata.errors import LogDataError, run_cli
from logdata.keyseq.grouping import WindowSpec
from logdata.keyseq.sequences import SequenceConfig, build_sequence_datasets

logger = logging.getLogger("logneo_ablation")

ABNORMAL, NORMAL = "abnormal", "normal"
VARIANTS: tuple[str, ...] = ("pretrain", "loggpt_reinforce", "logneo_ppo", "logneo_ppo_ce")
SWEEP: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16)

# --- HDFS-like blocks -------------------------------------------------------------------------

ALLOCATE, RECEIVING, RESPONDER, RECEIVED, ADD_STORED, VERIFY, DELETE = (
    "E1", "E2", "E3", "E4", "E5", "E6", "E7")
REPLICATE: tuple[str, ...] = ("E8", "E9", "E10", "E5")
REPLICATE_TAIL = "E11"
HDFS_ALERTS: tuple[str, ...] = ("E20", "E21", "E22", "E23")
HDFS_ANOMALIES: dict[str, float] = {"count": 0.3, "swap": 0.3, "early_end": 0.15, "alert": 0.25}


def write_block(rng: random.Random, replicas: int) -> list[str]:
    """A normal HDFS-like write block with ``replicas`` replicas."""
    pairs = [[RESPONDER, RECEIVED] for _ in range(replicas)]
    merged: list[str] = []
    while pairs:
        pair = rng.choice(pairs)
        merged.append(pair.pop(0))
        if not pair:
            pairs.remove(pair)
    tail = ([VERIFY] if rng.random() < 0.4 else []) + ([DELETE] if rng.random() < 0.3 else [])
    return [ALLOCATE, *[RECEIVING] * replicas, *merged, *[ADD_STORED] * replicas, *tail]


def normal_block(rng: random.Random) -> list[str]:
    """A normal HDFS-like block: a write (70 %) or a replication."""
    if rng.random() < 0.7:
        return write_block(rng, rng.choices((1, 2, 3), weights=(0.2, 0.3, 0.5))[0])
    return [*REPLICATE, *([REPLICATE_TAIL] if rng.random() < 0.5 else [])]


def _group_bounds(keys: list[str], key: str) -> tuple[int, int]:
    """``[first, last + 1)`` of ``key`` in ``keys``."""
    where = [i for i, k in enumerate(keys) if k == key]
    return where[0], where[-1] + 1


def abnormal_block(rng: random.Random, kind: str) -> list[str]:
    """A write block broken in the way ``kind`` names (see the module docstring)."""
    keys = write_block(rng, rng.choice((2, 3)))
    if kind == "count":
        group = rng.choice((RECEIVING, ADD_STORED, RECEIVED))
        first, end = _group_bounds(keys, group)
        at = rng.randrange(first, end) if group == RECEIVED else end - 1
        return keys[:at] + keys[at + 1:] if rng.random() < 0.5 else [*keys[:at], group, *keys[at:]]
    if kind == "swap":  # the last key of a group exchanged with the first of the next one
        at = keys.index(RESPONDER) if rng.random() < 0.5 else keys.index(ADD_STORED)
        keys[at - 1], keys[at] = keys[at], keys[at - 1]
        return keys
    if kind == "early_end":
        return keys[: rng.randrange(2, _group_bounds(keys, ADD_STORED)[1])]
    at = rng.randrange(1, len(keys))
    return [*keys[:at], rng.choice(HDFS_ALERTS), *keys[at:]]


def valid_block(keys: list[str]) -> bool:
    """Whether ``keys`` is a normal HDFS-like block (the grammar of :func:`normal_block`)."""
    if keys[:4] == list(REPLICATE):
        return keys[4:] in ([], [REPLICATE_TAIL])
    if not keys or keys[0] != ALLOCATE:
        return False
    r = 0
    while 1 + r < len(keys) and keys[1 + r] == RECEIVING:
        r += 1
    pos, open_pairs, done = 1 + r, 0, 0
    while pos < len(keys) and keys[pos] in (RESPONDER, RECEIVED):
        open_pairs += 1 if keys[pos] == RESPONDER else -1
        done += keys[pos] == RECEIVED
        if open_pairs < 0:
            return False
        pos += 1
    if not 1 <= r <= 3 or open_pairs or done != r or keys[pos:pos + r] != [ADD_STORED] * r:
        return False
    return keys[pos + r:] in ([], [VERIFY], [DELETE], [VERIFY, DELETE])


# --- BGL-like windows -------------------------------------------------------------------------

#: kind → steps; a step ``(key, most)`` may repeat 1 … ``most`` times.
BGL_KINDS: dict[str, tuple[tuple[str, int], ...]] = {
    "job": (("E1", 1), ("E2", 1), ("E3", 1), ("E4", 3), ("E5", 1), ("E6", 1)),
    "boot": (("E7", 1), ("E8", 1), ("E9", 1), ("E10", 1), ("E11", 1)),
    "io": (("E12", 1), ("E13", 1), ("E14", 3), ("E15", 1), ("E16", 1)),
    "health": (("E17", 1), ("E18", 2), ("E19", 1), ("E20", 1)),
    "net": (("E21", 1), ("E22", 1), ("E23", 1), ("E24", 1), ("E25", 1), ("E26", 1)),
}
BGL_ALERTS: tuple[str, ...] = ("E40", "E41", "E42", "E43")
BGL_ANOMALIES: dict[str, float] = {"swap": 0.35, "repeat": 0.25, "skip": 0.15, "alert": 0.25}


def workflow(rng: random.Random, kind: str) -> list[str]:
    """One normal run of a BGL-like workflow kind."""
    return [key for key, most in BGL_KINDS[kind] for _ in range(rng.randint(1, most))]


def break_workflow(rng: random.Random, keys: list[str], kind: str) -> list[str]:
    """A run broken in the way ``kind`` names."""
    keys = list(keys)
    if kind == "swap":
        spots = [i for i in range(1, len(keys)) if keys[i] != keys[i - 1]]
        at = rng.choice(spots)
        keys[at - 1], keys[at] = keys[at], keys[at - 1]
    elif kind == "repeat":
        at = rng.randrange(len(keys))
        keys.insert(at, keys[at])
    elif kind == "skip":
        at = rng.randrange(1, len(keys))
        del keys[at]
    else:
        keys.insert(rng.randrange(1, len(keys)), rng.choice(BGL_ALERTS))
    return keys


#: The workflow pairs a window can hold (the first kind starts the window).
BGL_PAIRS: tuple[tuple[str, str], ...] = (("job", "io"), ("job", "health"), ("boot", "net"),
                                          ("io", "health"), ("net", "job"), ("health", "boot"))


def interleave(rng: random.Random, runs: list[list[str]]) -> list[str]:
    """A random interleaving (a fair coin between the runs) that keeps the order inside each."""
    runs = [list(r) for r in runs]
    out: list[str] = [runs[0].pop(0)]
    while any(runs):
        run = rng.choice([r for r in runs if r])
        out.append(run.pop(0))
    return out


def bgl_window(rng: random.Random, anomaly: str | None) -> list[str]:
    """A BGL-like window: a pair of workflows interleaved, one of them broken if asked."""
    kinds = rng.choice(BGL_PAIRS)
    runs = [workflow(rng, kind) for kind in kinds]
    if anomaly is not None:
        broken = rng.randrange(2)
        runs[broken] = break_workflow(rng, runs[broken], anomaly)
    return interleave(rng, runs)


def valid_window(keys: list[str]) -> bool:
    """Whether every workflow in the window follows its kind's steps (and no key is foreign)."""
    owner = {key: kind for kind, steps in BGL_KINDS.items() for key, _ in steps}
    if any(k not in owner for k in keys):
        return False
    for kind in {owner[k] for k in keys}:
        run = [k for k in keys if owner[k] == kind]
        pos = 0
        for key, most in BGL_KINDS[kind]:
            count = 0
            while pos < len(run) and run[pos] == key:
                pos, count = pos + 1, count + 1
            if not 1 <= count <= most:
                return False
        if pos != len(run):
            return False
    return True


# --- datasets ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class DatasetSpec:
    """One synthetic dataset of the ablation.

    Attributes:
        name: Folder and table name.
        data_source: ``data_source`` of the sequence build (``hdfs``: 2-key prompts).
        window: How ``sequences`` cuts the structured log (it recovers the generated sequences).
        sequences: Sequences generated.
        anomaly_rate: Share of abnormal sequences.
        n_train: Normal sequences drawn for train + validation (LogGPT protocol).
        k: The top-K reported in the table (the sweep covers others): the grammar's usual
            branching (how many keys a normal sequence may continue with) plus one.
        pretrain_epochs: Pretraining epochs (the interleaved windows need more).
    """

    name: str
    data_source: str
    window: WindowSpec
    sequences: int
    anomaly_rate: float
    n_train: int
    k: int
    pretrain_epochs: int


DATASETS: tuple[DatasetSpec, ...] = (
    DatasetSpec("hdfs_like", "hdfs", WindowSpec(kind="block", size=0, step=0, min_events=1),
                1600, 0.2, 600, 3, 8),
    DatasetSpec("bgl_like", "bgl", WindowSpec(kind="time", size=60.0, step=60.0, min_events=2,
                                              grid="half_open"), 1600, 0.2, 600, 4, 16),
)

GENERATORS: dict[str, tuple[Callable[..., list[str]], Callable[[list[str]], bool],
                            dict[str, float]]] = {
    "hdfs_like": (lambda rng, a: normal_block(rng) if a is None else abnormal_block(rng, a),
                  valid_block, HDFS_ANOMALIES),
    "bgl_like": (bgl_window, valid_window, BGL_ANOMALIES),
}


def generate(spec: DatasetSpec, seed: int) -> list[tuple[list[str], str | None]]:
    """``(keys, anomaly type or None)`` per sequence; anomalies are redrawn until they break
    the grammar, so every label is right."""
    make, valid, mix = GENERATORS[spec.name]
    rng = random.Random(seed)
    out = []
    for _ in range(spec.sequences):
        anomaly = rng.choices(list(mix), weights=list(mix.values()))[0] if (
            rng.random() < spec.anomaly_rate) else None
        keys = make(rng, anomaly)
        while anomaly is not None and valid(keys):
            keys = make(rng, anomaly)
        if anomaly is None and not valid(keys):
            raise AssertionError(f"generator bug: a normal sequence breaks the grammar: {keys}")
        out.append((keys, anomaly))
    return out


def structured_frame(spec: DatasetSpec, sequences: list[tuple[list[str], str | None]]
                     ) -> tuple[pd.DataFrame, dict[str, str]]:
    """A structured log whose windows are exactly ``sequences``, and ``sequence_id → type``.

    Blocks get ``block_ids = [blk_<i>]``; time windows get sequence ``i`` inside
    ``[0.5 + 60 i, 60.5 + 60 i)``, the ``i``-th cell of the tumbling grid (``time-<i>``).
    """
    rows, types = [], {}
    for i, (keys, anomaly) in enumerate(sequences):
        sid = f"blk_{i}" if spec.window.kind == "block" else f"time-{i}"
        types[sid] = anomaly or NORMAL
        for j, key in enumerate(keys):
            rows.append({"timestamp": 60.0 * i + 0.5 + 0.1 * j, "event_id": key,
                         "label": NORMAL if anomaly is None else ABNORMAL,
                         "block_ids": [sid]})
    frame = pd.DataFrame(rows)
    frame.insert(0, "line_no", np.arange(1, len(frame) + 1))
    if spec.window.kind != "block":
        frame = frame.drop(columns="block_ids")
    return frame, types


def build_dataset(spec: DatasetSpec, out: Path) -> dict[str, str]:
    """Write the sequence folder of ``spec`` to ``out``; return ``sequence_id → type``."""
    sequences = generate(spec, seed=0)
    frame, types = structured_frame(spec, sequences)
    config = SequenceConfig(data_source=spec.data_source, window=spec.window, protocol="loggpt",
                            context=64, n_train=spec.n_train, seed=0)
    build_sequence_datasets(frame, out, config, overwrite=True)
    test = pd.read_parquet(out / "test.parquet")
    by_id = {f"blk_{i}" if spec.window.kind == "block" else f"time-{i}": keys
             for i, (keys, _) in enumerate(sequences)}
    if any(list(k) != by_id[s] for s, k in zip(test["sequence_id"], test["keys"], strict=True)):
        raise AssertionError("the sequence build did not recover the generated sequences")
    return types


# --- one dataset × seed -----------------------------------------------------------------------

@dataclass(frozen=True)
class Settings:
    """Training settings shared by every run (``--quick`` shrinks them).

    ``pretrain_epochs`` 0 means each dataset's own (:attr:`DatasetSpec.pretrain_epochs`).
    """

    arch: str = "loggpt"
    pretrain_epochs: int = 0
    pretrain_lr: float = 1e-3
    rl_steps: int = 100
    rl_batch: int = 32
    rl_lr: float = 5e-5
    ce_coef: float = 0.1
    kl_coef: float = 0.05
    eval_every: int = 10
    threads: int = 1


def rl_config(variant: str, settings: Settings, k: int, seed: int) -> Any:
    """The :class:`RLConfig` of an RL variant."""
    from verl_recipes.local.keyseq.rl import RLConfig

    base = RLConfig(steps=settings.rl_steps, batch_size=settings.rl_batch, lr=settings.rl_lr,
                    kl_coef=settings.kl_coef, eval_every=settings.eval_every, k=k, seed=seed,
                    device="cpu", threads=settings.threads)
    return {"loggpt_reinforce": replace(base, algorithm="reinforce", reward="loggpt", ce_coef=0.0),
            "logneo_ppo": replace(base, algorithm="ppo", reward="logneo", ce_coef=0.0),
            "logneo_ppo_ce": replace(base, algorithm="ppo", reward="logneo",
                                     ce_coef=settings.ce_coef),
            "topk_margin": replace(base, algorithm="topk_margin", reward="loggpt",
                                   ce_coef=0.0)}[variant]


def score(model: Path, data: Path, out: Path, k: int, types: dict[str, str]) -> dict[str, Any]:
    """Detect on the test split: the sweep, P/R/F1 at ``k`` and recall per anomaly type."""
    from validation.keyseq_detect import detect

    result = detect(model, data / "test.parquet", out, k=k, sweep=SWEEP, progress=False)
    scores = pd.read_parquet(out / "scores.parquet")
    scores["type"] = scores["sequence_id"].map(types)
    per_type = {kind: float((group["pred"] == ABNORMAL).mean())
                for kind, group in scores[scores["label"] == ABNORMAL].groupby("type")}
    overall = result["session"]["overall"]
    return {"precision": overall["precision"], "recall": overall["recall"], "f1": overall["f1"],
            "per_type_recall": per_type, "sweep": result["keyseq"]["sweep"]}


def training_summary(run: Path) -> dict[str, float]:
    """Reward of the first and last tenth of the steps, and the final KL and CE (means)."""
    from verl_recipes.local.keyseq.rl import read_run_metrics

    rows = read_run_metrics(run)[1:]
    tenth = max(1, len(rows) // 10)

    def mean(key: str, part: list[dict[str, Any]]) -> float:
        return float(np.mean([r[key] for r in part]))

    return {"reward_first": mean("reward_mean", rows[:tenth]),
            "reward_last": mean("reward_mean", rows[-tenth:]),
            "kl_last": mean("kl", rows[-tenth:]), "ce_first": mean("ce", rows[:tenth]),
            "ce_last": mean("ce", rows[-tenth:])}


def recall_at_precision(sweep: list[dict[str, Any]], precision: float | None) -> float | None:
    """The best recall over the sweep among the K whose precision is at least ``precision``.

    >>> recall_at_precision([{"precision": 0.9, "recall": 0.5}, {"precision": 0.7, "recall": 0.8}],
    ...                     0.8)
    0.5
    """
    if precision is None:
        return None
    kept = [row["recall"] for row in sweep if (row["precision"] or 0.0) >= precision - 1e-9]
    return max(kept) if kept else 0.0


def run_one(spec: DatasetSpec, seed: int, data: Path, out: Path, settings: Settings,
            types: dict[str, str]) -> dict[str, Any]:
    """Pretrain, fine-tune three ways and score all four models for one dataset and seed."""
    import torch

    from verl_recipes.local.keyseq.pretrain import PretrainConfig, pretrain
    from verl_recipes.local.keyseq.rl import train

    torch.set_num_threads(settings.threads)
    started = time.perf_counter()
    base = out / "pretrain"
    pretrain(data, base, PretrainConfig(
        arch=settings.arch, epochs=settings.pretrain_epochs or spec.pretrain_epochs,
        lr=settings.pretrain_lr,
        batch_size=16, context=64, seed=seed, device="cpu", schedule="linear", warmup_steps=20,
        threads=settings.threads), progress=False)
    results = {"pretrain": {"best": score(base, data, out / "detect_pretrain", spec.k, types)}}
    seconds = {"pretrain": time.perf_counter() - started}
    for variant in VARIANTS[1:]:
        begun = time.perf_counter()
        summary = train(data, base, out / variant, rl_config(variant, settings, spec.k, seed),
                        overwrite=True, progress=False)
        results[variant] = {
            checkpoint: score(out / variant / checkpoint, data,
                              out / f"detect_{variant}_{checkpoint}", spec.k, types)
            for checkpoint in ("best", "last")}
        results[variant]["best_step"] = summary["best"]["step"]
        results[variant]["training"] = training_summary(out / variant)
        seconds[variant] = time.perf_counter() - begun
    return {"dataset": spec.name, "seed": seed, "results": results, "seconds": seconds}


# --- report -----------------------------------------------------------------------------------

def _mean_sd(values: list[float | None]) -> str:
    """``mean ± sd`` of the defined values (``n/a`` when none)."""
    kept = [v for v in values if v is not None]
    if not kept:
        return "n/a"
    return f"{np.mean(kept):.3f} ± {np.std(kept):.3f}"


def table(runs: list[dict[str, Any]], checkpoint: str) -> str:
    """The markdown table of one checkpoint kind (``best``; ``last`` for the RL variants)."""
    lines = []
    for spec in DATASETS:
        mine = [r for r in runs if r["dataset"] == spec.name]
        if not mine:
            continue
        kinds = list(GENERATORS[spec.name][2])
        lines += [f"**{spec.name}** (K = {spec.k}, {len(mine)} seeds; mean ± sd)", "",
                  "| variant | precision | recall | F1 | recall at P ≥ pretrain's | " + " | ".join(
                      f"recall {k}" for k in kinds) + " |",
                  "|---" * (5 + len(kinds)) + "|"]
        floors = [r["results"]["pretrain"]["best"]["precision"] for r in mine]
        for variant in VARIANTS:
            picked = [r["results"][variant].get(checkpoint) or r["results"][variant]["best"]
                      for r in mine]
            cells = [_mean_sd([p[m] for p in picked]) for m in ("precision", "recall", "f1")]
            cells.append(_mean_sd([recall_at_precision(p["sweep"], floor)
                                   for p, floor in zip(picked, floors, strict=True)]))
            cells += [_mean_sd([p["per_type_recall"].get(k) for p in picked]) for k in kinds]
            lines.append(f"| {variant} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def training_table(runs: list[dict[str, Any]]) -> str:
    """Reward (first → last tenth of the steps), final KL and CE → final CE per RL variant."""
    lines = ["| dataset | variant | reward first → last | KL last | gold CE first → last | "
             "best step |", "|---|---|---|---|---|---|"]
    for spec in DATASETS:
        mine = [r for r in runs if r["dataset"] == spec.name]
        for variant in VARIANTS[1:] if mine else ():
            t = [r["results"][variant]["training"] for r in mine]
            steps = [r["results"][variant]["best_step"] for r in mine]
            lines.append(
                f"| {spec.name} | {variant} | {np.mean([x['reward_first'] for x in t]):.3f} → "
                f"{np.mean([x['reward_last'] for x in t]):.3f} | "
                f"{np.mean([x['kl_last'] for x in t]):.3f} | "
                f"{np.mean([x['ce_first'] for x in t]):.3f} → "
                f"{np.mean([x['ce_last'] for x in t]):.3f} | {', '.join(map(str, steps))} |")
    return "\n".join(lines)


def plot(runs: list[dict[str, Any]], path: Path) -> None:
    """F1 against K (mean over seeds): one column per dataset, ``best/`` above, ``last/`` below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(DATASETS), figsize=(5.5 * len(DATASETS), 7.5), squeeze=False)
    for row, checkpoint in enumerate(("best", "last")):
        for ax, spec in zip(axes[row], DATASETS, strict=True):
            mine = [r for r in runs if r["dataset"] == spec.name]
            for variant in VARIANTS:
                sweeps = [(r["results"][variant].get(checkpoint) or r["results"][variant]["best"])[
                    "sweep"] for r in mine]
                if not sweeps:
                    continue
                ks = [entry["k"] for entry in sweeps[0]]
                f1 = np.mean([[entry["f1"] or 0.0 for entry in s] for s in sweeps], axis=0)
                ax.plot(ks, f1, marker="o", label=variant)
            ax.axvline(spec.k, color="grey", linestyle="--")
            ax.set(xlabel="K (top-K)", ylabel="F1 (mean over seeds)", ylim=(0, 1.02),
                   title=f"{spec.name}, {checkpoint}/ checkpoints")
            ax.set_xscale("log")
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- main -------------------------------------------------------------------------------------

QUICK = Settings(pretrain_epochs=1, rl_steps=3, rl_batch=4, eval_every=1)


def _job(args: tuple) -> dict[str, Any]:
    """Worker entry point (process pool)."""
    from transformers.utils import logging as hf_logging

    spec, seed, data, out, settings, types = args
    logging.basicConfig(level=logging.WARNING)
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    return run_one(spec, seed, data, out, settings, types)


def run(out: Path, seeds: list[int], settings: Settings, workers: int, quick: bool,
        overwrite: bool) -> dict[str, Any]:
    """Build the data, run every dataset × seed (``workers`` processes) and write the report."""
    started = time.perf_counter()
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise LogDataError(f"{out} is not empty; pass --overwrite")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    specs = [replace(s, sequences=160, n_train=60) if quick else s for s in DATASETS]
    jobs = []
    for spec in specs:
        types = build_dataset(spec, out / "data" / spec.name)
        jobs += [(spec, seed, out / "data" / spec.name, out / "runs" / spec.name / f"seed{seed}",
                  settings, types) for seed in seeds]
    if workers > 1:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            runs = list(pool.map(_job, jobs))
    else:
        runs = [_job(job) for job in jobs]
    wall = time.perf_counter() - started
    text = (f"## LogNEO ablation (synthetic keys, {len(seeds)} seeds, {wall / 60:.1f} min wall "
            f"on {os.cpu_count()} CPU cores, {workers} workers)\n\n### best/ checkpoints "
            f"(selected by normal-key recall on validation)\n\n{table(runs, 'best')}\n"
            f"### last/ checkpoints\n\n{table(runs, 'last')}\n"
            f"### RL training (means over seeds)\n\n{training_table(runs)}\n")
    (out / "table.md").write_text(text + "\n", encoding="utf-8")
    plot(runs, out / "f1_vs_k.png")
    report = {"settings": asdict(settings), "seeds": seeds, "workers": workers,
              "wall_seconds": wall, "datasets": [asdict(s) for s in specs], "runs": runs}
    (out / "results.json").write_text(json.dumps(report, indent=1, default=str), encoding="utf-8")
    print(text)
    print(f"wall time {wall:.0f} s; wrote {out}/table.md, f1_vs_k.png, results.json")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = new_parser("python scripts/logneo_ablation.py", __doc__.splitlines()[0])
    add_out_flag(parser, "report folder", required=False,
                 default=Path("outputs/logneo_ablation"))
    add_flag(parser, "--seeds", default="0,1,2", help="comma-separated seeds")
    add_flag(parser, "--workers", type=int, default=2, metavar="N",
             help="parallel processes (one torch thread each)")
    d = Settings()
    add_flag(parser, "--rl-steps", type=int, default=d.rl_steps, metavar="N", help="RL steps")
    add_flag(parser, "--rl-lr", type=float, default=d.rl_lr, help="RL actor learning rate")
    add_flag(parser, "--pretrain-epochs", type=int, default=d.pretrain_epochs, metavar="N",
             help="pretraining epochs (0: each dataset's own, 8 for hdfs_like, 16 for bgl_like)")
    add_flag(parser, "--ce-coef", type=float, default=d.ce_coef, metavar="MU",
             help="mu of the logneo_ppo_ce variant")
    add_flag(parser, "--quick", action="store_true", help="smoke run (tiny data, 2 RL steps)")
    add_overwrite_flag(parser, "replace the report folder")
    add_progress_flag(parser, "accepted for the flag vocabulary (the runs show no bars)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    settings = QUICK if args.quick else replace(
        d, rl_steps=args.rl_steps, rl_lr=args.rl_lr, pretrain_epochs=args.pretrain_epochs,
        ce_coef=args.ce_coef)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]

    def body() -> int:
        run(args.out, seeds, settings, args.workers, args.quick, args.overwrite)
        return 0

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
