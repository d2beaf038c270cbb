"""scripts/logneo_ablation.py: the synthetic key grammars, and a smoke run that writes the report."""

from __future__ import annotations

import json
import random

import pytest
from conftest import load_script


@pytest.fixture(scope="module")
def ablation():
    return load_script("logneo_ablation")


def test_generated_labels_follow_the_grammars(ablation):
    for spec in ablation.DATASETS:
        _, valid, mix = ablation.GENERATORS[spec.name]
        sequences = ablation.generate(spec, seed=0)
        assert all(valid(keys) == (kind is None) for keys, kind in sequences)
        assert {kind for _, kind in sequences} == {None, *mix}


def test_hard_anomalies_use_only_normal_keys(ablation):
    rng = random.Random(0)
    normal_keys = {k for _ in range(200) for k in ablation.normal_block(rng)}
    for kind in ("count", "swap", "early_end"):
        keys = ablation.abnormal_block(rng, kind)
        assert set(keys) <= normal_keys
    assert not ablation.valid_block([*ablation.write_block(rng, 2)[:-1], "E5", "E5", "E5"])
    window = ablation.bgl_window(rng, "swap")
    assert not ablation.valid_window(window) and ablation.valid_window(ablation.bgl_window(rng, None))


def test_quick_run_writes_the_table_plot_and_results(ablation, tmp_path, capsys):
    out = tmp_path / "ablation"
    assert ablation.main(["--quick", "--out", str(out), "--seeds", "0", "--workers", "1"]) == 0
    assert "| logneo_ppo_ce |" in capsys.readouterr().out
    assert (out / "f1_vs_k.png").read_bytes()[:4] == b"\x89PNG"
    results = json.loads((out / "results.json").read_text())
    run = results["runs"][0]
    assert set(run["results"]) == set(ablation.VARIANTS)
    assert {"best", "last", "training"} <= set(run["results"]["logneo_ppo"])
    assert "recall at P" in (out / "table.md").read_text()
