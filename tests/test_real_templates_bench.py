"""benchmarks/real_templates.py (issue 20): its helpers, and the real-model smoke through verl.

The smoke runs the benchmark's ``smoke`` profile: LogPrompt's BGL templates prepared with the
label patch, then two GRPO steps through verl's ``main_ppo`` on CPU (vLLM rollouts, FSDP, our
reward with class weights and the real model as perplexity scorer) from SmolLM2-135M-Instruct
(``make real-model``). It skips when the real data or the model is absent.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import real_templates as bench  # noqa: E402
import real_templates_report as report  # noqa: E402

MODEL = ROOT / "models" / "smollm2-135m-instruct"


def rl_frame(labels: list[str]) -> pd.DataFrame:
    """A minimal VeRL RL frame with one template per label."""
    return pd.DataFrame({
        "data_source": ["bgl"] * len(labels),
        "reward_model": [{"style": "rule", "ground_truth": lab} for lab in labels],
        "extra_info": [{"log": f"template number {i}", "index": i} for i in range(len(labels))],
    })


def test_f1_counts_unknown_as_wrong() -> None:
    gold = ["abnormal", "abnormal", "normal", "normal", "abnormal"]
    pred = ["abnormal", "unknown", "abnormal", "normal", "abnormal"]
    # tp 2, fp 1, fn 1 (the unknown abnormal) -> 4 / 6
    assert report.f1_of(gold, pred) == pytest.approx(4 / 6)
    assert report.f1_of(gold, ["normal"] * 5) == 0.0


def test_paired_bootstrap_sees_no_difference_between_equal_runs() -> None:
    gold = ["abnormal", "normal"] * 20
    same = ["abnormal", "abnormal"] * 20
    out = report.paired_bootstrap(gold, same, same, samples=200)
    assert out["difference"] == 0.0 and out["ci95"] == [0.0, 0.0] and out["p_not_better"] == 1.0
    better = report.paired_bootstrap(gold, same, gold, samples=200)
    assert better["difference"] == pytest.approx(1 - 2 * 20 / 60, abs=1e-4)  # 1 − F1 0.667
    assert better["ci95"][0] > 0 and better["p_not_better"] == 0.0


def test_seed_groups_spread() -> None:
    rows = [{"stage": f"sft_rule_s{s}", "f1": f1, "unknown_rate": 0.1}
            for s, f1 in enumerate((0.5, 0.6, 0.7))] + [{"stage": "tfidf", "f1": 0.9,
                                                          "unknown_rate": 0.0}]
    groups = report.seed_groups(rows)
    assert list(groups) == ["sft_rule"]
    assert groups["sft_rule"]["f1_mean"] == pytest.approx(0.6)
    assert groups["sft_rule"]["f1_std"] == pytest.approx(0.1)
    assert (groups["sft_rule"]["f1_min"], groups["sft_rule"]["f1_max"]) == (0.5, 0.7)


def test_balanced_rows_takes_every_abnormal_and_prefers_covered_normals() -> None:
    frame = rl_frame(["abnormal"] * 3 + ["normal"] * 20)
    prefer = {"template number 10", "template number 11"}
    out = bench.balanced_rows(frame, 2, seed=0, prefer=prefer)
    labels = bench.rl_labels(out)
    assert labels.count("abnormal") == 3 and labels.count("normal") == 6
    assert prefer <= set(bench.rl_logs(out))
    again = bench.balanced_rows(frame, 2, seed=0, prefer=prefer)
    assert bench.rl_logs(out) == bench.rl_logs(again)
    capped = bench.abnormal_fraction_rows(frame, 0.5, seed=1, limit=4)
    assert bench.class_counts(capped) == {"rows": 4, "abnormal": 2}


def test_teacher_counts_and_trl_step_seconds(tmp_path: Path) -> None:
    line = "  from the reference file 1,099, from the fallback 35 (this run; resumed rows not counted)"
    assert bench.teacher_counts(line) == {"reference": 1099, "fallback": 35}
    assert bench.teacher_counts("wrote 3 rationales") == {}
    records = [{"step": 1, "wall_time": 100.0, "loss": 0.1}, {"step": 2, "wall_time": 130.5, "loss": 0.2},
               {"step": 3, "wall_time": 150.0, "loss": 0.3}, {"step": 3, "wall_time": 151.0,
                                                               "train_runtime": 51.0}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert bench.trl_step_seconds(tmp_path) == [30.5, 19.5]


def test_rollout_steps_reads_verl_dump(tmp_path: Path) -> None:
    rows = [{"input": "Log: disk failed", "output": "<think>bad</think><answer>abnormal</answer>",
             "gts": "abnormal", "score": 1.2, "step": 3},
            {"input": "Log: all fine", "output": "no answer here", "gts": "normal", "score": -2.7,
             "step": 3}]
    (tmp_path / "3.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    extra = {"disk failed": {"log": "disk failed"}, "all fine": {"log": "all fine"}}
    (step,) = report.rollout_steps(tmp_path, extra, {"preset": "answer_only"})
    assert step["step"] == 3 and step["samples"] == 2
    assert step["unknown_rate"] == 0.5 and step["accuracy"] == 0.5
    assert step["reward/score"] == pytest.approx((1.2 - 2.7) / 2)  # verl's own score
    # recomputed components: format valid (0.1) / invalid (−0.5), correct (1.0) / unknown (−2.2)
    assert step["component/format"] == pytest.approx((0.1 - 0.5) / 2)
    assert step["component/correctness"] == pytest.approx((1.0 - 2.2) / 2)


def real_inputs() -> Path | None:
    from conftest import real_data_dir

    data = real_data_dir()
    needed = (bench.BGL_TEMPLATES, bench.LABEL_PATCH, bench.RLOG)
    return data if all((data / f).is_file() for f in needed) else None


RUNNER_SCRIPT = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from stage_runner import StageContext, exit_on_sigterm
exit_on_sigterm()
ctx = StageContext("s", Path(sys.argv[2]), {}, None)
ctx.run("child", ["bash", "-c", "echo $$ > " + sys.argv[3] + "; exec sleep 300"])
"""


