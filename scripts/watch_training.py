#!/usr/bin/env python
"""Plot a training run's curves and estimate the time left.

Every metric is keyed by the trainer's own step number. Structured sources are preferred:

* the local backend's ``metrics.jsonl`` (one ``{"step": N, …}`` record per TRL log event, from
  ``verl_recipes.local``): give the file or the run folder (``outputs/demo/sft``); the total is
  ``trainer.max_steps`` of the ``local_config.json`` beside it (else a checkpoint's
  ``trainer_state.json``);
* TRL/transformers ``trainer_state.json`` (its ``log_history``; a run folder without
  ``metrics.jsonl`` uses the newest ``checkpoint-N/trainer_state.json``); ``max_steps`` is the total;
* verl's file logger (``trainer.logger=[console,file]``: one ``{"step": N, "data": {…}}`` line per
  log call, at ``VERL_FILE_LOGGER_PATH``); records of one step are merged (verl logs validation
  metrics as a second record of the step);
* TensorBoard event files (a folder or an ``events.out.tfevents.*`` file).

A console log is read as a fallback, and first searched for the structured source it names
(verl's ``Creating file logger at PATH``, the local backend's ``metrics log: PATH``), which is then
read instead, the console supplying only the total and the end of the run. Console parsing:
verl's ``step:N - key:value - …`` lines (ANSI colour codes and Ray's ``(TaskRunner pid=…)``
prefixes stripped, lines that do not parse skipped; ``Total training steps: N`` is the total);
TRL's dict lines ``{'loss': …, 'epoch': …}``, each given the step and total of the trainer's
progress bar drawn just before it (``10/300 [00:00<00:18, …]``), else a ``step`` key, else the
line order. When a record logs a key its step already has (a restart re-logging the step), the
later record replaces the step; otherwise it is merged into it.

The run has **finished** when (checked in this order):

1. a trainer's end-of-run record is the last one: TRL's ``train_runtime`` summary (console or
   ``metrics.jsonl``), ``should_training_stop`` in ``trainer_state.json``, verl's
   ``Final validation metrics:`` console line (both verl trainers print it after their last
   step) or the local backend's ``final model:`` line;
2. the last logged step reached the total (``--total-steps``, else the source's own).

``--follow SECONDS`` redraws until the run has finished, or until no new record has arrived for
``--idle-exit`` seconds (default 3600; a crashed or killed trainer writes no end record); Ctrl-C
also stops it.

Usage::

    python scripts/watch_training.py outputs/demo/sft --out sft.png          # local run folder
    python scripts/watch_training.py logs/grpo_bgl.log --out logs/grpo_bgl.png --total-steps 500
    python scripts/watch_training.py outputs/e2e/grpo_metrics.jsonl --total-steps 3
    python scripts/watch_training.py outputs/tensorboard/grpo --out grpo.png --follow 60

The PNG holds reward mean (raw and Gaussian-smoothed), accuracy, loss, response length, KL,
entropy and step time, with a status line ``step s/T · x s/step · ETA …`` (``finished`` at the end).
"""

from __future__ import annotations

import argparse
import ast
import json
import logging
import math
import re
import sys
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
# tqdm bar without a description (the HF Trainer's): "  3%|▎   | 10/300 [00:00<00:18, 15.5it/s]"
PROGRESS_RE = re.compile(r"^\d+%\|[^|]*\|\s*(\d+)/(\d+)\s*\[(?:(\d+):)?(\d+):(\d+)")
# Structured sources a console log names: verl's file logger, the local backend's metrics.jsonl.
NAMED_SOURCE_RES: tuple[re.Pattern[str], ...] = (
    re.compile(r"Creating file logger at (.+?)\s*$"),
    re.compile(r"metrics log: (.+?)\s*$"),
)
# Console lines printed once a run is over: verl's PPO and SFT trainers after their last step,
# the local backend's CLI after saving.
FINISH_LINE_RES: tuple[re.Pattern[str], ...] = (
    re.compile(r"Final validation metrics:"),
    re.compile(r"^final model: "),
)
STEP_KEYS: tuple[str, ...] = ("step", "global_step", "training/global_step")
STEP_TIME_KEYS: tuple[str, ...] = ("timing_s/step", "train/step_time", "step_time")
TOTAL_KEYS: tuple[str, ...] = ("training/total_steps", "total_steps", "max_steps")
# A record with this key is TRL's end-of-training summary (runtime, mean loss), not a step.
SUMMARY_KEY = "train_runtime"
WALL_KEY = "wall_time"  # seconds since the epoch, added by the local backend's metrics callback
LOCAL_METRICS = "metrics.jsonl"
LOCAL_CONFIG = "local_config.json"
TRAINER_STATE = "trainer_state.json"
DEFAULT_IDLE_EXIT = 3600.0

