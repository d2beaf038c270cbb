#!/usr/bin/env python
r"""Generate answers for a VeRL-format test parquet with the hf or vLLM backend.

Usage::

    python validation/model_predict.py --model outputs/export/grpo --data datasets/bgl/test.parquet \
        --out outputs/pred/predictions.parquet --backend vllm --tp 2
    python validation/model_predict.py -m 0 -t synthetic -c parquet --backend hf --out pred.parquet

Prompts are the parquet's chat messages rendered to token ids by the model's own chat template,
exactly as VeRL's rollout does (``apply_chat_template(messages, tokenize=True,
add_generation_prompt=True, **data.apply_chat_template_kwargs)``); responses are decoded with
``skip_special_tokens=True`` as VeRL's reward managers decode them. Results are written in chunks
to ``<out>.parts/``; a rerun with the same settings skips finished chunks, and the parts are merged
atomically into ``--out`` at the end. ``<out>.parts/`` (with its ``manifest.json`` of the run's
settings) is created only once the backend has loaded, so a run that fails to start leaves nothing
behind, and a parts folder without a single part file never blocks a rerun. The output's parquet
metadata records the model, the sampling parameters and the data file's sha256. Before any model
loads, the data file is checked against the sha256 the ``meta.json`` beside it lists
(:func:`logdata.staging.verify_file`): a test set changed after ``build``/``prepare`` wrote it is
refused in one line.
"""

from __future__ import annotations

if __package__ in (None, ""):  # run by path: make the repository root importable
    import sys
    from pathlib import Path as _Path

    sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))

import argparse
import dataclasses
import hashlib
import importlib.util
import json
import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from logdata.cliargs import (
    add_flag,
    add_input_flag,
    add_out_flag,
    add_overwrite_flag,
    add_seed_flag,
    new_parser,
)
from logdata.errors import run_cli
from logdata.io import (
    atomic_write_parquet,
    atomic_write_text,
    read_parquet,
    require_dir,
    require_file,
    sha256_file,
)
from logdata.staging import verify_file
from reward.labels import LABELS
from reward.parsing import parse_answer
from reward.perplexity import resolve_device
from validation.model_evaluate import RUN_METADATA_KEY, read_run_metadata

logger = logging.getLogger("validation.model_predict")

MANIFEST = "manifest.json"
VLLM_MISSING = ("--backend vllm needs vLLM, which is not installed: pip install vllm (a CUDA "
                "machine), or use --backend hf (transformers, CPU or one GPU)")
REGISTRY = Path(__file__).resolve().with_name("model_testset_list.yaml")
OUTPUT_COLUMNS: tuple[str, ...] = (
    "index", "sample", "data_source", "log", "label", "response", "pred",
    "prompt_tokens", "response_tokens", "reference_rationale",
)


class PredictError(ValueError):
    """Bad input or settings for prediction (one-line message for the CLI)."""


@dataclasses.dataclass(frozen=True)
class Sampling:
    """Sampling parameters (the same names as VeRL's rollout config where they exist)."""

    temperature: float = 0.1
    top_p: float = 0.7
    max_tokens: int = 1024
    n: int = 1
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class Generation:
    """One generated sample: its text and the number of generated tokens."""

    text: str
    tokens: int


class Backend(Protocol):
    """A generator of responses from prompt token ids."""

    name: str

    def generate(
        self, prompts: Sequence[list[int]], sampling: Sampling, first_index: int
    ) -> list[list[Generation]]:
        """Return ``sampling.n`` generations per prompt; ``first_index`` seeds reproducibly."""
        ...


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


def _messages(raw: Any) -> list[dict[str, str]]:
    """Turn a parquet ``prompt`` cell (array of structs) into plain chat messages."""
    return [{"role": str(m["role"]), "content": str(m["content"])} for m in list(raw)]


def swap_system_prompt(messages: list[dict[str, str]], system: str | None) -> list[dict[str, str]]:
    """Replace (or insert) the system message; ``None`` keeps the messages unchanged.

    >>> swap_system_prompt([{"role": "user", "content": "x"}], "S")[0]
    {'role': 'system', 'content': 'S'}
    """
    if system is None:
        return messages
    rest = [m for m in messages if m["role"] != "system"]
    return [{"role": "system", "content": system}, *rest]


