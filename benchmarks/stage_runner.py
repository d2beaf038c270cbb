"""A resumable pipeline of benchmark stages: a stage whose outputs exist and verify is skipped.

Each stage works in ``<root>/<name>.partial/`` and is renamed to ``<root>/<name>/`` only when it
succeeded, with ``stage.json`` recording its settings, the fingerprints of the stages it depends
on, the sha256 of every output file and its wall time. A rerun skips a stage when that record
exists, its settings and dependencies are unchanged and every listed file still has its sha256;
otherwise the stage (and, through the fingerprints, everything after it) runs again. An
interrupted stage leaves only its ``.partial`` folder, which the next run deletes first. When a
rerun replaces a finished stage, the old ``stage.json`` (settings, summary, times) is kept in
``<root>/superseded/``, so every try of a stage stays on record.

Commands run as subprocesses with their output in the stage's ``logs/``; a failing command stops
the pipeline with the end of its log.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger("stage_runner")

RECORD = "stage.json"
#: where the records of replaced runs are kept (a settings change reruns a stage; its try stays)
SUPERSEDED = "superseded"
LOG_TAIL_LINES = 40


class StageError(RuntimeError):
    """A stage failed (its message names the stage and the end of the failing command's log)."""


def exit_on_sigterm() -> None:
    """Turn SIGTERM (``kill``, a CI timeout) into ``SystemExit``, so a running command's group dies.

    Python's default SIGTERM action ends the process without unwinding, which left the running
    command's tree (Ray, vLLM) behind, still holding the cores.
    """
    def _exit(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)


def kill_group(proc: subprocess.Popen) -> None:
    """Kill what is left of ``proc``'s process group (nothing when it exited with its children)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return
    proc.wait()


def sha256_file(path: Path, block: int = 1 << 22) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def file_table(folder: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``folder`` except the stage record."""
    return {str(p.relative_to(folder)): sha256_file(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != RECORD}


def fingerprint(record: Mapping[str, Any]) -> str:
    """A short digest of a stage record's settings and outputs (what downstream stages depend on)."""
    text = json.dumps({"settings": record.get("settings"), "files": record.get("files")},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class StageContext:
    """What a stage body gets: its work folder and a command runner that logs to ``logs/``."""

    name: str
    work: Path
    env: dict[str, str]
    timeout: float | None
    commands: list[dict[str, Any]] = field(default_factory=list)

    def run(self, label: str, cmd: Sequence[object], env: Mapping[str, str] | None = None,
            cwd: Path | None = None) -> None:
        """Run ``cmd``; its stdout and stderr go to ``logs/<label>.log``.

        Raises:
            StageError: on a non-zero exit or a timeout, with the end of the log.
        """
        logs = self.work / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log = logs / f"{label}.log"
        argv = [str(c) for c in cmd]
        started = time.perf_counter()
        with log.open("w", encoding="utf-8") as handle:
            # its own process group: a timeout or an interrupt kills the command's whole tree
            # (vLLM engine processes, Ray workers), not only its first process
            proc = subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT, cwd=cwd,
                                    env={**os.environ, **self.env, **(env or {})},
                                    start_new_session=True)
            try:
                code: int | None = proc.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                code = None
            finally:
                kill_group(proc)
        seconds = time.perf_counter() - started
        self.commands.append({"label": label, "seconds": round(seconds, 1), "argv": argv})
        if code != 0:
            tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()
                             [-LOG_TAIL_LINES:])
            why = f"timed out after {self.timeout:.0f} s" if code is None else f"exit {code}"
            raise StageError(f"stage {self.name}: {label} failed ({why}); end of {log}:\n{tail}")

    def seconds(self, label: str) -> float:
        """Wall time of the command run under ``label`` (0 when it did not run)."""
        return sum(c["seconds"] for c in self.commands if c["label"] == label)


@dataclass(frozen=True)
class Stage:
    """One step of the pipeline.

    Attributes:
        name: Folder name and key in the results.
        body: Does the work in ``ctx.work``; returns a JSON-able summary kept in the record.
        settings: Everything that defines the stage's result (a change reruns it).
        after: Names of the stages whose outputs it reads.
    """

    name: str
    body: Callable[[StageContext], dict[str, Any]]
    settings: Mapping[str, Any]
    after: tuple[str, ...] = ()


class Pipeline:
    """Runs stages in order under ``root``, skipping the ones already done (see module doc)."""

    def __init__(self, root: Path, env: Mapping[str, str] | None = None,
                 timeout: float | None = None) -> None:
        """Prepare ``root``; ``env`` is added to every command's environment."""
        self.root = root
        self.env = dict(env or {})
        self.timeout = timeout
        root.mkdir(parents=True, exist_ok=True)

    def folder(self, name: str) -> Path:
        """The finished folder of stage ``name``."""
        return self.root / name

    def record(self, name: str) -> dict[str, Any] | None:
        """The record of a finished stage, or None."""
        path = self.folder(name) / RECORD
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def _expected(self, stage: Stage) -> dict[str, Any]:
        deps = {}
        for name in stage.after:
            record = self.record(name)
            if record is None:
                raise StageError(f"stage {stage.name} needs stage {name}, which has not run")
            deps[name] = fingerprint(record)
        return {"settings": json.loads(json.dumps(stage.settings, default=str)), "after": deps}

    def is_done(self, stage: Stage) -> bool:
        """Whether ``stage`` finished with the same settings and inputs and its files verify."""
        record = self.record(stage.name)
        if record is None:
            return False
        try:
            expected = self._expected(stage)
        except StageError:
            return False
        if record.get("settings") != expected["settings"] or record.get("after") != expected["after"]:
            return False
        return file_table(self.folder(stage.name)) == record.get("files")

    def superseded(self) -> list[dict[str, Any]]:
        """Records of earlier runs that a rerun with other settings replaced, oldest first."""
        folder = self.root / SUPERSEDED
        records = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*.json"))]
        return sorted(records, key=lambda r: str(r.get("finished_at", "")))

    def _keep_superseded(self, name: str) -> None:
        """Copy the record of the finished run about to be replaced into ``superseded/``."""
        old = self.record(name)
        if old is None:
            return
        folder = self.root / SUPERSEDED
        folder.mkdir(exist_ok=True)
        stamp = re.sub(r"[^0-9T]", "", str(old.get("finished_at", "unknown")))
        (folder / f"{name}-{stamp}.json").write_text(json.dumps(old, indent=2, default=str) + "\n",
                                                     encoding="utf-8")

    def run(self, stage: Stage) -> dict[str, Any]:
        """Run ``stage`` unless it is done; return its record."""
        if self.is_done(stage):
            record = self.record(stage.name)
            logger.info("stage %s: done earlier (%.0f s), outputs verified; skipped", stage.name,
                        record["seconds"])
            return record
        expected = self._expected(stage)
        final, partial = self.folder(stage.name), self.root / f"{stage.name}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        ctx = StageContext(stage.name, partial, self.env, self.timeout)
        logger.info("stage %s: running", stage.name)
        started = time.perf_counter()
        summary = stage.body(ctx)
        seconds = time.perf_counter() - started
        record = {"name": stage.name, **expected, "seconds": round(seconds, 1),
                  "commands": ctx.commands, "summary": summary,
                  "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                  "files": file_table(partial)}
        (partial / RECORD).write_text(json.dumps(record, indent=2, default=str) + "\n",
                                      encoding="utf-8")
        self._keep_superseded(stage.name)
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)
        logger.info("stage %s: finished in %.0f s", stage.name, seconds)
        return record


def run_stages(pipeline: Pipeline, stages: Sequence[Stage], only: str | None) -> dict[str, Any] | None:
    """Run ``stages`` in order (only those named in the comma-separated ``only``, when given).

    Stages left out keep their finished records in the result, so a report sees them.

    Returns:
        ``{name: record}``, or None when a stage failed (logged with the end of its log).

    Raises:
        SystemExit: When ``only`` names an unknown stage (one line listing the stages).
    """
    wanted = set(only.split(",")) if only else None
    unknown = (wanted or set()) - {s.name for s in stages}
    if unknown:
        raise SystemExit(f"error: unknown stage(s) {sorted(unknown)}; stages: "
                         f"{', '.join(s.name for s in stages)}")
    records: dict[str, Any] = {}
    for index, stage in enumerate(stages, 1):
        if wanted is not None and stage.name not in wanted:
            if pipeline.is_done(stage):
                records[stage.name] = pipeline.record(stage.name)
            continue
        logger.info("[%d/%d] %s", index, len(stages), stage.name)
        try:
            records[stage.name] = pipeline.run(stage)
        except StageError as err:
            logger.error("%s", err)
            return None
    return records


def default_data(repo_root: Path) -> Path:
    """``$LOGRL_TEST_DATA`` when set and not empty, else ``../shared/data`` beside the repository."""
    env = os.environ.get("LOGRL_TEST_DATA", "").strip()
    return Path(env) if env else repo_root.parent / "shared" / "data"


def benchmark_parser(description: str, profiles: Sequence[str], name: str) -> Any:
    """The flags every staged benchmark takes: ``--profile --work --data --only --results``.

    Args:
        description: The ``--help`` text.
        profiles: Profile names (``full`` is the default).
        name: The benchmark's name, for the default work folder ``outputs/<name>[_PROFILE]``.
    """
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--profile", choices=sorted(profiles), default="full",
                        help="sizes of every stage (default: full)")
    parser.add_argument("--work", type=Path, default=None,
                        help=f"stage folders (default: outputs/{name}[_PROFILE])")
    parser.add_argument("--data", type=Path, default=None,
                        help="real-data folder (default: $LOGRL_TEST_DATA, else ../shared/data)")
    parser.add_argument("--only", default=None,
                        help="comma-separated stage names to run (default: all)")
    parser.add_argument("--results", type=Path, default=None,
                        help="folder of the results files (default: benchmarks/results for the "
                             "full profile, none otherwise)")
    return parser


