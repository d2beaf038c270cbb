"""A verl SFT dataset over log-key sequences (``python -m logdata sequences`` parquet).

verl's SFT trainer builds its dataset from ``data.custom_cls`` when set; this class turns every
row (one sequence chunk, ``keys`` column) into ``<bos> key … key [<eos>]`` token ids with the
model's key tokenizer (``verl_recipes.local.keyseq.model``), loss on every key and on ``<eos>`` (not on
``<bos>``), exactly what ``verl_recipes.local.keyseq.pretrain`` trains on. ``<eos>`` follows only a
sequence's last chunk. Unknown keys map to ``<unk>``.

The constructor signature is the one ``verl.trainer.sft_trainer.create_sft_dataset`` calls:
``(parquet_files, tokenizer, config, processor, max_samples)``; items have the keys of verl's
``MultiTurnSFTDataset`` for the ``no_padding`` and ``right`` pad modes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

PAD_MODES = ("no_padding", "right")


class KeySeqSFTDataset(Dataset):
    """Next-key pretraining rows for verl's SFT trainer.

    Args:
        parquet_files: One path or a list of ``train.parquet``/``val.parquet`` paths.
        tokenizer: The key tokenizer (or a path to it).
        config: verl's ``data`` config (``pad_mode``, ``max_length``, ``truncation``, ``seed``).
        processor: Unused (no multimodal input).
        max_samples: Keep at most this many rows (-1: all); drawn with ``config.seed`` when
            ``config.shuffle`` is set, else the first rows.
    """

    def __init__(self, parquet_files: Any, tokenizer: Any, config: Any = None,
                 processor: Any = None, max_samples: int = -1):
        config = config or {}
        if isinstance(tokenizer, str):
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(tokenizer, trust_remote_code=False)
        self.tokenizer = tokenizer
        self.pad_mode = str(config.get("pad_mode", "no_padding"))
        self.max_length = int(config.get("max_length", 1024))
        self.truncation = str(config.get("truncation", "error"))
        if self.pad_mode not in PAD_MODES:
            raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {self.pad_mode!r}")
        files = [parquet_files] if isinstance(parquet_files, str) else list(parquet_files)
        frame = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
        if 0 < max_samples < len(frame):
            if config.get("shuffle", False):
                # verl leaves the draw unseeded when data.seed is null; we fall back to 0.
                seed = config.get("seed")
                rng = np.random.default_rng(0 if seed is None else seed)
                frame = frame.iloc[np.sort(rng.choice(len(frame), max_samples, replace=False))]
            else:
                frame = frame.iloc[:max_samples]
        self.rows = frame.reset_index(drop=True)

    def __len__(self) -> int:
        return len(self.rows)

    def token_ids(self, index: int) -> list[int]:
        """``<bos>`` + key ids (+ ``<eos>`` after a sequence's last chunk) of one row."""
        row = self.rows.iloc[index]
        ids = [self.tokenizer.bos_token_id,
               *self.tokenizer.convert_tokens_to_ids([str(k) for k in row["keys"]])]
        if int(row.get("chunk", 0)) == int(row.get("n_chunks", 1)) - 1:
            ids.append(self.tokenizer.eos_token_id)
        return ids

    def _fit(self, ids: list[int]) -> list[int]:
        if len(ids) <= self.max_length:
            return ids
        if self.truncation == "error":
            raise ValueError(f"sequence of {len(ids)} tokens exceeds max_length={self.max_length}; "
                             "rebuild the data with a smaller --context")
        return ids[-self.max_length:] if self.truncation == "left" else ids[: self.max_length]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        ids = torch.tensor(self._fit(self.token_ids(index)), dtype=torch.long)
        loss_mask = torch.ones_like(ids)
        loss_mask[0] = 0  # <bos> is never a target
        position_ids = torch.arange(ids.numel(), dtype=torch.long)
        if self.pad_mode == "no_padding":
            return {"input_ids": ids, "position_ids": position_ids, "loss_mask": loss_mask}
        pad = self.max_length - ids.numel()
        pad_id = self.tokenizer.pad_token_id or 0
        return {
            "input_ids": torch.nn.functional.pad(ids, (0, pad), value=pad_id),
            "attention_mask": torch.nn.functional.pad(torch.ones_like(ids), (0, pad)),
            "position_ids": torch.nn.functional.pad(position_ids, (0, pad)),
            "loss_mask": torch.nn.functional.pad(loss_mask, (0, pad)),
        }