def test_sigterm_kills_the_running_command_tree(tmp_path: Path) -> None:
    # kill <benchmark pid> once left Ray and vLLM running, holding the cores
    import os
    import signal
    import time

    pid_file = tmp_path / "child.pid"
    runner = subprocess.Popen([sys.executable, "-c", RUNNER_SCRIPT, str(ROOT / "benchmarks"),
                               str(tmp_path), str(pid_file)])
    deadline = time.monotonic() + 60
    while not (pid_file.is_file() and pid_file.read_text().strip()):
        assert runner.poll() is None and time.monotonic() < deadline, "the child never started"
        time.sleep(0.05)
    child = int(pid_file.read_text())
    runner.send_signal(signal.SIGTERM)
    assert runner.wait(timeout=60) == 128 + signal.SIGTERM
    deadline = time.monotonic() + 30
    while True:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        assert time.monotonic() < deadline, "the command outlived the benchmark"
        time.sleep(0.05)


@pytest.mark.slow
def test_real_model_grpo_smoke_through_main_ppo(tmp_path: Path) -> None:
    data = real_inputs()
    if data is None:
        pytest.skip("real data (../shared/data or LOGRL_TEST_DATA) absent")
    if not (MODEL / "config.json").is_file():
        pytest.skip("real model absent: run `make real-model` (make test does)")
    work = tmp_path / "work"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "real_templates.py"),
                           "--profile", "smoke", "--work", str(work), "--data", str(data)],
                          capture_output=True, text=True, timeout=1800, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((work / "data" / "stage.json").read_text())["summary"]
    assert summary["rlog_overlap"]["val"] == 0 and summary["rlog_overlap"]["test"] == 0
    assert summary["rlog_overlap"]["train"] > 0
    assert summary["splits"]["test"]["abnormal"] > 0
    steps = report.verl_steps(work / "grpo_s0" / "grpo_metrics.jsonl")
    assert [s["step"] for s in steps] == [1, 2]
    from reward.scorer import get_composite

    g = bench.PROFILES["smoke"]["grpo"]
    composite = get_composite({"preset": "rationanomaly", "class_weights": g["class_weights"],
                               "perplexity_model": str(MODEL)})
    for s in steps:
        assert composite.low - 1e-6 <= s["critic/score/mean"] <= composite.high + 1e-6
    dumped = report.rollout_steps(work / "grpo_s0" / "rollouts")
    assert [d["step"] for d in dumped] == [1, 2]
    assert all(d["samples"] == g["prompts"] * g["n"] for d in dumped)