def work_folder(args: Any, repo_root: Path, name: str) -> Path:
    """``--work``, else ``outputs/<name>`` (``outputs/<name>_<profile>`` for other profiles)."""
    default = name if args.profile == "full" else f"{name}_{args.profile}"
    return (args.work or repo_root / "outputs" / default).resolve()


def start() -> None:
    """What every staged benchmark does first: SIGTERM handling and timestamped logging."""
    exit_on_sigterm()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s",
                        datefmt="%H:%M:%S")


def run_and_report(pipeline: Pipeline, stages: Sequence[Stage], only: str | None,
                   results: Path | None, write: Callable[[dict[str, Any]], list[Path]]) -> int:
    """:func:`run_stages`, then ``write(records)`` into ``results`` (skipped when None).

    Returns:
        The exit status: 0, or 1 when a stage failed.
    """
    records = run_stages(pipeline, stages, only)
    if records is None:
        return 1
    if results is not None:
        logger.info("results: %s", ", ".join(str(p) for p in write(records)))
    return 0


def write_results(out: Path, stem: str, results: Mapping[str, Any],
                  markdown: Callable[[Mapping[str, Any]], str],
                  plot: Callable[[Mapping[str, Any], Path], None]) -> list[Path]:
    """Write ``<stem>.json``, ``<stem>.md`` and ``<stem>.png`` into ``out``; return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{stem}.json", out / f"{stem}.md", out / f"{stem}.png"]
    paths[0].write_text(json.dumps(results, indent=1, default=str) + "\n", encoding="utf-8")
    paths[1].write_text(markdown(results), encoding="utf-8")
    plot(results, paths[2])
    return paths
