"""Pluggable reward components for log anomaly detection (VeRL and TRL entry points).

``from reward import compute_score`` gives the per-sample reward (see :mod:`reward.api`);
``reward/verl_reward.py`` is the file verl loads; :mod:`reward.trl_adapter` wraps the same
scorer for TRL; :mod:`reward.class_weights` weighs the gold classes and checks that the
advantage estimator keeps the weights.
"""

from reward.api import compute_score, compute_score_async
from reward.labels import ABNORMAL, LABELS, NORMAL, PREDICTIONS, UNKNOWN
from reward.parsing import extract_answer, extract_think, parse_answer

__all__ = [
    "ABNORMAL",
    "LABELS",
    "NORMAL",
    "PREDICTIONS",
    "UNKNOWN",
    "compute_score",
    "compute_score_async",
    "extract_answer",
    "extract_think",
    "parse_answer",
]