def load_requests(
    data: str | Path, limit: int | None = None, system_prompt: str | None = None
) -> pd.DataFrame:
    """Read a VeRL-format parquet into prediction requests.

    Args:
        data: Parquet with ``data_source``, ``prompt``, ``reward_model`` and ``extra_info``.
        limit: Keep only the first ``limit`` rows.
        system_prompt: Replace the system message with this text (``None`` keeps the parquet's).

    Returns:
        Columns ``index`` (row id), ``data_source``, ``messages``, ``log``, ``label``,
        ``reference_rationale``.

    Raises:
        PredictError: On an unreadable file, a missing column or a gold label outside
            ``normal``/``abnormal``.
    """
    frame = read_parquet(data, PredictError)
    missing = [c for c in ("data_source", "prompt", "reward_model", "extra_info")
               if c not in frame.columns]
    if missing:
        raise PredictError(f"{data}: not a VeRL parquet, missing column(s) {missing}")
    if limit is not None:
        frame = frame.iloc[:limit]
    infos = [dict(x) if x is not None else {} for x in frame["extra_info"]]
    labels = [dict(x).get("ground_truth") for x in frame["reward_model"]]
    bad = sorted({str(x) for x in labels if x not in LABELS})
    if bad:
        raise PredictError(f"{data}: ground_truth must be one of {LABELS}, found {bad[:5]}")
    return pd.DataFrame({
        "index": range(len(frame)),
        "data_source": [str(s) for s in frame["data_source"]],
        "messages": [swap_system_prompt(_messages(p), system_prompt) for p in frame["prompt"]],
        "log": [str(i.get("log", "")) for i in infos],
        "label": labels,
        "reference_rationale": [i.get("reference_rationale") for i in infos],
    })


def render_prompt_ids(
    tokenizer: Any, messages: list[dict[str, str]], chat_template_kwargs: dict[str, Any] | None = None
) -> list[int]:
    """Render chat messages to prompt token ids exactly as VeRL's rollout does.

    VeRL 0.9.1 (``ContinuousTokenBuilder.build_initial_tokens``) calls
    ``apply_chat_template(messages, tokenize=True, add_generation_prompt=True, tools=None,
    **apply_chat_template_kwargs)`` and feeds the ids to the engine; no text is re-tokenised, so
    no second BOS appears.

    Args:
        tokenizer: A Hugging Face tokenizer with a chat template.
        messages: ``[{role, content}, …]``.
        chat_template_kwargs: VeRL's ``data.apply_chat_template_kwargs`` (e.g. ``enable_thinking``).

    Returns:
        The prompt token ids.
    """
    out = tokenizer.apply_chat_template(
        messages, tokenize=True, add_generation_prompt=True, **(chat_template_kwargs or {})
    )
    if hasattr(out, "keys") and "input_ids" in out:
        out = out["input_ids"]
    if hasattr(out, "tolist"):
        out = out.tolist()
    if out and isinstance(out[0], list | tuple):
        out = out[0]
    return [int(t) for t in out]


# --------------------------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------------------------