# One table: panel title → (key patterns in priority order, smooth?). The first pattern that
# matches any logged key wins, and every key it matches is drawn (e.g. one line per source).
PANELS: tuple[tuple[str, tuple[str, ...], bool], ...] = (
    ("reward (mean)", (r"^critic/score/mean$", r"^critic/rewards/mean$", r"^reward$",
                       r"^train/reward$", r"^rewards/[^/]+/mean$"), True),
    ("accuracy", (r"^(reward|train|critic)/acc(/mean)?$", r"^acc(/mean)?$",
                  r"^val-core/[^/]+/acc/mean@\d+$", r"^rewards/[^/]*acc[^/]*/mean$",
                  r"(^|/)acc(uracy)?(/mean)?$", r"^mean_token_accuracy$"), True),
    ("loss", (r"^(loss|eval_loss)$", r"^(train|val)/loss$", r"^actor/pg_loss$"), True),
    ("response length", (r"^response_length/mean$", r"^completions/mean_length$"), False),
    ("KL", (r"^actor/kl_loss$", r"^actor/reward_kl_penalty$", r"^actor/ppo_kl$", r"^kl$"), False),
    ("entropy", (r"^actor/entropy$", r"^entropy$"), False),
    ("step time (s)", (r"^timing_s/step$", r"^train/step_time$", r"^step_time$"), False),
)
MAX_SERIES = 4


@dataclass
class Run:
    """Metrics of one run: step → {key: value}, wall times, total steps, and whether it finished."""

    steps: dict[int, dict[str, float]] = field(default_factory=dict)
    wall: dict[int, float] = field(default_factory=dict)
    total_steps: int | None = None
    finished: bool = False
    named_sources: list[Path] = field(default_factory=list)

    def record(self, step: int, values: dict[str, float]) -> None:
        """Store a step's values, merged into what the step has.

        A record that logs a key the step already has (a restart logging the step again)
        replaces the step's values instead. A new record means the run goes on: ``finished``
        is cleared.
        """
        old = self.steps.get(step)
        self.steps[step] = {**old, **values} if old and not old.keys() & values.keys() else values
        self.finished = False

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
    return numeric_entries(data)


def numeric_entries(data: dict[str, object]) -> dict[str, float]:
    """The entries of a logged record that are numbers (or number strings); booleans dropped.

    >>> numeric_entries({"loss": "0.5", "lr": 1e-3, "note": "x", "ok": True})
    {'loss': 0.5, 'lr': 0.001}
    """
    out: dict[str, float] = {}
    for key, value in data.items():
        number = parse_number(str(value)) if not isinstance(value, bool) else None
        if number is not None:
            out[str(key)] = number
    return out


def console_event(run: Run, line: str) -> bool:
    """Apply a cleaned console line that states the total, names a source or ends the run.

    Returns:
        Whether the line was one of those (and so holds no metrics).
    """
    total = TOTAL_STEPS_RE.search(line)
    if total:
        run.total_steps = int(total.group(1))
        return True
    for pattern in NAMED_SOURCE_RES:
        named = pattern.search(line)
        if named:
            run.named_sources.append(Path(named.group(1)))
            return True
    if any(pattern.search(line) for pattern in FINISH_LINE_RES):
        run.finished = True
        return True
    return False


