#!/usr/bin/env python
"""Plot a training run's curves and estimate the time left.

Reads one of:

* a VeRL console log (``step:N - key:value - …`` lines from verl's console logger; ANSI colour
  codes and Ray's ``(TaskRunner pid=…)`` prefixes are stripped, lines that do not parse are
  skipped, and when a restart logs a step again the later occurrence wins; ``Total training
  steps: N`` sets the total);
* the local backend's log (TRL/transformers print one dict per logging step,
  ``{'loss': …, 'reward': …, 'epoch': …}``; JSON lines work too; steps are the ``step`` key when
  present, else the line order);
* TensorBoard event files (a folder or an ``events.out.tfevents.*`` file).

Usage::

    python scripts/watch_training.py logs/grpo_bgl.log --out logs/grpo_bgl.png --total-steps 500
    python scripts/watch_training.py outputs/tensorboard/grpo --out grpo.png --follow 60

The PNG holds reward mean (raw and Gaussian-smoothed), accuracy, response length, KL, entropy and
step time, with a status line ``step s/T · x s/step · ETA …``.
"""

from __future__ import annotations

import argparse
import ast
import json
import logging
import math
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

logger = logging.getLogger("watch_training")

ANSI_RE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
RAY_PREFIX_RE = re.compile(r"^\s*\([\w.:-]+(?:\s+pid=\d+)?(?:,\s*ip=[\w.:-]+)?\)\s*")
VERL_STEP_RE = re.compile(r"(?:^|\s)step:(\d+)\s+-\s+(.*)$")
TOTAL_STEPS_RE = re.compile(r"Total training steps:\s*(\d+)")
NUMBER_WRAPPER_RE = re.compile(r"^(?:np\.|numpy\.)?\w*\((.*)\)$")
STEP_KEYS: tuple[str, ...] = ("step", "global_step", "training/global_step")
STEP_TIME_KEYS: tuple[str, ...] = ("timing_s/step", "train/step_time", "step_time")
TOTAL_KEYS: tuple[str, ...] = ("training/total_steps", "total_steps", "max_steps")

# One table: panel title → (key patterns in priority order, smooth?). The first pattern that
# matches any logged key wins, and every key it matches is drawn (e.g. one line per source).
PANELS: tuple[tuple[str, tuple[str, ...], bool], ...] = (
    ("reward (mean)", (r"^critic/score/mean$", r"^critic/rewards/mean$", r"^reward$",
                       r"^train/reward$", r"^rewards/[^/]+/mean$"), True),
    ("accuracy", (r"^(reward|train|critic)/acc(/mean)?$", r"^acc(/mean)?$",
                  r"^val-core/[^/]+/acc/mean@\d+$", r"^rewards/[^/]*acc[^/]*/mean$",
                  r"(^|/)acc(uracy)?(/mean)?$"), True),
    ("response length", (r"^response_length/mean$", r"^completions/mean_length$"), False),
    ("KL", (r"^actor/kl_loss$", r"^actor/reward_kl_penalty$", r"^actor/ppo_kl$", r"^kl$"), False),
    ("entropy", (r"^actor/entropy$", r"^entropy$"), False),
    ("step time (s)", (r"^timing_s/step$", r"^train/step_time$", r"^step_time$"), False),
)
MAX_SERIES = 4


