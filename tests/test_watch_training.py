"""The training monitor on a verl console log with gaps, restarts and ANSI noise."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
LOG = REPO / "tests" / "data" / "verl_console_gaps.log"


@pytest.fixture(scope="module")
def watch():
    # Registered in sys.modules before execution: dataclasses look their module up there.
    spec = importlib.util.spec_from_file_location("watch_training", REPO / "scripts" /
                                                  "watch_training.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_parses_gaps_restarts_and_noise(watch) -> None:
    run = watch.load_run(LOG)
    # steps 1-12, restart re-logs 10-12, step 13 truncated, 16-24 and 28-32 present
    assert sorted(run.steps) == [*range(1, 13), *range(16, 25), *range(28, 33)]
    assert run.total_steps == 60
    # the restart logged steps 10-12 again: the later lines win
    lines = [watch.parse_verl_line(x) for x in LOG.read_text().splitlines()]
    step10 = [values for parsed in lines if parsed for s, values in [parsed] if s == 10]
    assert len(step10) == 2 and step10[0] != step10[1]
    assert run.steps[10] == step10[1]
    assert run.steps[1]["critic/score/mean"] == pytest.approx(-0.0062)  # np.float64(...) value
    assert "val-core/bgl/acc/mean@1" in run.steps[30]
    assert all("WARNING" not in k and "\x1b" not in k for k in run.metric_keys())


def test_eta_from_step_timings(watch) -> None:
    run = watch.load_run(LOG)
    eta = watch.estimate(run, window=5)
    recent = [run.steps[s]["timing_s/step"] for s in (28, 29, 30, 31, 32)]
    assert eta.step == 32 and eta.total == 60
    assert eta.seconds_per_step == pytest.approx(np.mean(recent))
    assert eta.seconds_left == pytest.approx(28 * np.mean(recent))
    assert watch.estimate(run, total_steps=32).seconds_left == 0
    assert "ETA unknown" in watch.estimate(watch.Run(steps={1: {"x": 1.0}})).line()


def test_cli_writes_png_with_eta(watch, tmp_path: Path) -> None:
    out = tmp_path / "watch.png"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "watch_training.py"), str(LOG),
                           "--out", str(out), "--window", "5"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rate = np.mean([watch.load_run(LOG).steps[s]["timing_s/step"] for s in range(28, 33)])
    assert f"step 32/60 · {rate:.1f} s/step · ETA {watch.format_duration(28 * rate)}" in proc.stdout
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.stat().st_size > 20_000  # six panels with curves, not an empty canvas


def test_panels_pick_verl_keys(watch, tmp_path: Path) -> None:
    run = watch.load_run(LOG)
    drawn = watch.plot_run(run, watch.estimate(run), tmp_path / "p.png", "t")
    assert drawn == ["critic/score/mean", "val-core/bgl/acc/mean@1", "actor/pg_loss",
                     "response_length/mean", "actor/kl_loss", "actor/entropy", "timing_s/step"]


def test_trl_dict_lines(watch, tmp_path: Path) -> None:
    log = tmp_path / "trl.log"
    log.write_text(
        "Loading weights: 100%|####| 26/26\n"
        "{'loss': '0.01', 'grad_norm': 0.5, 'reward': 0.25, 'kl': 0.001, 'entropy': 1.1, "
        "'completions/mean_length': 40.0, 'epoch': 0.1}\n"
        "noise line\n"
        '{"loss": 0.02, "reward": 0.5, "kl": 0.002, "entropy": 1.0, "epoch": 0.2}\n'
        "{'train_runtime': 12.5, 'train_loss': 0.1, 'epoch': 1.0}\n"
    )
    run = watch.load_run(log)
    assert sorted(run.steps) == [1, 2]
    assert run.series("reward")[1].tolist() == [0.25, 0.5]
    assert run.steps[1]["loss"] == 0.01
    drawn = watch.plot_run(run, watch.estimate(run, total_steps=10), tmp_path / "t.png", "trl")
    assert drawn == ["reward", "loss", "completions/mean_length", "kl", "entropy"]


def test_tensorboard_events(watch, tmp_path: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(tmp_path / "tb"))
    for step in range(1, 6):
        writer.add_scalar("critic/score/mean", 0.1 * step, step)
        writer.add_scalar("timing_s/step", 2.0, step)
    writer.close()
    run = watch.load_run(tmp_path / "tb")
    assert sorted(run.steps) == [1, 2, 3, 4, 5]
    assert run.series("critic/score/mean")[1] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    assert watch.estimate(run, total_steps=10).seconds_left == pytest.approx(10.0)


def test_gaussian_smoothing_numpy_kernel(watch) -> None:
    values = np.array([0.0, 0.0, 1.0, 0.0, 0.0, np.nan, 0.0])
    smooth = watch.gaussian_smooth(values, 1.0)
    assert smooth.shape == values.shape and np.isfinite(smooth).all()
    assert smooth[2] < 1.0 and smooth[1] > 0.0  # the spike spreads to its neighbours
    assert smooth[:5].sum() == pytest.approx(1.0, abs=0.1)  # and keeps (nearly) its mass


def test_missing_file_is_one_line_error(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "watch_training.py"),
                           str(tmp_path / "none.log")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error:") and "Traceback" not in proc.stderr


# ---------------------------------------------------------------------------------------------
# Step numbers from structured sources; --follow ends with the run (issue 11, item 5.1 and 5.4)
# ---------------------------------------------------------------------------------------------

TRL_LOSS = {10: 5.25, 20: 3.5, 30: 2.125, 40: 1.5, 50: 1.0}  # step -> loss, logging_steps=10


def trl_console_log(total: int = 50) -> str:
    r"""A TRL/transformers console log as the demo's ``sft.log`` holds it.

    tqdm redraws its bar with ``\r``; before each logged dict the bar is cleared with spaces; the
    run ends with the ``train_runtime`` summary and our CLI's ``final model:`` line.
    """
    text = ["Loading weights: 100%|##########| 26/26 [00:00<00:00, 48792.80it/s]\n",
            "Tokenizing train dataset:  87%|####| 215/246 [00:00<00:00, 2133.94 examples/s]\n",
            f"\r  0%|          | 0/{total} [00:00<?, ?it/s]"]
    for step in range(2, total + 1, 2):
        text.append(f"\r {step * 100 // total:2d}%|#         | {step}/{total} [00:00<00:18, 15.55it/s]")
        if step in TRL_LOSS:
            text.append("\r" + " " * 48 + "\r")
            text.append(f"{{'loss': '{TRL_LOSS[step]}', 'grad_norm': '0.5', 'entropy': '1.0', "
                        f"'mean_token_accuracy': '0.{step}', 'epoch': '{step / 31:.4g}'}}\n")
    text.append("\rWriting model shards: 100%|##########| 1/1 [00:00<00:00, 583.76it/s]\n")
    text.append("\r" + " " * 49 + "\r{'train_runtime': '18.65', 'train_samples_per_second': "
                "'128.7', 'train_loss': '0.7747', 'epoch': '1.613'}\n")
    text.append("final model: /somewhere/sft/final\n")
    return "".join(text)


def test_trl_console_log_steps_from_progress_bar(watch, tmp_path: Path) -> None:
    """logging_steps=10: the dicts belong to steps 10, 20, …, not 1, 2, …; the bar gives the total."""
    log = tmp_path / "sft.log"
    log.write_text(trl_console_log(total=50))
    run = watch.load_run(log)
    assert sorted(run.steps) == [10, 20, 30, 40, 50]
    assert run.total_steps == 50
    assert run.finished
    assert run.series("loss")[1].tolist() == [TRL_LOSS[s] for s in (10, 20, 30, 40, 50)]
    eta = watch.estimate(run)
    assert (eta.step, eta.total) == (50, 50)


def test_sft_loss_is_plotted(watch, tmp_path: Path) -> None:
    log = tmp_path / "sft.log"
    log.write_text(trl_console_log(total=50))
    run = watch.load_run(log)
    drawn = watch.plot_run(run, watch.estimate(run), tmp_path / "sft.png", "sft")
    assert "loss" in drawn
    assert "mean_token_accuracy" in drawn


def local_run_folder(root: Path, max_steps: int = 50, finished: bool = True) -> Path:
    """A local-backend output folder: local_config.json and metrics.jsonl (our callback's format)."""
    import json

    root.mkdir(parents=True, exist_ok=True)
    (root / "local_config.json").write_text(json.dumps({"trainer": {"max_steps": max_steps}}))
    rows = [{"step": s, "loss": loss, "epoch": s / 31} for s, loss in TRL_LOSS.items()
            if s <= max_steps]
    if finished:
        rows.append({"step": max(TRL_LOSS), "train_runtime": 18.6, "train_loss": 0.77})
    (root / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_local_run_folder_and_metrics_jsonl(watch, tmp_path: Path) -> None:
    folder = local_run_folder(tmp_path / "sft", max_steps=60, finished=True)
    for source in (folder, folder / "metrics.jsonl"):
        run = watch.load_run(source)
        assert sorted(run.steps) == [10, 20, 30, 40, 50]
        assert run.series("loss")[1].tolist() == list(TRL_LOSS.values())
        assert run.total_steps == 60  # local_config.json's trainer.max_steps
        assert run.finished  # the train_runtime record: TRL's end-of-training summary
        assert "train_runtime" not in run.metric_keys()


def test_console_log_prefers_the_metrics_file_it_names(watch, tmp_path: Path) -> None:
    """The local backend logs where its metrics.jsonl is; that file wins over console parsing."""
    folder = local_run_folder(tmp_path / "grpo", max_steps=50, finished=False)
    log = tmp_path / "grpo.log"
    log.write_text(f"INFO verl_recipes.local.common: metrics log: {folder / 'metrics.jsonl'}\n"
                   "{'loss': '9.0', 'epoch': '0.1'}\n")
    run = watch.load_run(log)
    assert sorted(run.steps) == [10, 20, 30, 40, 50]
    assert run.steps[10]["loss"] == TRL_LOSS[10]


def test_trainer_state_json(watch, tmp_path: Path) -> None:
    import json

    history = [{"step": s, "loss": loss, "epoch": s / 31} for s, loss in TRL_LOSS.items()]
    for step in (30, 50):
        ckpt = tmp_path / "run" / f"checkpoint-{step}"
        ckpt.mkdir(parents=True)
        (ckpt / "trainer_state.json").write_text(json.dumps({
            "global_step": step, "max_steps": 50, "logging_steps": 10,
            "log_history": [h for h in history if h["step"] <= step],
            "stateful_callbacks": {"TrainerControl": {"args": {"should_training_stop": step == 50}}},
        }))
    run = watch.load_run(tmp_path / "run")  # the newest checkpoint's state
    assert sorted(run.steps) == [10, 20, 30, 40, 50]
    assert run.total_steps == 50 and run.finished
    run = watch.load_run(tmp_path / "run" / "checkpoint-30" / "trainer_state.json")
    assert sorted(run.steps) == [10, 20, 30] and not run.finished


VERL_ROWS = [(s, {"critic/score/mean": 0.1 * s, "timing_s/step": 2.0, "training/global_step": s})
             for s in range(1, 6)]


def verl_file_log(path: Path) -> Path:
    """verl's file logger output: one ``{"step": N, "data": {...}}`` line per logged step."""
    import json

    path.write_text("".join(json.dumps({"step": s, "data": d}) + "\n" for s, d in VERL_ROWS)
                    + json.dumps({"step": 5, "data": {"val-core/bgl/acc/mean@1": 0.75}}) + "\n")
    return path


def test_verl_file_logger_jsonl(watch, tmp_path: Path) -> None:
    run = watch.load_run(verl_file_log(tmp_path / "grpo_metrics.jsonl"))
    assert sorted(run.steps) == [1, 2, 3, 4, 5]
    assert run.series("critic/score/mean")[1] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    assert run.steps[5]["val-core/bgl/acc/mean@1"] == 0.75  # merged into the step, not replacing it
    assert run.steps[5]["critic/score/mean"] == pytest.approx(0.5)
    assert watch.estimate(run, total_steps=10).seconds_left == pytest.approx(10.0)


def test_verl_console_log_names_its_file_logger(watch, tmp_path: Path) -> None:
    jsonl = verl_file_log(tmp_path / "grpo_metrics.jsonl")
    log = tmp_path / "grpo.log"
    log.write_text(f"(TaskRunner pid=7) Creating file logger at {jsonl}\n"
                   "(TaskRunner pid=7) Total training steps: 5\n"
                   "(TaskRunner pid=7) step:1 - critic/score/mean:9.0\n"
                   "(TaskRunner pid=7) Final validation metrics: {'val-core/bgl/acc/mean@1': 0.75}\n")
    run = watch.load_run(log)
    assert sorted(run.steps) == [1, 2, 3, 4, 5]
    assert run.steps[1]["critic/score/mean"] == pytest.approx(0.1)  # the file, not the console
    assert run.total_steps == 5 and run.finished


def _watch_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "scripts" / "watch_training.py"), *args],
                          capture_output=True, text=True, timeout=timeout)