def trainer_bar(line: str, bar: tuple[int, int, float] | None) -> tuple[int, int, float] | None:
    """Update the trainer's progress ``(step, total, elapsed seconds)`` from a tqdm bar line.

    The first bar without a description sets the total; later bars with another total (an
    evaluation loop's) are ignored.

    >>> trainer_bar(" 3%|▎   | 10/300 [01:02<00:18, 15.55it/s]", None)
    (10, 300, 62.0)
    """
    match = PROGRESS_RE.match(line.strip())
    if not match or (bar is not None and int(match.group(2)) != bar[1]):
        return bar
    hours, minutes, seconds = (int(match.group(i) or 0) for i in (3, 4, 5))
    return int(match.group(1)), int(match.group(2)), float(hours * 3600 + minutes * 60 + seconds)


def parse_text_log(lines: Iterable[str]) -> Run:
    """Parse a console log: verl step lines, or else dict/JSON lines (TRL, local backend).

    A TRL dict line takes its step from the trainer's progress bar drawn before it (the bar's
    total is the run's total, its elapsed time the step's wall time); without a bar, from a
    ``step`` key, else from the line order. TRL's ``train_runtime`` summary, verl's ``Final
    validation metrics:`` and the local backend's ``final model:`` line mark the run finished.
    """
    run = Run()
    bar: tuple[int, int, float] | None = None
    dict_step = 0
    for raw in lines:
        line = clean_line(raw)
        if console_event(run, line):
            continue
        if PROGRESS_RE.match(line):
            bar = trainer_bar(line, bar)
            continue
        verl = parse_verl_line(line)
        if verl is not None:
            if verl[1]:  # a truncated line with no complete value is skipped
                run.record(*verl)
            continue
        values = parse_dict_line(line)
        if not values:
            continue
        if SUMMARY_KEY in values:  # the trainer's end-of-training summary
            run.finished = True
            continue
        step = next((int(values[k]) for k in STEP_KEYS if k in values), None)
        if step is None and bar is not None:
            step = bar[0]
            run.wall[step] = bar[2]
        dict_step = step if step is not None else dict_step + 1
        run.record(dict_step, values)
    if bar is not None and not run.total_steps:
        run.total_steps = bar[1]
    return totals_from_records(run)


def totals_from_records(run: Run) -> Run:
    """Take the total from a logged ``max_steps``-like key when the run has none yet."""
    for values in run.steps.values():
        total = next((values[k] for k in TOTAL_KEYS if k in values), None)
        if total and not run.total_steps:
            run.total_steps = int(total)
    return run


def add_record(run: Run, record: dict[str, object]) -> None:
    """Add one structured record: ``{"step": N, "data": {…}}`` (verl) or ``{"step": N, …}`` (TRL)."""
    data = record.get("data")
    values = numeric_entries(data if isinstance(data, dict) else record)
    step = int(float(str(record["step"])))
    if SUMMARY_KEY in values:
        run.finished = True
        return
    wall = values.pop(WALL_KEY, None)
    values.pop("step", None)
    if not values:
        return
    run.record(step, values)
    if wall is not None:
        run.wall[step] = wall


def parse_jsonl(path: Path) -> Run:
    """Read the local backend's ``metrics.jsonl`` or verl's file-logger JSONL.

    Lines that do not parse (one being written) and records without a ``step`` are skipped.
    """
    run = Run()
    with path.open(encoding="utf-8", errors="replace") as handle:
        for line in handle:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and "step" in record:
                add_record(run, record)
    return totals_from_records(run)


def parse_trainer_state(path: Path) -> Run:
    """Read a TRL/transformers ``trainer_state.json``: ``log_history``, ``max_steps``, stop flag."""
    state = json.loads(path.read_text(encoding="utf-8"))
    run = Run()
    for entry in state.get("log_history") or []:
        if isinstance(entry, dict) and "step" in entry:
            add_record(run, entry)
    max_steps = int(state.get("max_steps") or 0)
    run.total_steps = max_steps if max_steps > 0 else None
    control = ((state.get("stateful_callbacks") or {}).get("TrainerControl") or {}).get("args") or {}
    run.finished = run.finished or bool(control.get("should_training_stop"))
    return run


