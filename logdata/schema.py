"""The VeRL RLHF row schema, checked before any train/val/test parquet is written.

Columns (DESIGN.md): ``data_source``, ``prompt`` (list of ``{role, content}``), ``ability`` =
``log_anomaly``, ``reward_model`` = ``{style: rule, ground_truth: normal|abnormal}``,
``extra_info`` = ``{split, index, log, …}``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import pandas as pd

from logdata.errors import LogDataError
from reward.labels import is_label

ABILITY = "log_anomaly"
REWARD_STYLE = "rule"
#: The built-in data sources; a format file adds its own ``name`` (a word: letters, digits, . _ -).
DATA_SOURCES: tuple[str, ...] = ("bgl", "spirit", "thunderbird", "hdfs", "synthetic")
_SOURCE_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
REQUIRED_COLUMNS: tuple[str, ...] = ("data_source", "prompt", "ability", "reward_model",
                                     "extra_info")
EXTRA_INFO_KEYS: tuple[str, ...] = ("split", "index", "log")
ROLES: tuple[str, ...] = ("system", "user", "assistant")


def _row_problem(row: Mapping) -> str | None:
    source = row["data_source"]
    if not isinstance(source, str) or not _SOURCE_RE.match(source):
        return f"data_source {source!r} is not a dataset name (letters, digits, . _ -)"
    prompt = row["prompt"]
    if prompt is None or len(prompt) == 0:
        return "empty prompt"
    for message in prompt:
        if not isinstance(message, Mapping) or set(message) != {"role", "content"}:
            return "prompt messages must be {role, content} dicts"
        if message["role"] not in ROLES or not isinstance(message["content"], str):
            return f"bad prompt message role {message.get('role')!r}"
    if prompt[-1]["role"] != "user":
        return "the last prompt message must be the user's"
    if row["ability"] != ABILITY:
        return f"ability must be {ABILITY!r}"
    reward = row["reward_model"]
    if not isinstance(reward, Mapping) or reward.get("style") != REWARD_STYLE:
        return "reward_model.style must be 'rule'"
    if not is_label(reward.get("ground_truth")):
        return f"reward_model.ground_truth {reward.get('ground_truth')!r} is not a label"
    extra = row["extra_info"]
    if not isinstance(extra, Mapping) or any(k not in extra for k in EXTRA_INFO_KEYS):
        return f"extra_info must hold {EXTRA_INFO_KEYS}"
    if not isinstance(extra["log"], str) or not extra["log"]:
        return "extra_info.log must be a non-empty string"
    return None


def validate_rl_frame(df: pd.DataFrame) -> None:
    """Check a VeRL RLHF frame against the DESIGN.md schema.

    Args:
        df: one row per example.

    Raises:
        LogDataError: naming the first problem (column or row).
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise LogDataError(f"RL frame lacks column(s) {missing}")
    for position, row in enumerate(df[list(REQUIRED_COLUMNS)].to_dict("records")):
        problem = _row_problem(row)
        if problem:
            raise LogDataError(f"RL frame row {position}: {problem}")
    indices = [extra["index"] for extra in df["extra_info"]]
    splits = {extra["split"] for extra in df["extra_info"]}
    if len(splits) == 1 and len(set(indices)) != len(indices):
        raise LogDataError("RL frame: extra_info.index is not unique within the split")
