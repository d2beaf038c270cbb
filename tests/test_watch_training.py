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
    assert drawn == ["critic/score/mean", "val-core/bgl/acc/mean@1", "response_length/mean",
                     "actor/kl_loss", "actor/entropy", "timing_s/step"]


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
    assert drawn == ["reward", "completions/mean_length", "kl", "entropy"]


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
