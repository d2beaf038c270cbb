"""Pluggable reward components for log anomaly detection (VeRL and TRL entry points)."""

from reward.labels import ABNORMAL, LABELS, NORMAL, PREDICTIONS, UNKNOWN
from reward.parsing import parse_answer

__all__ = ["ABNORMAL", "LABELS", "NORMAL", "PREDICTIONS", "UNKNOWN", "parse_answer"]
