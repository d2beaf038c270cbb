"""System-prompt variants and the chat messages stored in every VeRL row.

One table, :data:`SYSTEM_PROMPTS`: ``cot`` asks for reasoning in ``<think>…</think>`` followed
by ``<answer>normal|abnormal</answer>``; ``expert`` states the rules only. The messages are
rendered once here and stored in the parquet; the model's own chat template renders them at
train and predict time.
"""

from __future__ import annotations

from logdata.errors import LogDataError
from reward.labels import ABNORMAL, NORMAL

_RULES = (
    "You are an expert in system log analysis for large computer systems. "
    "A log template is a log message whose variable parts are replaced by <*>. "
    f"A log is {ABNORMAL} when it reports a failure, fault, error, crash, lost resource, "
    "timeout, hardware problem or an interrupted operation that needs attention; "
    f"it is {NORMAL} when it reports routine operation, status, progress or a problem that was "
    "corrected automatically."
)

SYSTEM_PROMPTS: dict[str, str] = {
    "cot": (
        _RULES
        + " Read the log, reason step by step about what it reports, then answer. "
        "Write your reasoning inside <think></think> and then your final answer inside "
        f"<answer></answer>, exactly: <think>your reasoning</think><answer>{NORMAL} or "
        f"{ABNORMAL}</answer>."
    ),
    "expert": (
        _RULES
        + f" Classify the log. Answer with <answer>{NORMAL}</answer> or "
        f"<answer>{ABNORMAL}</answer> and nothing else."
    ),
}

USER_TEMPLATE = "Log: {log}"


def build_messages(log: str, variant: str = "cot") -> list[dict[str, str]]:
    """Return the chat messages (system prompt + the log) for one row.

    >>> [m["role"] for m in build_messages("disk <*> failed")]
    ['system', 'user']

    Raises:
        LogDataError: for an unknown variant.
    """
    try:
        system = SYSTEM_PROMPTS[variant]
    except KeyError:
        raise LogDataError(
            f"unknown prompt variant {variant!r}; choose one of {sorted(SYSTEM_PROMPTS)}"
        ) from None
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": USER_TEMPLATE.format(log=log)},
    ]