@dataclass
class Run:
    """Metrics of one run: step → {key: value}, plus optional wall times and total steps."""

    steps: dict[int, dict[str, float]] = field(default_factory=dict)
    wall: dict[int, float] = field(default_factory=dict)
    total_steps: int | None = None

    def record(self, step: int, values: dict[str, float]) -> None:
        """Store a step's values; a later record of the same step replaces the earlier one."""
        self.steps[step] = values

    def metric_keys(self) -> list[str]:
        """All metric keys seen."""
        return sorted({k for v in self.steps.values() for k in v})

    def series(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """Steps and values of one key, sorted by step (steps lacking the key are gaps)."""
        pairs = sorted((s, v[key]) for s, v in self.steps.items() if key in v)
        if not pairs:
            return np.array([]), np.array([])
        steps, values = zip(*pairs, strict=True)
        return np.asarray(steps, dtype=float), np.asarray(values, dtype=float)


def clean_line(line: str) -> str:
    """Strip ANSI codes and a Ray actor prefix.

    >>> clean_line("\\x1b[36m(TaskRunner pid=42)\\x1b[0m step:3 - a:1")
    'step:3 - a:1'
    """
    return RAY_PREFIX_RE.sub("", ANSI_RE.sub("", line)).strip()


def parse_number(text: str) -> float | None:
    """Parse a logged number (``0.5``, ``nan``, ``np.float64(0.5)``, ``tensor(0.5)``).

    >>> parse_number("np.float64(0.25)"), parse_number("3"), parse_number("abc")
    (0.25, 3.0, None)
    """
    text = text.strip()
    wrapped = NUMBER_WRAPPER_RE.match(text)
    if wrapped:
        text = wrapped.group(1).split(",")[0].strip()
    try:
        return float(text)
    except ValueError:
        return None


def parse_verl_line(line: str) -> tuple[int, dict[str, float]] | None:
    """Parse one verl console line ``step:N - key:value - …``; ``None`` when it is not one.

    >>> parse_verl_line("(TaskRunner pid=7) step:2 - critic/score/mean:0.5 - x:np.float64(1.0)")
    (2, {'critic/score/mean': 0.5, 'x': 1.0})
    """
    match = VERL_STEP_RE.search(clean_line(line))
    if not match:
        return None
    values: dict[str, float] = {}
    for pair in match.group(2).split(" - "):
        key, sep, raw = pair.strip().rpartition(":")
        number = parse_number(raw) if sep else None
        if key and number is not None:
            values[key] = number
    return int(match.group(1)), values


def parse_dict_line(line: str) -> dict[str, float] | None:
    """Parse a dict/JSON log line into its numeric entries; ``None`` when it is not one.

    >>> parse_dict_line("{'loss': 0.5, 'reward': '0.25', 'note': 'x'}")
    {'loss': 0.5, 'reward': 0.25}
    """
    text = clean_line(line)
    start = text.find("{")
    if start < 0 or not text.endswith("}"):
        return None
    body = text[start:]
    try:
        data = json.loads(body)
    except json.JSONDecodeError:
        try:
            data = ast.literal_eval(body)
        except (ValueError, SyntaxError):
            return None
    if not isinstance(data, dict):
        return None
    out = {}
    for key, value in data.items():
        number = parse_number(str(value)) if not isinstance(value, bool) else None
        if number is not None:
            out[str(key)] = number
    return out


def parse_text_log(lines: Iterable[str]) -> Run:
    """Parse a console log: verl step lines, or else dict/JSON lines (TRL, local backend)."""
    run = Run()
    dict_step = 0
    for line in lines:
        total = TOTAL_STEPS_RE.search(line)
        if total:
            run.total_steps = int(total.group(1))
            continue
        verl = parse_verl_line(line)
        if verl is not None:
            if verl[1]:  # a truncated line with no complete value is skipped
                run.record(*verl)
            continue
        values = parse_dict_line(line)
        if not values or "train_runtime" in values:  # the trainer's final summary line
            continue
        step = next((int(values[k]) for k in STEP_KEYS if k in values), None)
        dict_step = step if step is not None else dict_step + 1
        run.record(dict_step, values)
    for values in run.steps.values():
        total = next((values[k] for k in TOTAL_KEYS if k in values), None)
        if total and not run.total_steps:
            run.total_steps = int(total)
    return run


def event_files(path: Path) -> list[Path]:
    """TensorBoard event files at ``path`` (a file or a folder searched recursively)."""
    if path.is_file():
        return [path]
    return sorted(path.rglob("events.out.tfevents.*"))


def parse_tensorboard(path: Path) -> Run:
    """Read every scalar from TensorBoard event files; wall times give step timings."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = Run()
    for file in event_files(path):
        acc = EventAccumulator(str(file), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags().get("scalars", []):
            for event in acc.Scalars(tag):
                run.steps.setdefault(int(event.step), {})[tag] = float(event.value)
                run.wall[int(event.step)] = float(event.wall_time)
    return run


def load_run(path: Path) -> Run:
    """Load a run from a console log file or TensorBoard event files.

    Raises:
        FileNotFoundError: When ``path`` does not exist.
    """
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if path.is_dir() or path.name.startswith("events.out.tfevents"):
        return parse_tensorboard(path)
    with path.open(encoding="utf-8", errors="replace") as handle:
        return parse_text_log(handle)


def step_seconds(run: Run, window: int = 20) -> float | None:
    """Mean seconds per step over the last ``window`` steps.

    Uses a logged step time (``timing_s/step``) when present, else wall-time differences between
    consecutive logged steps (TensorBoard), divided by the step gap.
    """
    for key in STEP_TIME_KEYS:
        _, values = run.series(key)
        values = values[np.isfinite(values)]
        if len(values):
            return float(np.mean(values[-window:]))
    if len(run.wall) >= 2:
        steps = np.array(sorted(run.wall), dtype=float)[-window - 1:]
        walls = np.array([run.wall[int(s)] for s in steps])
        rates = np.diff(walls) / np.diff(steps)
        rates = rates[rates > 0]
        if len(rates):
            return float(np.mean(rates))
    return None


@dataclass(frozen=True)
class Eta:
    """Progress estimate."""

    step: int | None
    total: int | None
    seconds_per_step: float | None
    seconds_left: float | None

    def line(self) -> str:
        """One status line, e.g. ``step 40/100 · 12.0 s/step · ETA 12m 00s``."""
        step = "?" if self.step is None else str(self.step)
        total = "?" if self.total is None else str(self.total)
        rate = "? s/step" if self.seconds_per_step is None else f"{self.seconds_per_step:.1f} s/step"
        if self.seconds_left is None:
            eta = "ETA unknown" + ("" if self.total else " (give --total-steps)")
        else:
            finish = time.strftime("%Y-%m-%d %H:%M", time.localtime(time.time() + self.seconds_left))
            eta = f"ETA {format_duration(self.seconds_left)} (≈ {finish})"
        return f"step {step}/{total} · {rate} · {eta}"


def format_duration(seconds: float) -> str:
    """Human duration.

    >>> format_duration(3725), format_duration(59)
    ('1h 02m', '59s')
    """
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def estimate(run: Run, total_steps: int | None = None, window: int = 20) -> Eta:
    """Estimate time left from step timings and the total number of steps."""
    last = max(run.steps) if run.steps else None
    total = total_steps or run.total_steps
    rate = step_seconds(run, window)
    left = None
    if last is not None and total and rate is not None:
        left = max(0, total - last) * rate
    return Eta(last, total, rate, left)


def gaussian_smooth(values: Sequence[float], sigma: float) -> np.ndarray:
    """Gaussian smoothing over points (scipy when installed, else a numpy kernel); NaNs skipped.

    >>> gaussian_smooth([1.0, 1.0, 1.0], 2.0).round(6).tolist()
    [1.0, 1.0, 1.0]
    """
    data = np.asarray(values, dtype=float)
    if sigma <= 0 or len(data) < 2:
        return data
    try:
        from scipy.ndimage import gaussian_filter1d
    except ImportError:
        gaussian_filter1d = None
    finite = np.isfinite(data)
    if gaussian_filter1d is not None and finite.all():
        return gaussian_filter1d(data, sigma, mode="nearest")
    radius = max(1, math.ceil(3 * sigma))
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    padded = np.pad(np.where(finite, data, 0.0), radius, mode="edge")
    weights = np.pad(finite.astype(float), radius, mode="edge")
    num = np.convolve(padded, kernel, mode="valid")
    den = np.convolve(weights, kernel, mode="valid")
    return np.divide(num, den, out=np.full_like(num, np.nan), where=den > 0)


def panel_keys(keys: Sequence[str], patterns: Sequence[str]) -> list[str]:
    """Keys matched by the first pattern that matches anything (at most :data:`MAX_SERIES`).

    >>> panel_keys(["critic/rewards/mean", "critic/score/mean"], [r"^critic/score/mean$"])
    ['critic/score/mean']
    """
    for pattern in patterns:
        hits = [k for k in keys if re.search(pattern, k)]
        if hits:
            return hits[:MAX_SERIES]
    return []


def break_gaps(steps: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Insert a NaN where the step gap exceeds twice the usual one, so plots show the gap.

    >>> break_gaps(np.array([1.0, 2, 3, 9]), np.array([1.0, 1, 1, 1]))[1].tolist()
    [1.0, 1.0, 1.0, nan, 1.0]
    """
    if len(steps) < 3:
        return steps, values
    gaps = np.diff(steps)
    cut = np.flatnonzero(gaps > 2 * np.median(gaps)) + 1
    return np.insert(steps, cut, np.nan), np.insert(values, cut, np.nan)


def plot_run(run: Run, eta: Eta, out: Path, title: str, sigma: float = 2.0) -> list[str]:
    """Draw the panels to ``out`` (PNG, written atomically); return the keys drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = run.metric_keys()
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    drawn: list[str] = []
    for ax, (name, patterns, smooth) in zip(axes.flat, PANELS, strict=True):
        chosen = panel_keys(keys, patterns)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if not chosen:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes,
                    color="grey")
            continue
        for key in chosen:
            steps, values = run.series(key)
            line = ax.plot(*break_gaps(steps, values), marker=".", lw=0.8,
                           alpha=0.45 if smooth else 0.9, label=key)[0]
            if smooth:
                ax.plot(*break_gaps(steps, gaussian_smooth(values, sigma)), lw=2,
                        color=line.get_color(), label=f"{key} (σ={sigma:g})")
            drawn.append(key)
        if eta.step is not None:
            ax.axvline(eta.step, ls="--", lw=0.8, color="grey")
        if eta.total:
            ax.set_xlim(left=0, right=max(eta.total, eta.step or 0) * 1.02)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(f"{title}\n{eta.line()}", fontsize=11)
    fig.tight_layout()
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=100, format="png")
        os.replace(tmp, out)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)
    return drawn


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("source", type=Path, help="console log, or TensorBoard folder/event file")
    p.add_argument("--out", type=Path, default=None, help="PNG to write (default: <source>.png)")
    p.add_argument("--total-steps", type=int, default=None,
                   help="total training steps (default: from the log when it says)")
    p.add_argument("--sigma", type=float, default=2.0, help="Gaussian smoothing width in points")
    p.add_argument("--window", type=int, default=20, help="steps averaged for the step time")
    p.add_argument("--follow", type=float, default=None, metavar="SECONDS",
                   help="redraw every SECONDS until the run reaches its total (Ctrl-C stops)")
    return p


def refresh(args: argparse.Namespace, out: Path) -> Eta:
    """Load, plot and report once."""
    run = load_run(args.source)
    if not run.steps:
        raise ValueError(f"no training steps found in {args.source}")
    eta = estimate(run, args.total_steps, args.window)
    plot_run(run, eta, out, title=args.source.name, sigma=args.sigma)
    print(f"{eta.line()} → {out}", flush=True)
    return eta


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = args.out or args.source.with_name(args.source.name.rstrip("/") + ".png")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        while True:
            eta = refresh(args, out)
            finished = eta.total is not None and eta.step is not None and eta.step >= eta.total
            if args.follow is None or finished:
                return 0
            time.sleep(args.follow)
    except KeyboardInterrupt:
        return 0
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