def test_follow_ends_when_the_run_has_finished(tmp_path: Path) -> None:
    """A finished run whose total is unknown (console log without a bar) still ends --follow."""
    log = tmp_path / "sft.log"
    log.write_text("{'loss': '1.0', 'epoch': '0.5'}\n{'loss': '0.5', 'epoch': '1.0'}\n"
                   "{'train_runtime': '3.0', 'train_loss': '0.75', 'epoch': '1.0'}\n")
    proc = _watch_cli(str(log), "--out", str(tmp_path / "a.png"), "--follow", "0.2")
    assert proc.returncode == 0, proc.stderr
    assert "finished" in proc.stdout

    log.write_text(trl_console_log(total=50))  # the demo's sft.log shape: bar total reached
    proc = _watch_cli(str(log), "--out", str(tmp_path / "b.png"), "--follow", "0.2")
    assert proc.returncode == 0, proc.stderr
    assert "step 50/50" in proc.stdout


def test_follow_ends_when_the_log_goes_quiet(tmp_path: Path) -> None:
    """A run that died without a final record: --follow stops after --idle-exit quiet seconds."""
    folder = local_run_folder(tmp_path / "grpo", max_steps=500, finished=False)
    proc = _watch_cli(str(folder), "--out", str(tmp_path / "c.png"), "--follow", "0.2",
                      "--idle-exit", "1")
    assert proc.returncode == 0, proc.stderr
    assert "no new records" in proc.stdout + proc.stderr


