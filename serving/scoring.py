"""Next-key rank scoring for live sessions: PyTorch with a per-session KV cache, or ONNX Runtime.

A session's model input is the offline one (:mod:`validation.keyseq_detect`): ``<bos>`` followed
by the keys of its current chunk. Each scoring round asks, per session, for the rank of every
new key (and of ``<eos>`` when a session closes) given the keys before it; rank 0 is the model's
top prediction and a key is a miss at K when its rank is ``>= K``, as offline.

Backends (:data:`BACKENDS`):

* ``torch`` (default): a worker-local LRU of per-session KV caches. A session whose cache still
  covers its context (all of it but the last key) is advanced by feeding only that last key and the
  new ones; other sessions are pre-filled from ``<bos>``. Sessions of one round go through the
  model together: the cached keys/values are left-padded to one length and the new tokens
  right-padded, with an attention mask over both and explicit position ids, so one forward pass
  serves sessions of different lengths (micro-batching). The cache is an accelerator only: the
  authoritative session state (its keys) lives in Redis, so a worker that takes a session over
  simply pre-fills it.
* ``onnx``: the model exported to ONNX (``export_onnx``; dynamic batch and length, no cache)
  and run by ONNX Runtime. Each round recomputes the session's chunk from ``<bos>``; on GPUs pass
  ``CUDAExecutionProvider`` or ``TensorrtExecutionProvider`` as providers.

Both return the ranks the offline detector computes from one full forward pass (a test compares
them for GPT-2, GPT-Neo and Llama key models).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from logdata.errors import LogDataError

logger = logging.getLogger(__name__)

#: Sessions per forward pass (larger rounds are split, longest first, to limit padding).
DEFAULT_MAX_BATCH = 64
#: Tokens of KV cache kept per worker before the least recently used sessions are dropped.
DEFAULT_CACHE_TOKENS = 262_144
ONNX_FILE = "model.onnx"
#: ONNX Runtime execution providers by device; GPUs may put ``TensorrtExecutionProvider`` first.
ONNX_PROVIDERS: dict[str, tuple[str, ...]] = {
    "cpu": ("CPUExecutionProvider",),
    "cuda": ("CUDAExecutionProvider", "CPUExecutionProvider"),
    "tensorrt": ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
}


@dataclass(frozen=True)
class RankRequest:
    """Rank ``new`` after ``context`` for one session.

    Attributes:
        session: The session id (the cache key).
        context: Token ids already in the session's chunk, ``<bos>`` first (at least one).
        new: Token ids to rank, in order (at least one).
    """

    session: str
    context: tuple[int, ...]
    new: tuple[int, ...]


def ranks_of(logits: Any, ids: Any) -> Any:
    """Rank of each next token: how many logits are strictly greater than the true one's.

    Args:
        logits: ``(batch, length, vocab)`` array or tensor.
        ids: ``(batch, length)`` token ids; position ``t``'s logits are ranked against ``ids[t+1]``.

    Returns:
        ``(batch, length - 1)`` ranks (the same rule as :func:`validation.keyseq_detect.true_key_ranks`).

    >>> ranks_of(np.array([[[0.1, 2.0, 1.0], [3.0, 1.0, 0.0]]]), np.array([[0, 2]])).tolist()
    [[1]]
    """
    if isinstance(logits, np.ndarray):
        true = np.take_along_axis(logits[:, :-1], ids[:, 1:, None], axis=-1)
        return (logits[:, :-1] > true).sum(-1)
    true = logits[:, :-1].gather(-1, ids[:, 1:].unsqueeze(-1))
    return (logits[:, :-1] > true).sum(-1)


def _batches(requests: Sequence[RankRequest], max_batch: int,
             length: Callable[[RankRequest], int]) -> list[list[int]]:
    """Request indices in groups of ``max_batch``, longest first (similar lengths pad less)."""
    order = sorted(range(len(requests)), key=lambda i: -length(requests[i]))
    return [order[i:i + max_batch] for i in range(0, len(order), max_batch)]


def _check(requests: Sequence[RankRequest]) -> None:
    for r in requests:
        if not r.context or not r.new:
            raise ValueError(f"session {r.session}: a rank request needs context and new tokens")


class RecomputeScorer:
    """Ranks by a forward pass over ``context + new`` from ``<bos>`` (no cache).

    Args:
        forward: ``(input_ids, attention_mask)`` int64 arrays → ``(batch, length, vocab)`` logits.
        pad_id: Padding id.
        max_batch: Sessions per forward pass.
    """

    def __init__(self, forward: Callable[[np.ndarray, np.ndarray], np.ndarray], pad_id: int,
                 max_batch: int = DEFAULT_MAX_BATCH) -> None:
        self.forward = forward
        self.pad_id = pad_id
        self.max_batch = max_batch
        self.tokens_fed = 0

    def ranks(self, requests: Sequence[RankRequest]) -> list[list[int]]:
        """Per request, the ranks of its ``new`` tokens."""
        _check(requests)
        out: list[list[int]] = [[] for _ in requests]
        for idx in _batches(requests, self.max_batch, lambda r: len(r.context) + len(r.new)):
            feeds = [requests[i].context + requests[i].new for i in idx]
            width = max(len(f) for f in feeds)
            ids = np.full((len(feeds), width), self.pad_id, dtype=np.int64)
            mask = np.zeros((len(feeds), width), dtype=np.int64)
            for row, feed in enumerate(feeds):
                ids[row, :len(feed)] = feed
                mask[row, :len(feed)] = 1
            ranks = np.asarray(ranks_of(np.asarray(self.forward(ids, mask)), ids))
            self.tokens_fed += int(mask.sum())
            for row, i in enumerate(idx):
                end = len(feeds[row]) - 1
                out[i] = ranks[row, end - len(requests[i].new):end].tolist()
        return out

    def forget(self, sessions: Iterable[str]) -> None:
        """Nothing is cached."""


@dataclass
class _Cached:
    tokens: tuple[int, ...]  # the tokens the KV covers (the session's context minus its last token)
    kv: Any  # (2 * layers, heads, len(tokens), head_dim)


class TorchScorer:
    """Ranks with a per-session KV cache and micro-batched incremental forward passes.

    Args:
        model: A Hugging Face causal LM in eval mode (GPT-2, GPT-Neo, Llama key models).
        pad_id: Padding id.
        max_batch: Sessions per forward pass.
        cache_tokens: KV cache budget in tokens (least recently used sessions are dropped).
        device: Torch device of the model.
    """

    def __init__(self, model: Any, pad_id: int, max_batch: int = DEFAULT_MAX_BATCH,
                 cache_tokens: int = DEFAULT_CACHE_TOKENS, device: str = "cpu") -> None:
        self.model = model
        self.pad_id = pad_id
        self.max_batch = max_batch
        self.cache_tokens = cache_tokens
        self.device = device
        self.cache: OrderedDict[str, _Cached] = OrderedDict()
        self.cached_tokens = 0
        self.tokens_fed = 0
        self.hits = 0
        self.misses = 0
        config = model.config
        self.max_positions = int(getattr(config, "n_positions", None)
                                 or getattr(config, "max_position_embeddings", 1 << 30))

    def _plan(self, request: RankRequest) -> tuple[Any, tuple[int, ...]]:
        """(cached KV or None, tokens to feed) for one request."""
        entry = self.cache.get(request.session)
        if entry is not None and entry.tokens == request.context[:-1]:
            self.hits += 1
            self.cache.move_to_end(request.session)
            return entry.kv, request.context[-1:] + request.new
        self.misses += 1
        return None, request.context + request.new

    def ranks(self, requests: Sequence[RankRequest]) -> list[list[int]]:
        """Per request, the ranks of its ``new`` tokens; the sessions' caches move forward."""
        _check(requests)
        out: list[list[int]] = [[] for _ in requests]
        plans = [self._plan(r) for r in requests]
        for idx in _batches(requests, self.max_batch, lambda r: len(r.context) + len(r.new)):
            self._forward([requests[i] for i in idx], [plans[i] for i in idx], idx, out)
        self._evict()
        return out

    def _forward(self, requests: list[RankRequest], plans: list[tuple[Any, tuple[int, ...]]],
                 slots: list[int], out: list[list[int]]) -> None:
        import torch
        from transformers import DynamicCache

        n = len(requests)
        past_len = [0 if kv is None else kv.shape[2] for kv, _ in plans]
        feed_len = [len(feed) for _, feed in plans]
        width_past, width = max(past_len), max(feed_len)
        ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((n, width_past + width), dtype=torch.long)
        for row, (p, (_, feed)) in enumerate(zip(past_len, plans, strict=True)):
            ids[row, :len(feed)] = torch.tensor(feed, dtype=torch.long)
            mask[row, width_past - p:width_past + len(feed)] = 1
        positions = (torch.tensor(past_len).unsqueeze(1) + torch.arange(width)).clamp_max(
            self.max_positions - 1)
        cache = None
        if width_past:
            first = next(kv for kv, _ in plans if kv is not None)  # (2L, H, p, D)
            past = first.new_zeros((first.shape[0], n, first.shape[1], width_past, first.shape[3]))
            for row, (kv, _) in enumerate(plans):
                if kv is not None:  # left-padded: the session's keys end where the batch's do
                    past[:, row, :, width_past - kv.shape[2]:] = kv
            past = past.to(self.device)
            cache = DynamicCache(ddp_cache_data=[(past[2 * i], past[2 * i + 1])
                                                 for i in range(past.shape[0] // 2)])
        with torch.inference_mode():
            result = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                position_ids=positions.to(self.device), past_key_values=cache,
                                use_cache=True)
        ranks = ranks_of(result.logits.float(), ids.to(self.device)).cpu().numpy()
        kv_all = torch.stack([t for layer in result.past_key_values.layers
                              for t in (layer.keys, layer.values)])  # (2L, n, H, P+N, D)
        self.tokens_fed += sum(feed_len)
        for row, request in enumerate(requests):
            end = feed_len[row] - 1
            out[slots[row]] = ranks[row, end - len(request.new):end].tolist()
            start, stop = width_past - past_len[row], width_past + feed_len[row] - 1
            self._store(request.session, (request.context + request.new)[:-1],
                        kv_all[:, row, :, start:stop].clone().cpu())

    def _store(self, session: str, tokens: tuple[int, ...], kv: Any) -> None:
        old = self.cache.pop(session, None)
        if old is not None:
            self.cached_tokens -= len(old.tokens)
        self.cache[session] = _Cached(tokens, kv)
        self.cached_tokens += len(tokens)

    def _evict(self) -> None:
        while self.cached_tokens > self.cache_tokens and self.cache:
            _, entry = self.cache.popitem(last=False)
            self.cached_tokens -= len(entry.tokens)

    def forget(self, sessions: Iterable[str]) -> None:
        """Drop the caches of closed sessions."""
        for session in sessions:
            entry = self.cache.pop(session, None)
            if entry is not None:
                self.cached_tokens -= len(entry.tokens)


def export_onnx(model: Any, path: Path, opset: int = 18) -> Path:
    """Export a key model to ONNX: ``(input_ids, attention_mask)`` → ``logits``, dynamic shapes.

    Args:
        model: The causal LM (eval mode, CPU).
        path: The ``.onnx`` file to write.
        opset: ONNX opset.

    Returns:
        ``path``.
    """
    import torch

    class _Logits(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            return self.inner(input_ids=input_ids, attention_mask=attention_mask,
                              use_cache=False).logits

    wrapper = _Logits(model.eval()).eval()
    ids = torch.tensor([[1, 4, 5, 6], [1, 4, 0, 0]], dtype=torch.long)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.long)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    batch, length = torch.export.Dim("batch"), torch.export.Dim("length", min=2)
    with torch.inference_mode(False), torch.no_grad():
        torch.onnx.export(wrapper, (ids, mask), str(tmp), input_names=["input_ids", "attention_mask"],
                          output_names=["logits"], opset_version=opset, dynamo=True,
                          dynamic_shapes={"input_ids": {0: batch, 1: length},
                                          "attention_mask": {0: batch, 1: length}},
                          external_data=False)
    tmp.replace(path)
    return path


def onnx_forward(path: Path, providers: Sequence[str] = ONNX_PROVIDERS["cpu"],
                 threads: int | None = None) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """An ONNX Runtime session as a ``(input_ids, attention_mask) → logits`` function."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise LogDataError("the onnx backend needs onnxruntime (pip install -e '.[serving]')"
                           ) from exc
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=list(providers))

    def forward(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return session.run(["logits"], {"input_ids": ids, "attention_mask": mask})[0]

    return forward


#: Backend names for ``--backend``.
BACKENDS: tuple[str, ...] = ("torch", "onnx")


def build_scorer(backend: str, model_dir: Path, device: str = "cpu", threads: int | None = None,
                 max_batch: int = DEFAULT_MAX_BATCH, cache_tokens: int = DEFAULT_CACHE_TOKENS,
                 onnx_path: Path | None = None, providers: str = "cpu") -> tuple[Any, Any]:
    """Load the key model and return ``(scorer, tokenizer)`` for ``backend``.

    The ONNX file is exported next to the model (``model.onnx``) the first time, or read from
    ``onnx_path``.

    Raises:
        LogDataError: On an unknown backend or provider set.
    """
    from verl_recipes.local.keyseq.model import load_model

    if backend not in BACKENDS:
        raise LogDataError(f"unknown backend {backend!r}; choose from {list(BACKENDS)}")
    if threads:
        import torch

        torch.set_num_threads(threads)
    model, tokenizer = load_model(model_dir, device)
    if backend == "torch":
        return TorchScorer(model, tokenizer.pad_token_id, max_batch, cache_tokens, device), tokenizer
    if providers not in ONNX_PROVIDERS:
        raise LogDataError(f"unknown ONNX providers {providers!r}; choose from {list(ONNX_PROVIDERS)}")
    path = onnx_path or Path(model_dir) / ONNX_FILE
    if not path.is_file():
        logger.info("exporting %s to ONNX at %s", model_dir, path)
        export_onnx(model.cpu(), path)
    forward = onnx_forward(path, ONNX_PROVIDERS[providers], threads)
    return RecomputeScorer(forward, tokenizer.pad_token_id, max_batch), tokenizer