def test_a_rerun_with_other_settings_keeps_the_earlier_try(tmp_path: Path) -> None:
    # "report every try": a settings change reruns the stage, and the old result stays on record
    from stage_runner import Pipeline, Stage

    def body(lr: float):
        def run(ctx) -> dict:
            (ctx.work / "out.txt").write_text(str(lr))
            return {"metrics": {"f1": lr * 100, "precision": 0.5, "recall": 0.25, "unknown_rate": 0.0}}
        return run

    pipe = Pipeline(tmp_path)
    first = pipe.run(Stage("sft_rule_s0", body(3e-4), {"sft": {"lr": 3e-4, "epochs": 1}}))
    assert pipe.superseded() == []
    pipe.run(Stage("sft_rule_s0", body(3e-4), {"sft": {"lr": 3e-4, "epochs": 1}}))  # skipped
    assert pipe.superseded() == []
    second = pipe.run(Stage("sft_rule_s0", body(1e-3), {"sft": {"lr": 1e-3, "epochs": 2}}))
    assert pipe.superseded() == [first]
    rows = report.superseded_rows(tmp_path, {"sft_rule_s0": second})
    assert [(r["stage"], r["settings_then"], r["f1"]) for r in rows] == \
        [("sft_rule_s0", {"sft.epochs": 1, "sft.lr": 3e-4}, pytest.approx(0.03))]
    assert "sft.epochs=1, sft.lr=0.0003" in report.markdown({
        "stages": [], "seed_groups": {}, "grpo_vs_sft": [], "grpo_runs": {}, "superseded": rows})


def test_a_later_grpo_try_is_its_own_stage_with_its_own_settings(tmp_path: Path) -> None:
    # a try changes only what it names; the first GRPO run keeps the profile's settings
    b = bench.Bench(tmp_path, tmp_path, tmp_path / "model", "full")
    base, tries = bench.PROFILES["full"]["grpo"], bench.PROFILES["full"]["grpo_tries"]
    stages = {s.name: s for s in b.stages()}
    for name, changes in tries.items():
        stage = stages[f"grpo_{name}_s0"]
        assert stage.settings["grpo"] == {**base, **changes}
        assert stage.after == stages["grpo_s0"].after
        overrides = b.grpo_overrides(tmp_path / "start", tmp_path / "ckpt", "/tmp/r", 0,
                                     tmp_path / "m.jsonl", tmp_path / "r", stage.settings["grpo"])
        assert f"actor_rollout_ref.actor.optim.lr={changes['lr']}" in overrides
        assert f"actor_rollout_ref.rollout.n={changes['n']}" in overrides
        assert f"data.train_batch_size={changes['prompts']}" in overrides
        temperature = changes.get("temperature", base["temperature"])
        assert f"actor_rollout_ref.rollout.temperature={temperature}" in overrides
        for label, weight in changes["class_weights"].items():
            assert f"reward.custom_reward_function.reward_kwargs.class_weights.{label}={weight}" \
                in overrides
    assert stages["grpo_s0"].settings["grpo"] == base


def test_run_stages_runs_the_named_ones_and_keeps_the_finished_records(tmp_path: Path) -> None:
    from stage_runner import Pipeline, Stage, StageError, run_stages

    calls: list[str] = []

    def body(name: str, fail: bool = False):
        def run(ctx) -> dict:
            calls.append(name)
            if fail:
                raise StageError(f"{name} failed")
            (ctx.work / "out.txt").write_text(name)
            return {"name": name}
        return run

    pipe = Pipeline(tmp_path)
    stages = [Stage("a", body("a"), {}), Stage("b", body("b"), {}, ("a",))]
    with pytest.raises(SystemExit, match="unknown stage"):
        run_stages(pipe, stages, "a,zzz")
    assert calls == []
    assert set(run_stages(pipe, stages, "a")) == {"a"}
    assert calls == ["a"]
    assert set(run_stages(pipe, stages, "b")) == {"a", "b"}  # a: its finished record, not rerun
    assert calls == ["a", "b"]
    assert run_stages(pipe, [Stage("c", body("c", fail=True), {})], None) is None
