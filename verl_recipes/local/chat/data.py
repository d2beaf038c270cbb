"""Read the verl parquet files into TRL datasets.

GRPO: our RLHF parquet (``prompt`` = chat messages, ``reward_model.ground_truth``, ``data_source``,
``extra_info``) becomes a conversational-prompt dataset whose extra columns TRL hands to the reward
functions, exactly the fields verl passes to ``compute_score``.

SFT: the chat parquet from ``logdata rationales`` (``messages``: system, user, assistant) becomes
TRL's conversational prompt/completion format, so the loss covers the assistant turn only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from logdata.io import require_file


class LocalDataError(ValueError):
    """A parquet file is missing or lacks the expected columns."""


def _read(path: Path, columns: tuple[str, ...], max_samples: int = -1) -> pd.DataFrame:
    require_file(path, "data file", LocalDataError)
    frame = pd.read_parquet(path)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise LocalDataError(f"{path} lacks column(s) {missing}; columns: {list(frame.columns)}")
    if max_samples and max_samples > 0:
        frame = frame.iloc[:max_samples]
    return frame.reset_index(drop=True)


def _messages(value: Any) -> list[dict[str, str]]:
    """Plain ``[{role, content}, …]`` from a parquet cell (numpy arrays of dicts included)."""
    return [{"role": str(m["role"]), "content": str(m["content"])} for m in list(value)]


GRPO_COLUMNS: tuple[str, ...] = ("prompt", "reward_model", "data_source", "extra_info")


def grpo_dataset(path: Path, max_samples: int = -1) -> Any:
    """A verl RLHF parquet as a TRL GRPO dataset (``datasets.Dataset``).

    Columns kept: ``prompt`` (chat messages: TRL's conversational prompt), ``reward_model``
    (``{style, ground_truth}``), ``data_source`` and ``extra_info`` — the fields verl passes to
    ``compute_score``; TRL hands them to the reward functions as keyword lists.
    """
    from datasets import Dataset

    _read(path, GRPO_COLUMNS[:3], max_samples)  # clear errors for a missing file or column
    data = Dataset.from_parquet(str(path))
    data = data.select_columns([c for c in GRPO_COLUMNS if c in data.column_names])
    if max_samples and max_samples > 0:
        data = data.select(range(min(max_samples, len(data))))
    return data


def sft_records(path: Path, messages_key: str = "messages", max_samples: int = -1) -> list[dict]:
    """Rows of a chat parquet as TRL conversational prompt/completion records.

    The last assistant message is the completion; everything before it is the prompt.

    Raises:
        LocalDataError: When a row has no assistant message.
    """
    frame = _read(path, (messages_key,), max_samples)
    records = []
    for i, value in enumerate(frame[messages_key]):
        messages = _messages(value)
        if not messages or messages[-1]["role"] != "assistant":
            raise LocalDataError(f"{path} row {i}: the last message must be the assistant's")
        records.append({"prompt": messages[:-1], "completion": messages[-1:]})
    return records