def newest_trainer_state(folder: Path) -> Path | None:
    """``folder/trainer_state.json``, else the one of the highest ``checkpoint-N``; ``None`` if none."""
    if (folder / TRAINER_STATE).is_file():
        return folder / TRAINER_STATE
    states = [p / TRAINER_STATE for p in folder.glob("checkpoint-*")
              if p.name.split("-")[-1].isdigit() and (p / TRAINER_STATE).is_file()]
    return max(states, key=lambda p: int(p.parent.name.split("-")[-1]), default=None)


def local_total(folder: Path) -> int | None:
    """Total steps of a local-backend run: ``local_config.json``, else a ``trainer_state.json``."""
    config = folder / LOCAL_CONFIG
    if config.is_file():
        try:
            steps = int(json.loads(config.read_text(encoding="utf-8"))["trainer"]["max_steps"])
        except (KeyError, TypeError, ValueError):
            steps = 0
        if steps > 0:
            return steps
    state = newest_trainer_state(folder)
    return parse_trainer_state(state).total_steps if state else None


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
    """Load a run from a run folder, a structured log, TensorBoard event files or a console log.

    The source is read as the module docstring says: a folder by its ``metrics.jsonl``, else its
    newest ``trainer_state.json``, else its TensorBoard event files; a console log by the
    structured source it names when that exists.

    Raises:
        FileNotFoundError: When ``path`` does not exist.
    """
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if path.is_dir():
        if (path / LOCAL_METRICS).is_file():
            return load_file(path / LOCAL_METRICS)
        state = newest_trainer_state(path)
        return parse_trainer_state(state) if state is not None else parse_tensorboard(path)
    return load_file(path)


def load_file(path: Path) -> Run:
    """Load a run from one file (event file, ``trainer_state.json``, JSONL log or console log)."""
    if path.name.startswith("events.out.tfevents"):
        return parse_tensorboard(path)
    if path.name == TRAINER_STATE:
        return parse_trainer_state(path)
    if path.suffix == ".jsonl":
        run = parse_jsonl(path)
        run.total_steps = run.total_steps or local_total(path.parent)
        return run
    with path.open(encoding="utf-8", errors="replace") as handle:
        console = parse_text_log(handle)
    named = [p for p in console.named_sources if p.suffix == ".jsonl" and p.is_file()]
    if not named:
        return console
    run = parse_jsonl(named[-1])
    run.total_steps = run.total_steps or console.total_steps or local_total(named[-1].parent)
    run.finished = run.finished or console.finished
    return run


def step_seconds(run: Run, window: int = 20) -> float | None:
    """Mean seconds per step over the last ``window`` steps.

    Uses a logged step time (``timing_s/step``) when present, else the wall time between the
    first and the last of the last ``window + 1`` steps with one (TensorBoard, the local
    backend's ``wall_time``, a TRL progress bar's elapsed time), divided by their step gap.
    """
    for key in STEP_TIME_KEYS:
        _, values = run.series(key)
        values = values[np.isfinite(values)]
        if len(values):
            return float(np.mean(values[-window:]))
    if len(run.wall) >= 2:
        steps = np.array(sorted(run.wall), dtype=float)[-window - 1:]
        walls = np.array([run.wall[int(s)] for s in steps])
        if walls[-1] > walls[0]:
            return float((walls[-1] - walls[0]) / (steps[-1] - steps[0]))
    return None


