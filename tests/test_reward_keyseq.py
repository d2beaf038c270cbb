"""Next-key rewards (reward/keyseq.py): values at hand-computed positions, bounds, malformed input."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from reward.keyseq import (
    KEYSEQ_PRESETS,
    credits,
    position_rewards,
    reward_spec,
    sequence_reward,
)

E = math.exp
GOLD = ["E1", "E2", "E3", "E4"]


def test_logneo_values_written_out() -> None:
    # T = 4, w_t = e^(-t/4); t0 hit, t1 right key one step early (credit e^-1), t2 unknown key,
    # t3 not a key at all
    got = position_rewards(["E1", "E3", "E9", "<unk>"], GOLD, "logneo")
    c1 = E(-1)
    expected = [
        1.0,
        c1 * E(-1 / 4) - (1 - c1) * (1 - E(-1 / 4)),
        -(1 - E(-2 / 4)),
        -(1 - E(-3 / 4)),
    ]
    assert got.tolist() == pytest.approx(expected, abs=1e-12)


def test_partial_credit_decays_with_the_offset_and_stops_at_the_window() -> None:
    # E3 generated at t0 is gold two positions later: credit e^(-2/τ)
    assert credits(["E3"], GOLD, window=2, tau=1.0).tolist() == pytest.approx([E(-2), 0, 0, 0])
    assert credits(["E3"], GOLD, window=2, tau=2.0).tolist() == pytest.approx([E(-1), 0, 0, 0])
    assert credits(["E3"], GOLD, window=1).tolist() == [0.0, 0.0, 0.0, 0.0]
    # the nearest offset wins: E2 is one step away on the left
    assert credits(["E9", "E9", "E2"], ["E2", "E2", "E9", "E2"], window=2)[2] == pytest.approx(E(-1))


def test_position_awareness() -> None:
    spec = KEYSEQ_PRESETS["logneo"]
    hit_early = position_rewards(["E1", "E9", "E9", "E9"], GOLD, spec)[0]
    hit_late = position_rewards(["E9", "E9", "E9", "E4"], GOLD, spec)[3]
    miss_early = position_rewards(["E9"] * 4, GOLD, spec)[1]
    miss_late = position_rewards(["E9"] * 4, GOLD, spec)[3]
    assert hit_early == 1.0 and hit_late == pytest.approx(E(-3 / 4))
    assert miss_early == pytest.approx(-(1 - E(-1 / 4))) and miss_late == pytest.approx(
        -(1 - E(-3 / 4)))
    assert hit_early > hit_late > 0 > miss_early > miss_late


def test_loggpt_is_plus_minus_one_on_exact_matches() -> None:
    got = position_rewards("E1 E3 E3", GOLD, "loggpt")  # near misses earn nothing
    assert got.tolist() == [1.0, -1.0, 1.0, -1.0]


def test_sequence_is_the_mean_of_the_logneo_positions() -> None:
    generated = ["E1", "E3", "E9", "<unk>"]
    assert sequence_reward(generated, GOLD, "sequence") == pytest.approx(
        float(np.mean(position_rewards(generated, GOLD, "logneo"))))
    assert sequence_reward("E1 E2", "E1 E2") == pytest.approx((1 + E(-1 / 2)) / 2)


def test_early_end_and_overlong_generations_are_misses() -> None:
    assert position_rewards(["E1"], ["E1", "E2"]).tolist() == pytest.approx([1.0, -(1 - E(-1 / 2))])
    # positions past the gold end miss, even with a gold key nearby
    long = position_rewards(["E1", "E2", "E2"], ["E1", "E2"])
    assert long.tolist() == pytest.approx([1.0, E(-1 / 3), -(1 - E(-2 / 3))])


@pytest.mark.parametrize("generated", ["", "<eos>", "   ", "E1\x00E2 \ufffd", "<unk> " * 3000,
                                       ["", "<pad>", "E"], "E1 " * 50])
def test_malformed_generations_score_as_misses(generated: object) -> None:
    for preset in KEYSEQ_PRESETS:
        rewards = position_rewards(generated, GOLD, preset)
        low, high = KEYSEQ_PRESETS[preset].bounds()
        assert np.isfinite(rewards).all() and len(rewards) >= len(GOLD)
        assert (rewards >= low - 1e-12).all() and (rewards <= high + 1e-12).all()
        assert position_rewards(generated, GOLD, preset)[1:].max() < high  # nothing right past t0


def test_bounds_hold_and_are_reached() -> None:
    rng = random.Random(0)
    keys = [f"E{i}" for i in range(6)] + ["<unk>"]
    for preset, spec in KEYSEQ_PRESETS.items():
        low, high = spec.bounds()
        seen = []
        for _ in range(500):
            gold = [rng.choice(keys[:6]) for _ in range(rng.randint(1, 12))]
            gen = [rng.choice(keys) for _ in range(rng.randint(0, 14))]
            seen.extend(position_rewards(gen, gold, preset))
        assert min(seen) >= low - 1e-12 and max(seen) <= high + 1e-12, preset
        assert max(seen) == pytest.approx(high)
    assert KEYSEQ_PRESETS["logneo"].bounds() == (-(1 - E(-1)), 1.0)
    assert reward_spec("logneo", a=2.0, b=3.0, decay=2.0).bounds() == (-3 * (1 - E(-2)), 2.0)


def test_reward_spec_overrides_and_rejects_bad_constants() -> None:
    spec = reward_spec("logneo", window=0)
    assert position_rewards(["E3"], GOLD, spec)[0] == 0.0  # no partial credit, t0 miss costs 0
    with pytest.raises(ValueError, match="unknown keyseq reward preset"):
        reward_spec("nope")
    with pytest.raises(ValueError, match="tau > 0"):
        reward_spec("logneo", tau=0.0)
    with pytest.raises(TypeError):
        reward_spec("logneo", gamma=1.0)