class HFBackend:
    """Batched ``transformers`` generation with left padding; runs on CPU or one GPU."""

    name = "hf"

    def __init__(self, model_path: str, device: str = "auto", dtype: str = "auto",
                 batch_size: int = 8) -> None:
        """Load the model and tokenizer (``trust_remote_code`` off)."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = resolve_device(device)
        if dtype == "auto":
            dtype = "bfloat16" if self.device.startswith("cuda") else "float32"
        self.tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=False)
        self.model = AutoModelForCausalLM.from_pretrained(
            model_path, dtype=getattr(torch, dtype), trust_remote_code=False
        ).to(self.device).eval()
        gen = self.model.generation_config
        eos = gen.eos_token_id if gen.eos_token_id is not None else self.tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list | tuple) else [eos]) - {None}
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else min(self.eos_ids, default=0)
        self.batch_size = batch_size

    def _batch(self, prompts: Sequence[list[int]]) -> tuple[Any, Any]:
        """Left-pad prompt ids into ``input_ids`` and ``attention_mask`` tensors."""
        import torch

        width = max(len(p) for p in prompts)
        ids = [[self.pad_id] * (width - len(p)) + list(p) for p in prompts]
        mask = [[0] * (width - len(p)) + [1] * len(p) for p in prompts]
        return (torch.tensor(ids, device=self.device), torch.tensor(mask, device=self.device))

    def _decode(self, row: list[int]) -> Generation:
        """Cut a generated row at its first EOS (kept in the count) and decode it."""
        cut = next((i + 1 for i, t in enumerate(row) if t in self.eos_ids), len(row))
        kept = [t for t in row[:cut] if t != self.pad_id or t in self.eos_ids]
        return Generation(self.tokenizer.decode(kept, skip_special_tokens=True), len(kept))

    def generate(
        self, prompts: Sequence[list[int]], sampling: Sampling, first_index: int
    ) -> list[list[Generation]]:
        """Generate ``sampling.n`` samples per prompt, seeded by ``seed`` and ``first_index``."""
        import torch

        results: list[list[Generation]] = []
        for start in range(0, len(prompts), self.batch_size):
            batch = prompts[start:start + self.batch_size]
            torch.manual_seed(sampling.seed * 1_000_003 + first_index + start)
            input_ids, mask = self._batch(batch)
            sample = sampling.temperature > 0
            kwargs = {"temperature": sampling.temperature, "top_p": sampling.top_p} if sample else {}
            with torch.no_grad():
                out = self.model.generate(
                    input_ids=input_ids, attention_mask=mask, do_sample=sample,
                    max_new_tokens=sampling.max_tokens, num_return_sequences=sampling.n,
                    pad_token_id=self.pad_id, eos_token_id=sorted(self.eos_ids), **kwargs,
                )
            rows = out[:, input_ids.shape[1]:].tolist()
            for i in range(len(batch)):
                results.append([self._decode(r) for r in rows[i * sampling.n:(i + 1) * sampling.n]])
        return results


def _vllm_sampling(sampling: Sampling, seed: int) -> Any:
    """Build vLLM ``SamplingParams`` for one request (per-request seed → order-independent)."""
    from vllm import SamplingParams

    return SamplingParams(n=sampling.n, temperature=sampling.temperature, top_p=sampling.top_p,
                          max_tokens=sampling.max_tokens, seed=seed, skip_special_tokens=True)


def _vllm_run(llm: Any, prompts: Sequence[list[int]], sampling: Sampling,
              first_index: int) -> list[list[Generation]]:
    """Generate with a vLLM ``LLM`` on token-id prompts, one seeded request per row."""
    requests = [{"prompt_token_ids": list(p)} for p in prompts]
    params = [_vllm_sampling(sampling, sampling.seed * 1_000_003 + first_index + i)
              for i in range(len(prompts))]
    outputs = llm.generate(requests, params, use_tqdm=False)
    return [[Generation(o.text, len(o.token_ids)) for o in out.outputs] for out in outputs]


def _vllm_llm(model_path: str, tp: int, seed: int, engine_kwargs: dict[str, Any]) -> Any:
    """Build a vLLM engine (``trust_remote_code`` off)."""
    from vllm import LLM

    return LLM(model=model_path, tensor_parallel_size=tp, seed=seed, trust_remote_code=False,
               **engine_kwargs)


class VLLMBackend:
    """vLLM generation: tensor parallel inside one engine, data parallel over Ray actors.

    With ``dp > 1`` the backend starts ``dp`` Ray actors (each holding one engine over ``tp``
    GPUs, anywhere in the Ray cluster: ``ray start`` on every node, then run this on the head)
    and splits every chunk into ``dp`` contiguous shards. Seeds are per row, so the output does
    not depend on ``dp``.
    """

    name = "vllm"

    def __init__(self, model_path: str, tp: int = 1, dp: int = 1, seed: int = 0,
                 engine_kwargs: dict[str, Any] | None = None) -> None:
        """Start the engine (or ``dp`` Ray actors holding one engine each)."""
        engine_kwargs = dict(engine_kwargs or {})
        self.dp = dp
        if dp <= 1:
            self.llm = _vllm_llm(model_path, tp, seed, engine_kwargs)
            self.actors: list[Any] = []
            return
        import ray

        if not ray.is_initialized():
            ray.init(address=os.environ.get("RAY_ADDRESS"), ignore_reinit_error=True)

        @ray.remote(num_gpus=tp)
        class _Engine:
            def __init__(self) -> None:
                self.llm = _vllm_llm(model_path, tp, seed, engine_kwargs)

            def generate(self, prompts: list[list[int]], sampling: Sampling,
                         first_index: int) -> list[list[Generation]]:
                return _vllm_run(self.llm, prompts, sampling, first_index)

        self.actors = [_Engine.remote() for _ in range(dp)]

    def generate(
        self, prompts: Sequence[list[int]], sampling: Sampling, first_index: int
    ) -> list[list[Generation]]:
        """Generate ``sampling.n`` samples per prompt (sharded over actors when ``dp > 1``)."""
        if not self.actors:
            return _vllm_run(self.llm, prompts, sampling, first_index)
        import ray

        size = math.ceil(len(prompts) / len(self.actors))
        futures = [a.generate.remote(list(prompts[k * size:(k + 1) * size]), sampling,
                                     first_index + k * size)
                   for k, a in enumerate(self.actors) if k * size < len(prompts)]
        return [row for part in ray.get(futures) for row in part]


# --------------------------------------------------------------------------------------------
# Chunked, resumable run
# --------------------------------------------------------------------------------------------


def _write_parquet_atomic(frame: pd.DataFrame, path: Path, metadata: dict[str, Any]) -> None:
    """Write ``frame`` to ``path`` atomically, with the run metadata in the schema metadata."""
    atomic_write_parquet(frame, path,
                         {RUN_METADATA_KEY.decode(): json.dumps(metadata, sort_keys=True)})


def chunk_ranges(n_rows: int, chunk_size: int) -> list[tuple[int, int]]:
    """Row ranges ``[start, stop)`` of consecutive chunks.

    >>> chunk_ranges(5, 2)
    [(0, 2), (2, 4), (4, 5)]
    """
    return [(s, min(s + chunk_size, n_rows)) for s in range(0, n_rows, chunk_size)]


def part_path(parts: Path, chunk: int) -> Path:
    """Path of one chunk's part file."""
    return parts / f"part-{chunk:05d}.parquet"