@dataclass(frozen=True)
class Eta:
    """Progress estimate."""

    step: int | None
    total: int | None
    seconds_per_step: float | None
    seconds_left: float | None
    finished: bool = False

    def line(self) -> str:
        """One status line, e.g. ``step 40/100 · 12.0 s/step · ETA 12m 00s`` or ``… · finished``."""
        step = "?" if self.step is None else str(self.step)
        total = "?" if self.total is None else str(self.total)
        rate = "? s/step" if self.seconds_per_step is None else (
            f"{self.seconds_per_step:.{1 if self.seconds_per_step >= 1 else 2}f} s/step")
        if self.finished:
            eta = "finished"
        elif self.seconds_left is None:
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
    """Estimate time left from step timings and the total number of steps.

    The run counts as finished when its source says so (``Run.finished``) or when the last
    logged step reached the total.
    """
    last = max(run.steps) if run.steps else None
    total = total_steps or run.total_steps
    rate = step_seconds(run, window)
    left = None
    if last is not None and total and rate is not None:
        left = max(0, total - last) * rate
    finished = run.finished or bool(total and last is not None and last >= total)
    return Eta(last, total, rate, left, finished)


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
    cols = math.ceil(len(PANELS) / 2)
    fig, axes = plt.subplots(2, cols, figsize=(5 * cols, 8))
    for ax in axes.flat[len(PANELS):]:
        ax.axis("off")
    drawn: list[str] = []
    for ax, (name, patterns, smooth) in zip(axes.flat[:len(PANELS)], PANELS, strict=True):
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
    from logdata.io import atomic_path

    try:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, dpi=100, format="png")
    finally:
        plt.close(fig)
    return drawn


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface."""
    from logdata.cliargs import add_flag, add_out_flag, new_parser

    p = new_parser(description=__doc__.split("\n\n")[0])
    p.add_argument("source", type=Path,
                   help="run folder, metrics.jsonl / verl JSONL log, trainer_state.json, "
                        "TensorBoard folder/event file, or console log")
    add_out_flag(p, "PNG to write (default: <source>.png)", required=False)
    add_flag(p, "--total-steps", type=int, default=None, metavar="N",
             help="total training steps (default: from the log when it says)")
    add_flag(p, "--sigma", type=float, default=2.0, help="Gaussian smoothing width in points")
    add_flag(p, "--window", type=int, default=20, metavar="N",
             help="steps averaged for the step time")
    add_flag(p, "--follow", type=float, default=None, metavar="SECONDS",
             help="redraw every SECONDS until the run has finished (Ctrl-C stops; "
                  "default: draw once)")
    add_flag(p, "--idle-exit", type=float, default=DEFAULT_IDLE_EXIT, metavar="SECONDS",
             help="with --follow, stop after SECONDS without a new record (a crashed run "
                  f"writes no end record; 0: never; default: {DEFAULT_IDLE_EXIT:g})")
    return p


def refresh(args: argparse.Namespace, out: Path) -> tuple[Eta | None, tuple[object, ...]]:
    """Load, plot and report once.

    Returns:
        The estimate (``None`` while a followed run has logged no step yet) and a signature of
        the records read, which changes whenever a record arrives.

    Raises:
        ValueError: When the source holds no step and ``--follow`` is off.
    """
    run = load_run(args.source)
    if not run.steps:
        if args.follow is None:
            raise ValueError(f"no training steps found in {args.source}")
        print(f"no training steps in {args.source} yet; waiting", flush=True)
        return None, (run.finished,)
    eta = estimate(run, args.total_steps, args.window)
    plot_run(run, eta, out, title=args.source.name, sigma=args.sigma)
    print(f"{eta.line()} → {out}", flush=True)
    last = max(run.steps)
    return eta, (len(run.steps), last, tuple(sorted(run.steps[last].items())), run.finished)


def follow(args: argparse.Namespace, out: Path) -> None:
    """Redraw every ``--follow`` seconds until the run has finished or went quiet.

    Finished: :func:`estimate` (an end-of-run record, or the total reached). Quiet: no new
    record for ``--idle-exit`` seconds (``0`` never gives up).
    """
    signature: tuple[object, ...] | None = None
    changed = time.monotonic()
    while True:
        eta, current = refresh(args, out)
        if eta is not None and eta.finished:
            print("run finished; stopped following", flush=True)
            return
        now = time.monotonic()
        if current != signature:
            signature, changed = current, now
        elif args.idle_exit and now - changed >= args.idle_exit:
            print(f"no new records for {format_duration(now - changed)}: the run looks stopped "
                  "(crashed or killed?); stopped following", flush=True)
            return
        time.sleep(args.follow)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = args.out or args.source.with_name(args.source.name.rstrip("/") + ".png")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if args.follow is None:
            refresh(args, out)
        else:
            follow(args, out)
        return 0
    except KeyboardInterrupt:
        return 0
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