def test_png_mode_is_what_open_gives(watch, tmp_path: Path) -> None:
    """The PNG is readable by others like any file the user writes (umask), not 0600."""
    run = watch.load_run(LOG)
    out = tmp_path / "p.png"
    watch.plot_run(run, watch.estimate(run), out, "t")
    plain = tmp_path / "plain"
    with open(plain, "w"):
        pass
    assert out.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777
    assert out.stat().st_mode & 0o044  # group/others can read under the usual umask 022


def test_local_backend_writes_what_the_monitor_reads(watch, tiny_chat_model: Path, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """start_run logs where metrics.jsonl is; the callback's records carry step and wall time."""
    import logging
    from types import SimpleNamespace

    from verl_recipes.local import common
    from verl_recipes.local.chat.config import build_config

    out = tmp_path / "run"
    cfg = build_config("sft", [f"model={tiny_chat_model}", f"trainer.output_dir={out}",
                               "trainer.max_steps=40"])
    with caplog.at_level(logging.INFO, logger="verl_recipes.local.common"):
        common.start_run(cfg)
    callback = common.metrics_callback(out)
    for step in (10, 20, 30):
        state = SimpleNamespace(global_step=step, is_world_process_zero=True)
        callback.on_log(None, state, None, logs={"loss": 1.0 / step})
    console = tmp_path / "sft.log"
    console.write_text("".join(f"INFO verl_recipes.local.common: {r.getMessage()}\n"
                               for r in caplog.records))
    run = watch.load_run(console)
    assert sorted(run.steps) == [10, 20, 30]
    assert run.steps[20]["loss"] == pytest.approx(1 / 20)
    assert run.total_steps == 40 and not run.finished
    assert set(run.wall) == {10, 20, 30}