def finished_chunk(path: Path, start: int, stop: int, n: int) -> pd.DataFrame | None:
    """Return a part file's rows when it exists and holds exactly rows ``start..stop`` × ``n``."""
    if not path.is_file():
        return None
    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        logger.warning("unreadable part %s (%s); regenerating it", path.name, exc)
        return None
    expected = sorted((i, s) for i in range(start, stop) for s in range(n))
    if sorted(zip(frame["index"], frame["sample"], strict=True)) != expected:
        logger.warning("part %s does not hold rows %d..%d; regenerating it", path.name, start, stop)
        return None
    return frame


def predict_chunk(
    backend: Backend, tokenizer: Any, requests: pd.DataFrame, sampling: Sampling,
    chat_template_kwargs: dict[str, Any] | None,
) -> pd.DataFrame:
    """Generate one chunk and return its output rows (one per sample)."""
    prompts = [render_prompt_ids(tokenizer, m, chat_template_kwargs) for m in requests["messages"]]
    generations = backend.generate(prompts, sampling, int(requests["index"].iloc[0]))
    rows = []
    for (_, req), prompt, samples in zip(requests.iterrows(), prompts, generations, strict=True):
        for k, gen in enumerate(samples):
            rows.append({
                "index": int(req["index"]), "sample": k, "data_source": req["data_source"],
                "log": req["log"], "label": req["label"], "response": gen.text,
                "pred": parse_answer(gen.text), "prompt_tokens": len(prompt),
                "response_tokens": gen.tokens, "reference_rationale": req["reference_rationale"],
            })
    return pd.DataFrame(rows, columns=list(OUTPUT_COLUMNS))


