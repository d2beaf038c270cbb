"""DeepLog (Du et al., CCS 2017) in the key-model family: an LSTM over a window of past keys.

The model reads the last ``window`` ids (left-padded with ``<pad>``) and predicts the next key;
DeepLog's HDFS settings are the defaults (:class:`DeepLogConfig`): 2 LSTM layers of 64 units,
window 10, a key is normal when it is among the top ``g = 9`` predictions. Keys enter through a
learnt embedding of width ``hidden`` (DeepLog's paper feeds one-hot keys; logdeep feeds the key
index as one float; an embedding is the usual modern choice and is equivalent to one-hot times a
matrix).

It uses the data of ``python -m logdata sequences`` and the judged positions of
``validation/keyseq_detect.py``, so the two detectors are compared on equal terms: a chunk is
``<bos>`` + key ids (+ ``<eos>`` for session windows), the first key is context only, and the rank
of a true key is the number of entries scored strictly higher (rank >= g: a miss). A sequence's
``max_rank`` decides it at every K at once (abnormal at K when ``max_rank >= K``).

The model is saved as ``model.safetensors`` plus ``deeplog.json`` (settings and the ``vocab.json``
sha256 it was trained with), never pickled.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from logdata.errors import LogDataError
from logdata.io import atomic_write_text, sha256_file
from logdata.keyseq.vocab import BOS, EOS, PAD, KeyVocab

logger = logging.getLogger(__name__)

CONFIG_FILE = "deeplog.json"
WEIGHTS_FILE = "model.safetensors"


@dataclass(frozen=True)
class DeepLogConfig:
    """DeepLog's settings (defaults: the paper's HDFS ones) and the training run's.

    Attributes:
        window: Past keys the LSTM reads (DeepLog ``h = 10``).
        hidden: LSTM units per layer and the key embedding width (DeepLog 64).
        layers: LSTM layers (DeepLog 2).
        top_g: A key is normal when among the top ``g`` predictions (DeepLog ``g = 9``).
        epochs: Passes over the training windows.
        batch_size: Windows per step.
        lr: Adam learning rate.
        seed: Seed of initialisation and shuffling.
        threads: Torch threads.
    """

    window: int = 10
    hidden: int = 64
    layers: int = 2
    top_g: int = 9
    epochs: int = 10
    batch_size: int = 256
    lr: float = 1e-3
    seed: int = 0
    threads: int = 1


def build_model(vocab_size: int, config: DeepLogConfig) -> Any:
    """The LSTM next-key model (random initialisation from ``config.seed``)."""
    import torch
    from torch import nn

    class DeepLogLSTM(nn.Module):
        """Embedding → LSTM → linear over the vocabulary; the last position predicts."""

        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(vocab_size, config.hidden)
            self.lstm = nn.LSTM(config.hidden, config.hidden, config.layers, batch_first=True)
            self.head = nn.Linear(config.hidden, vocab_size)

        def forward(self, windows: Any) -> Any:
            out, _ = self.lstm(self.embed(windows))
            return self.head(out[:, -1])

    torch.manual_seed(config.seed)
    return DeepLogLSTM()


def encode_chunk(key_ids: Sequence[int], vocab: KeyVocab, with_eos: bool) -> list[int]:
    """``<bos>`` + key ids (+ ``<eos>``), as the transformer detector reads a chunk.

    >>> v = KeyVocab.build([["E1", "E2"]])
    >>> encode_chunk([4, 5], v, True) == [v.id_of("<bos>"), 4, 5, v.id_of("<eos>")]
    True
    """
    return [vocab.id_of(BOS), *map(int, key_ids), *([vocab.id_of(EOS)] if with_eos else [])]


def windows_of(ids: Sequence[int], window: int, pad_id: int, first_target: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """Every ``(past window, next id)`` pair of one encoded chunk, from ``first_target`` on.

    >>> w, t = windows_of([1, 7, 8, 9], window=2, pad_id=0, first_target=1)
    >>> w.tolist(), t.tolist()
    ([[0, 1], [1, 7], [7, 8]], [7, 8, 9])
    """
    padded = [pad_id] * window + list(ids)
    targets = list(range(first_target, len(ids)))
    past = np.array([padded[t:t + window] for t in targets], dtype=np.int64).reshape(-1, window)
    return past, np.array([ids[t] for t in targets], dtype=np.int64)


def training_windows(rows: pd.DataFrame, vocab: KeyVocab, window: int, with_eos: bool
                     ) -> tuple[np.ndarray, np.ndarray]:
    """All training pairs of a split (every key after ``<bos>`` is a target)."""
    pairs = [windows_of(encode_chunk(ids, vocab, with_eos), window, vocab.id_of(PAD), 1)
             for ids in rows["key_ids"]]
    if not pairs:
        raise LogDataError("no training sequence for DeepLog")
    return np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs])


def train_deeplog(train: pd.DataFrame, vocab: KeyVocab, config: DeepLogConfig, with_eos: bool,
                  progress: bool = True) -> tuple[Any, dict[str, Any]]:
    """Train DeepLog on the normal training chunks with cross-entropy.

    Returns:
        The model (eval mode) and a summary (windows, loss per epoch, seconds).
    """
    import torch
    from tqdm.auto import tqdm

    torch.set_num_threads(config.threads)
    past, targets = training_windows(train, vocab, config.window, with_eos)
    model = build_model(len(vocab), config)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    x, y = torch.from_numpy(past), torch.from_numpy(targets)
    losses, started = [], time.perf_counter()
    for _ in tqdm(range(config.epochs), desc="deeplog epochs", disable=not progress):
        order = torch.randperm(len(x), generator=generator)
        total = 0.0
        for start in range(0, len(x), config.batch_size):
            idx = order[start:start + config.batch_size]
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(idx)
        losses.append(total / len(x))
    model.eval()
    return model, {"windows": len(x), "loss_per_epoch": losses,
                   "seconds": time.perf_counter() - started}


def score_deeplog(model: Any, rows: pd.DataFrame, vocab: KeyVocab, config: DeepLogConfig,
                  with_eos: bool, skip_first: int = 1, batch_size: int = 4096) -> pd.DataFrame:
    """Rank every judged true key; one row per sequence (chunks aggregated).

    Returns:
        ``sequence_id, label, n_events, max_rank, misses, pred`` (misses and pred at ``top_g``).
    """
    import torch

    chunks, owners = [], []
    for index, row in enumerate(rows.itertuples(index=False)):
        first = 1 + max(0, skip_first - int(getattr(row, "offset", 0)))
        last_chunk = int(getattr(row, "chunk", 0)) == int(getattr(row, "n_chunks", 1)) - 1
        past, targets = windows_of(encode_chunk(row.key_ids, vocab, with_eos and last_chunk),
                                   config.window, vocab.id_of(PAD), first)
        chunks.append((past, targets))
        owners.append(np.full(len(targets), index))
    past = np.concatenate([c[0] for c in chunks])
    targets = np.concatenate([c[1] for c in chunks])
    owner = np.concatenate(owners)
    ranks = np.empty(len(targets), dtype=np.int64)
    with torch.inference_mode():
        for start in range(0, len(targets), batch_size):
            logits = model(torch.from_numpy(past[start:start + batch_size]))
            true = logits.gather(1, torch.from_numpy(targets[start:start + batch_size])[:, None])
            ranks[start:start + batch_size] = (logits > true).sum(1).numpy()
    chunk_max = np.zeros(len(rows), dtype=np.int64)
    np.maximum.at(chunk_max, owner, ranks)
    chunk_misses = np.zeros(len(rows), dtype=np.int64)
    np.add.at(chunk_misses, owner, (ranks >= config.top_g).astype(np.int64))
    frame = pd.DataFrame({"sequence_id": rows["sequence_id"].astype(str).to_numpy(),
                          "label": rows["label"].to_numpy(),
                          "n_events": rows["keys"].map(len).to_numpy(),
                          "max_rank": chunk_max, "misses": chunk_misses})
    per_seq = frame.groupby("sequence_id", sort=True).agg(
        label=("label", "first"), n_events=("n_events", "sum"), max_rank=("max_rank", "max"),
        misses=("misses", "sum")).reset_index()
    per_seq["pred"] = np.where(per_seq["misses"] > 0, "abnormal", "normal")
    return per_seq


def save_deeplog(model: Any, config: DeepLogConfig, vocab_path: Path, out_dir: Path,
                 summary: dict[str, Any]) -> None:
    """Write ``model.safetensors`` and ``deeplog.json`` (settings, vocabulary sha256, summary)."""
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out_dir / WEIGHTS_FILE))
    atomic_write_text(out_dir / CONFIG_FILE, json.dumps(
        {"config": asdict(config), "vocab_sha256": sha256_file(vocab_path), "summary": summary},
        indent=1))


def load_deeplog(folder: Path, vocab: KeyVocab) -> tuple[Any, DeepLogConfig]:
    """The model and settings :func:`save_deeplog` wrote."""
    from safetensors.torch import load_file

    payload = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    config = DeepLogConfig(**payload["config"])
    model = build_model(len(vocab), config)
    model.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
    return model.eval(), config
