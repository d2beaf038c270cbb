"""Reward presets: one table, selected with ``preset=<name>`` in ``reward_kwargs``.

Each preset maps component name → :class:`Term` (weight, parameters, gate). ``gate="correct"``
terms are computed and paid only when the answer is judged correct (and otherwise report 0.0),
which is also how the perplexity model is spared on wrong answers. A term whose ``model`` is
missing (``perplexity_model`` not given) is dropped with one warning.

Bounds of the composite score (class weights 1; with ``class_weights`` multiply by them), as
:func:`reward.scorer.score_bounds` computes them from the components:

=============== ===================== =======================================================
preset          score range           what it is
=============== ===================== =======================================================
rationanomaly   [−2.7, 1.5]           ours: asymmetric errors, hedging never pays, bounded think
                [−2.7, 1.6]           … with a perplexity model
symmetric       [−2.7, 1.5 / 1.6]     ours with missed anomaly = false alarm = −1.0
answer_only     [−2.7, 1.1]           format + correctness (the paper's "without think" ablation)
released        [−7.667, 1.6]         RationAnomaly's released code (:mod:`reward.released`);
                [−5000.75, 2.095]     … with a perplexity model (PPL capped at 1e6)
=============== ===================== =======================================================

Presets in :data:`ORDERED_PRESETS` guarantee, for either gold label, valid format + correct
answer > invalid format + correct answer > valid format + wrong answer > any hedge: their format
gap (``valid − invalid``) exceeds the range of the think terms, and ``unknown`` lies below the
worst wrong class plus the format gap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

GATE_ALWAYS: Final = "always"
GATE_CORRECT: Final = "correct"
DEFAULT_PRESET: Final = "rationanomaly"
RELEASED_WRONG: Final = -1.0 / 0.15


@dataclass(frozen=True)
class Term:
    """One weighted component of a preset.

    Attributes:
        weight: Multiplier of the component's value in the score.
        params: Constructor arguments of the component.
        gate: ``"always"`` or ``"correct"`` (paid only for a correct answer).
        needs_model: The component needs ``perplexity_model``.
    """

    weight: float
    params: dict[str, Any] = field(default_factory=dict)
    gate: str = GATE_ALWAYS
    needs_model: bool = False


# Which gate and model need a component gets when ``weights`` adds it to a preset lacking it.
COMPONENT_DEFAULTS: Final = MappingProxyType(
    {
        "format": Term(1.0),
        "correctness": Term(1.0),
        "bleu": Term(0.1, gate=GATE_CORRECT),
        "rouge": Term(0.1, gate=GATE_CORRECT),
        "length": Term(0.1, gate=GATE_CORRECT),
        "grounding": Term(0.1, gate=GATE_CORRECT),
        "perplexity": Term(0.1, gate=GATE_CORRECT, needs_model=True),
        "semantic_released": Term(0.5, gate=GATE_CORRECT),
        "length_released": Term(0.5, gate=GATE_CORRECT),
        "perplexity_released": Term(0.5, gate=GATE_CORRECT, needs_model=True),
    }
)

# The format gap (0.6) exceeds the think terms' range (5 × 0.1 = 0.5), so a response that breaks the
# format never outscores a valid one with the same answer; a hedge (−2.2 + 0.1) scores below any
# wrong class even with an invalid format (−1.5 − 0.5).
_OURS_FORMAT = {"valid": 0.1, "invalid": -0.5}
_OURS_CORRECTNESS = {
    "caught_anomaly": 1.0,
    "correct_normal": 1.0,
    "missed_anomaly": -1.5,
    "false_alarm": -1.0,
    "unknown": -2.2,
}
_OURS_THINK = {
    "bleu": Term(0.1, gate=GATE_CORRECT),
    "rouge": Term(0.1, gate=GATE_CORRECT),
    "length": Term(0.1, gate=GATE_CORRECT),
    "grounding": Term(0.1, gate=GATE_CORRECT),
    "perplexity": Term(0.1, gate=GATE_CORRECT, needs_model=True),
}

PRESETS: Final[MappingProxyType[str, dict[str, Term]]] = MappingProxyType(
    {
        # Ours: missed anomaly (−1.5) worse than false alarm (−1.0); a hedge (−2.2) below both,
        # whatever the format; think terms in [0, 1] at total weight 0.5, only when correct, so a
        # correct answer (≥ 0.5) always beats any wrong one (≤ −0.9).
        "rationanomaly": {
            "format": Term(1.0, dict(_OURS_FORMAT)),
            "correctness": Term(1.0, dict(_OURS_CORRECTNESS)),
            **_OURS_THINK,
        },
        # Ours without the asymmetric correction.
        "symmetric": {
            "format": Term(1.0, dict(_OURS_FORMAT)),
            "correctness": Term(1.0, {**_OURS_CORRECTNESS, "missed_anomaly": -1.0}),
            **_OURS_THINK,
        },
        # The paper's "without think reward" ablation.
        "answer_only": {
            "format": Term(1.0, dict(_OURS_FORMAT)),
            "correctness": Term(1.0, dict(_OURS_CORRECTNESS)),
        },
        # RationAnomaly's released reward, rule by rule (reward/released.py): format +0.1/−1.0;
        # answer +1 correct, −1/0.15 other class, −1 other string, −1/0.15 invalid format or empty
        # answer; think = semantic + length + perplexity at weight 0.5, only when correct.
        "released": {
            "format": Term(1.0, {"valid": 0.1, "invalid": -1.0, "rule": "released"}),
            "correctness": Term(
                1.0,
                {
                    "rule": "released",
                    "caught_anomaly": 1.0,
                    "correct_normal": 1.0,
                    "missed_anomaly": RELEASED_WRONG,
                    "false_alarm": RELEASED_WRONG,
                    "unknown": -1.0,
                    "invalid": RELEASED_WRONG,
                    "strict_unknown": False,
                },
            ),
            "semantic_released": Term(0.5, gate=GATE_CORRECT),
            "length_released": Term(0.5, gate=GATE_CORRECT),
            "perplexity_released": Term(0.5, gate=GATE_CORRECT, needs_model=True),
        },
    }
)

# Presets that guarantee valid+correct > invalid+correct > valid+wrong > hedge for either label
# (tests/test_reward_presets.py proves it from the table).
ORDERED_PRESETS: Final = frozenset({"rationanomaly", "symmetric", "answer_only"})