def _progress(total: int, initial: int) -> Any:
    """A tqdm bar over rows (rows/s is its rate; tokens/s goes in the postfix)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="row", desc="predict", dynamic_ncols=True)


def run_prediction(
    requests: pd.DataFrame,
    out: Path,
    backend_factory: Callable[[], tuple[Backend, Any]],
    sampling: Sampling,
    run_key: dict[str, Any],
    chunk_size: int = 64,
    chat_template_kwargs: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Predict every request in chunks, resuming from ``<out>.parts/``, and merge into ``out``.

    Args:
        requests: Frame from :func:`load_requests`.
        out: Final ``predictions.parquet`` path.
        backend_factory: Builds ``(backend, tokenizer)``; called only when work remains.
        sampling: Sampling parameters.
        run_key: Everything that makes two runs the same (model, data hash, sampling, prompts);
            a parts folder written under another key is refused unless ``overwrite``.
        chunk_size: Rows per part file.
        chat_template_kwargs: VeRL's ``data.apply_chat_template_kwargs``.
        overwrite: Discard a finished output or foreign parts instead of refusing.

    Returns:
        The run metadata written into the output (with ``generated_rows`` and ``reused_rows``).

    Raises:
        PredictError: When existing output or parts belong to a different run.
    """
    parts = out.with_name(out.name + ".parts")
    if out.exists() and not overwrite:
        previous = read_run_metadata(out)
        if previous.get("run_key") == run_key:
            logger.info("%s is already complete for these settings; nothing to do", out)
            return previous
        raise PredictError(f"{out} exists from another run; pass --overwrite to replace it")
    manifest = parts / MANIFEST
    if parts.exists():
        stored = json.loads(manifest.read_text()) if manifest.is_file() else None
        if stored != run_key:
            # Parts without a single part file hold no work (a run that failed before its first
            # chunk): they never block a rerun.
            if not overwrite and any(parts.glob("part-*.parquet")):
                raise PredictError(f"{parts} holds parts of another run; pass --overwrite")
            shutil.rmtree(parts)

    ranges = chunk_ranges(len(requests), chunk_size)
    done = {c: f for c, (a, b) in enumerate(ranges)
            if (f := finished_chunk(part_path(parts, c), a, b, sampling.n)) is not None}
    reused = sum(len(f) for f in done.values())
    logger.info("resume: %d of %d chunks already finished (%d rows reused)",
                len(done), len(ranges), reused)
    generated, tokens = 0, 0
    if len(done) < len(ranges):
        backend, tokenizer = backend_factory()
        # The manifest goes down only once the backend is up: a run that fails to start (no
        # vLLM, a folder that is no model) leaves nothing that refuses the corrected rerun.
        parts.mkdir(parents=True, exist_ok=True)
        atomic_write_text(manifest, json.dumps(run_key, indent=2, sort_keys=True))
        bar = _progress(len(requests), sum(b - a for c, (a, b) in enumerate(ranges) if c in done))
        started = time.perf_counter()
        for c, (a, b) in enumerate(ranges):
            if c in done:
                continue
            frame = predict_chunk(backend, tokenizer, requests.iloc[a:b], sampling,
                                  chat_template_kwargs)
            _write_parquet_atomic(frame, part_path(parts, c), {"run_key": run_key, "chunk": c})
            done[c] = frame
            generated += len(frame)
            tokens += int(frame["response_tokens"].sum())
            bar.set_postfix(tok_s=f"{tokens / max(time.perf_counter() - started, 1e-9):.1f}",
                            refresh=False)
            bar.update(b - a)
        bar.close()
    merged = pd.concat([done[c] for c in range(len(ranges))], ignore_index=True) if ranges \
        else pd.DataFrame(columns=list(OUTPUT_COLUMNS))
    metadata = {"run_key": run_key, "rows": len(merged), "generated_rows": generated,
                "reused_rows": reused, "response_tokens_generated": tokens,
                "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    _write_parquet_atomic(merged, out, metadata)
    shutil.rmtree(parts, ignore_errors=True)
    logger.info("wrote %s: %d rows (%d generated, %d reused)", out, len(merged), generated, reused)
    return metadata


# --------------------------------------------------------------------------------------------
# Registry (-m/-t/-c)
# --------------------------------------------------------------------------------------------


def load_registry(path: Path = REGISTRY) -> dict[str, list[dict[str, Any]]]:
    """Read ``model_testset_list.yaml`` (``models``, ``test_sets``, ``conversations``)."""
    import yaml

    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return {k: list(data.get(k) or []) for k in ("models", "test_sets", "conversations")}


def pick(entries: list[dict[str, Any]], key: str, what: str) -> dict[str, Any]:
    """Pick a registry entry by index (``0``) or ``name``.

    >>> pick([{"name": "a"}, {"name": "b"}], "1", "model")["name"]
    'b'

    Raises:
        PredictError: When no entry matches.
    """
    if key.isdigit() and int(key) < len(entries):
        return entries[int(key)]
    for entry in entries:
        if entry.get("name") == key:
            return entry
    names = ", ".join(f"{i}:{e.get('name')}" for i, e in enumerate(entries))
    raise PredictError(f"no {what} {key!r} in the registry (have {names})")


def _registry_path(value: str, registry: Path) -> str:
    """Resolve a registry path relative to the repository root (the registry's parent's parent)."""
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else registry.resolve().parents[1] / path)


