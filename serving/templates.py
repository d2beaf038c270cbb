"""Templates the workers met but the template store did not know: export for batch classification.

Workers report each new template once on ``<prefix>:templates:new`` (its new event id, the
template text, an example message and the worker). :func:`write_for_prediction` turns them into
the VeRL chat parquet that ``validation/model_predict.py`` reads (the prompt of ``logdata build``),
so the template-level detector can be restarted with their predictions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from logdata.io import atomic_write_parquet
from logdata.schema import ABILITY, REWARD_STYLE
from logdata.templates.prompts import build_messages
from reward.labels import NORMAL

NEW_TEMPLATES_FILE = "new_templates.parquet"


def new_templates_frame(client: Any, prefix: str) -> pd.DataFrame:
    """The reported templates, one row per distinct text (first report kept), in report order."""
    rows = []
    for entry_id, fields in client.xrange(f"{prefix}:templates:new"):
        row = {k.decode(): v.decode("utf-8", "replace") for k, v in fields.items()}
        rows.append({"reported": entry_id.decode(), **row})
    frame = pd.DataFrame(rows, columns=["reported", "event_id", "template", "example", "worker"])
    return frame.drop_duplicates("template", keep="first").reset_index(drop=True)


def write_for_prediction(frame: pd.DataFrame, out: Path, data_source: str, prompt: str = "cot"
                         ) -> Path:
    """Write ``out/new_templates.parquet`` in the VeRL RLHF schema for ``model_predict.py``.

    The gold label is unknown: rows carry ``normal`` as a placeholder and ``extra_info.unlabelled``
    true, so metrics computed on this file mean nothing; only the predictions matter.
    """
    rows = [{
        "data_source": data_source,
        "prompt": build_messages(rec.template, prompt),
        "ability": ABILITY,
        "reward_model": {"style": REWARD_STYLE, "ground_truth": NORMAL},
        "extra_info": {"split": "test", "index": i, "log": rec.template, "event_id": rec.event_id,
                       "example": rec.example, "unlabelled": True},
    } for i, rec in enumerate(frame.itertuples(index=False))]
    out.mkdir(parents=True, exist_ok=True)
    path = out / NEW_TEMPLATES_FILE
    atomic_write_parquet(pd.DataFrame(rows), path)
    return path