def conversation_system_prompt(entry: dict[str, Any]) -> str | None:
    """System prompt of a conversation variant: ``None`` keeps the parquet's messages.

    An entry gives either ``system_prompt_text`` (literal) or ``system_prompt`` (a name in the data
    stage's prompt table ``logdata.templates.prompts``, imported only when needed).

    Raises:
        PredictError: When the named prompt does not exist.
    """
    if entry.get("system_prompt_text"):
        return str(entry["system_prompt_text"])
    name = entry.get("system_prompt")
    if not name:
        return None
    try:
        from logdata.templates import prompts
    except ImportError as exc:
        conversation = entry.get("name")
        raise PredictError(f"conversation {conversation!r} needs logdata.templates.prompts: {exc}") from exc
    table = getattr(prompts, "SYSTEM_PROMPTS", None)
    if isinstance(table, dict) and name in table:
        value = table[name]
        return str(value.get("system", value) if isinstance(value, dict) else value)
    getter = getattr(prompts, "get_system_prompt", None)
    if callable(getter):
        return str(getter(name))
    raise PredictError(f"system prompt {name!r} not found in logdata.templates.prompts")


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface."""
    p = new_parser(description=__doc__.split("\n\n")[0])
    add_flag(p, "--model", help="HF model folder (or -m from the registry; default: none)")
    add_input_flag(p, "VeRL test parquet (or -t from the registry; default: none)",
                   required=False, aliases=("--data",), dest="data")
    add_out_flag(p, "predictions.parquet to write")
    add_flag(p, "-m", "--model-id", help="registry model by index or name (default: none)")
    add_flag(p, "-t", "--testset-id", help="registry test set by index or name (default: none)")
    add_flag(p, "-c", "--conversation", default=None,
             help="registry conversation variant (default: the parquet's own messages)")
    add_flag(p, "--registry", type=Path, default=REGISTRY, metavar="PATH", help="registry yaml")
    add_flag(p, "--backend", choices=("vllm", "hf"), default="hf", help="generation backend")
    add_flag(p, "--tp", type=int, default=1, metavar="N", help="vLLM tensor-parallel size")
    add_flag(p, "--dp", type=int, default=1, metavar="N",
             help="vLLM data-parallel engines (Ray actors)")
    add_flag(p, "--temperature", type=float, default=0.1, help="sampling temperature")
    add_flag(p, "--top-p", type=float, default=0.7, help="nucleus sampling mass")
    add_flag(p, "--max-tokens", type=int, default=1024, metavar="N",
             help="response tokens per sample")
    add_flag(p, "--n", type=int, default=1, help="samples per prompt (one row each)")
    add_seed_flag(p, "sampling seed")
    add_flag(p, "--batch-size", type=int, default=8, metavar="N", help="hf batch size")
    add_flag(p, "--chunk-size", type=int, default=64, metavar="N", help="rows per part file")
    add_flag(p, "--limit", type=int, default=None, metavar="N",
             help="predict only the first N rows (default: all)")
    add_flag(p, "--device", default="auto", help="hf device: auto, cpu, cuda, cuda:1 …")
    add_flag(p, "--dtype", default="auto", help="hf dtype: auto, float32, bfloat16 …")
    add_flag(p, "--chat-template-kwargs", type=json.loads, default=None, metavar="JSON",
             help="JSON, as VeRL data.apply_chat_template_kwargs (default: none)")
    add_flag(p, "--gpu-memory-utilization", type=float, default=0.85, metavar="R",
             help="vLLM GPU memory share")
    add_flag(p, "--max-model-len", type=int, default=None, metavar="N",
             help="vLLM context length (default: the model's)")
    add_overwrite_flag(p, "replace output of another run")
    return p


def _check(args: argparse.Namespace) -> None:
    """Validate numeric arguments."""
    positive = {"--tp": args.tp, "--dp": args.dp, "--max-tokens": args.max_tokens,
                "--n": args.n, "--batch-size": args.batch_size, "--chunk-size": args.chunk_size}
    for flag, value in positive.items():
        if value < 1:
            raise PredictError(f"{flag} must be >= 1, got {value}")
    if args.temperature < 0 or not 0 < args.top_p <= 1:
        raise PredictError("--temperature must be >= 0 and --top-p in (0, 1]")
    if args.backend == "hf" and (args.tp > 1 or args.dp > 1):
        raise PredictError("--tp/--dp apply to the vllm backend only")


def resolve_inputs(args: argparse.Namespace) -> tuple[str, Path, str | None, str]:
    """Resolve model, data, system prompt and conversation name from flags and the registry."""
    registry = load_registry(args.registry) if (
        args.model_id or args.testset_id or args.conversation) else {}
    model = args.model or (_registry_path(pick(registry["models"], args.model_id, "model")["path"],
                                          args.registry) if args.model_id else None)
    data = args.data or (Path(_registry_path(
        pick(registry["test_sets"], args.testset_id, "test set")["data"], args.registry))
        if args.testset_id else None)
    if model is None or data is None:
        raise PredictError("give --model/-m and --input/-t")
    require_dir(model, "model folder", PredictError)
    if not (Path(model) / "config.json").is_file():
        raise PredictError(f"model folder {model} has no config.json: not a Hugging Face model "
                           "(export a training checkpoint first: bash model_export.sh CKPT OUT)")
    require_file(data, "data file", PredictError)
    verify_file(data, PredictError)
    conversation = args.conversation or "parquet"
    system = None
    if args.conversation:
        system = conversation_system_prompt(pick(registry["conversations"], args.conversation,
                                                 "conversation"))
    return str(model), data, system, conversation


def require_backend(backend: str) -> None:
    """Fail early, in one line saying what to do, when the backend's package is not installed.

    Raises:
        PredictError: For ``vllm`` without an importable ``vllm`` package.
    """
    if backend == "vllm" and importlib.util.find_spec("vllm") is None:
        raise PredictError(VLLM_MISSING)


def make_backend(args: argparse.Namespace, model: str) -> tuple[Backend, Any]:
    """Build the requested backend and return it with the model's tokenizer.

    Raises:
        PredictError: When vLLM cannot be imported (see :data:`VLLM_MISSING`).
    """
    if args.backend == "hf":
        backend = HFBackend(model, args.device, args.dtype, args.batch_size)
        return backend, backend.tokenizer
    from transformers import AutoTokenizer

    engine = {"gpu_memory_utilization": args.gpu_memory_utilization}
    if args.max_model_len:
        engine["max_model_len"] = args.max_model_len
    try:
        backend = VLLMBackend(model, args.tp, args.dp, args.seed, engine)
    except ImportError as exc:
        raise PredictError(f"{VLLM_MISSING} ({exc})") from exc
    return backend, AutoTokenizer.from_pretrained(model, trust_remote_code=False)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Execute the command and return the output metadata."""
    _check(args)
    require_backend(args.backend)
    model, data, system, conversation = resolve_inputs(args)
    sampling = Sampling(args.temperature, args.top_p, args.max_tokens, args.n, args.seed)
    requests = load_requests(data, args.limit, system)
    run_key = {
        "model": str(Path(model).resolve()), "data": str(data), "data_sha256": sha256_file(data),
        "backend": args.backend, "sampling": dataclasses.asdict(sampling),
        "conversation": conversation,
        "system_prompt_sha256": hashlib.sha256(system.encode()).hexdigest() if system else None,
        "chat_template_kwargs": args.chat_template_kwargs or {}, "limit": args.limit,
        "chunk_size": args.chunk_size,
        # hf sampling draws per batch, so the batch layout is part of what makes a run the same.
        "batch_size": args.batch_size if args.backend == "hf" else None,
        "tp": args.tp, "dp": args.dp,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    return run_prediction(requests, args.out, lambda: make_backend(args, model), sampling,
                          run_key, args.chunk_size, args.chat_template_kwargs, args.overwrite)


def iter_lines(metadata: dict[str, Any]) -> Iterator[str]:
    """Summary lines printed by the CLI."""
    yield json.dumps({k: metadata.get(k) for k in ("rows", "generated_rows", "reused_rows",
                                                   "response_tokens_generated")})


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run_cli(lambda: _report(run(args)), (PredictError, OSError))


def _report(metadata: dict[str, Any]) -> int:
    """Print the CLI's summary lines; return the exit status."""
    for line in iter_lines(metadata):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
