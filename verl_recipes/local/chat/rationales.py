"""Rationale distillation: a teacher explains each training log's (rectified) label → SFT chat parquet.

``python -m logdata rationales --teacher T --input train.parquet --out sft.parquet`` where ``T`` is

* an OpenAI-compatible endpoint (``http://host:8000/v1``, a vLLM server or any service) with
  ``--teacher-model NAME``; the API key is read from ``$OPENAI_API_KEY`` (or ``--api-key-env VAR``)
  and is never written to disk or logs;
* a local Hugging Face model folder (generation with ``transformers``);
* ``template``: a deterministic rule-based teacher (keyword evidence from the log), for offline
  smoke runs and the demo only — not a substitute for a real teacher;
* a file of reference rationales (``.json``/``.jsonl``/``.csv``/``.tsv``/``.parquet`` with a
  template column and a rationale column, e.g. R-Log's ``{input, label, reasoning}`` records),
  looked up by the whitespace-normalised log; rows it does not cover go to ``--fallback-teacher``
  (any of the above) or are counted as failed.

The teacher is told the label (a reference file is not asked, but its rationale must end in the
same label). A reply whose conclusion (parsed with the shared
``reward.parsing.parse_answer``) disagrees with it is dropped and counted. Requests run
concurrently with timeouts and retries with exponential back-off; every finished row is appended
to a sidecar ``<out>.parts.jsonl``, so an interrupted run resumes without asking again.

Output: one row per kept rationale with ``messages`` (the row's own system + user prompt, then the
assistant's ``<think>…</think><answer>label</answer>``), plus ``data_source``, ``ability``,
``reward_model`` and ``extra_info`` carrying ``reference_rationale``. ``--merge-into TRAIN``
writes ``extra_info.reference_rationale`` into an RL parquet for the reward's think terms.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
from tqdm import tqdm

from logdata.cliargs import add_command, add_flag, add_input_flag, add_out_flag, add_progress_flag
from logdata.errors import LogDataError
from logdata.io import atomic_write_parquet, require_file
from logdata.staging import amend_meta, verify_file
from logdata.templates.patch import normalise
from reward.labels import ABNORMAL, LABELS
from reward.parsing import extract_think, parse_answer
from reward.plain import plain

logger = logging.getLogger(__name__)

TEACHER_SYSTEM = (
    "You are an expert in system log analysis. You are given one log (or log template, variable "
    "parts replaced by <*>) and its correct label. Explain briefly, from the log's own words, why "
    "the label is right. Reply exactly as <think>your reasoning</think><answer>LABEL</answer>."
)
TEACHER_USER = "Log: {log}\nCorrect label: {label}"
RETRYABLE_HTTP = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
#: Characters of a rejected reply kept in the sidecar (``reply``), for inspection.
REPLY_KEPT = 2000
#: File suffixes read as a reference-rationale file by ``--teacher``.
REFERENCE_SUFFIXES: frozenset[str] = frozenset({".json", ".jsonl", ".csv", ".tsv", ".parquet"})

# Keyword evidence for the rule-based template teacher: (regex, phrase used in the rationale).
ABNORMAL_CUES: tuple[tuple[str, str], ...] = (
    (r"fatal|panic|crash", "a fatal crash"),
    (r"fail|failure|failed", "a failure"),
    (r"error|err\b|exception", "an error"),
    (r"timeout|timed out", "a timeout"),
    (r"lost|loss|unreachable|down\b|out of memory", "a lost resource"),
    (r"interrupt|abort|kill", "an interrupted operation"),
    (r"parity|ecc|machine check|hardware", "a hardware problem"),
)
NORMAL_CUES: tuple[tuple[str, str], ...] = (
    (r"corrected|recovered|retry succeeded", "a problem that was corrected automatically"),
    (r"start|started|starting|finish|completed|done|success", "routine progress"),
    (r"receiv|sent|served|connect|open|clos", "routine communication"),
    (r"status|info|report|generat", "status information"),
)


class Teacher(Protocol):
    """Anything that answers chat messages with one text reply."""

    def __call__(self, messages: list[dict[str, str]]) -> str:
        """Return the assistant's reply."""
        ...


class TeacherError(RuntimeError):
    """A teacher call failed; ``retryable`` says whether trying again may help."""

    def __init__(self, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass
class OpenAITeacher:
    """An OpenAI-compatible ``/chat/completions`` endpoint, called with the standard library.

    The key is held in memory only; it never appears in messages, logs or files.
    """

    base_url: str
    model: str
    api_key: str | None = field(default=None, repr=False)
    timeout: float = 60.0
    temperature: float = 0.7
    max_tokens: int = 512

    def __call__(self, messages: list[dict[str, str]]) -> str:
        """POST the messages; return ``choices[0].message.content``.

        Raises:
            TeacherError: On HTTP errors, timeouts, connection errors or malformed replies.
        """
        body = json.dumps(
            {"model": self.model, "messages": messages, "temperature": self.temperature,
             "max_tokens": self.max_tokens}
        ).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        url = self.base_url.rstrip("/") + "/chat/completions"
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as err:
            raise TeacherError(f"HTTP {err.code} from {url}", err.code in RETRYABLE_HTTP) from None
        except (TimeoutError, urllib.error.URLError, ConnectionError) as err:
            reason = getattr(err, "reason", err)
            raise TeacherError(f"no reply from {url}: {reason}", True) from None
        except json.JSONDecodeError:
            raise TeacherError(f"{url} returned invalid JSON", True) from None
        try:
            return str(payload["choices"][0]["message"]["content"])
        except (KeyError, IndexError, TypeError):
            raise TeacherError(f"{url} returned no choices[0].message.content", False) from None


class HFTeacher:
    """A local Hugging Face chat model (greedy generation; calls are serialised)."""

    def __init__(self, path: Path, max_new_tokens: int = 256) -> None:
        """Load the model and tokenizer from ``path`` (no remote code)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
        self.model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=False).eval()
        self.max_new_tokens = max_new_tokens
        self._lock = threading.Lock()

    def __call__(self, messages: list[dict[str, str]]) -> str:
        """Generate one reply with the model's chat template."""
        import torch

        ids = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        with self._lock, torch.no_grad():
            out = self.model.generate(
                **ids, max_new_tokens=self.max_new_tokens, do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
            )
        return self.tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=False)


def template_rationale(log: str, label: str) -> str:
    """Deterministic rule-based rationale for ``log`` with gold ``label`` (smoke runs only).

    >>> text = template_rationale("data TLB error interrupt", "abnormal")
    >>> text.endswith("so it is abnormal.</think><answer>abnormal</answer>")
    True
    >>> "an error, an interrupted operation" in text
    True
    """
    cues = ABNORMAL_CUES if label == ABNORMAL else NORMAL_CUES
    found = [phrase for pattern, phrase in cues if re.search(pattern, log, re.IGNORECASE)]
    if label == ABNORMAL:
        what = ", ".join(found) if found else "an unexpected condition"
        why = f"It reports {what}, which needs attention"
    else:
        what = ", ".join(found) if found else "routine operation"
        why = f"It reports {what} with no failure that needs attention"
    # The evidence comes first and the quoted log after it: the conclusion follows from the
    # first words of the rationale, which is what a small student can learn to reproduce.
    return (f'<think>{why}: the log says "{log.strip()}", so it is {label}.</think>'
            f"<answer>{label}</answer>")


#: Column names recognised as the rationale column of a reference file (lower case).
RATIONALE_COLUMNS: tuple[str, ...] = ("reasoning", "rationale", "reference_rationale", "response",
                                      "output", "explanation")


class ReferenceTeacher:
    """Rationales looked up by log template in a file; uncovered logs go to ``fallback``.

    A stored rationale without ``<answer>`` tags is read as the think text and gets the file's
    ``label`` column when it has one. ``counts`` tells how many replies came from the file and how
    many from the fallback.
    """

    def __init__(self, path: Path, fallback: Teacher | None = None) -> None:
        """Read ``path``: see :data:`RATIONALE_COLUMNS` and :mod:`logdata.templates.labelled`.

        Raises:
            LogDataError: when the file is unreadable or lacks a template or rationale column.
        """
        from logdata.templates.labelled import (
            LABEL_COLUMNS,
            TEMPLATE_COLUMNS,
            find_column,
            read_table,
        )

        frame = read_table(path)
        template = find_column(frame, TEMPLATE_COLUMNS, "template")
        rationale = find_column(frame, RATIONALE_COLUMNS, "rationale", exclude=template)
        try:
            label = find_column(frame, LABEL_COLUMNS, "label", exclude=template)
        except LogDataError:
            label = None
        self.table: dict[str, str] = {}
        for rec in frame.to_dict("records"):
            text = str(rec[rationale] or "").strip()
            if text and "<answer>" not in text.lower() and label and rec.get(label):
                text = f"<think>{text}</think><answer>{rec[label]}</answer>"
            self.table.setdefault(normalise(str(rec[template])), text)
        self.fallback = fallback
        self.counts = {"reference": 0, "fallback": 0}
        self._lock = threading.Lock()

    def __call__(self, messages: list[dict[str, str]]) -> str:
        """Return the stored rationale of the log in the prompt, else ask the fallback.

        Raises:
            TeacherError: (not retryable) for a log the file does not cover and no fallback.
        """
        match = TemplateTeacher._PROMPT.search(messages[-1]["content"])
        if not match:
            raise TeacherError("reference teacher: prompt has no log/label", False)
        text = self.table.get(normalise(match["log"]))
        source = "reference" if text is not None else "fallback"
        if text is None:
            if self.fallback is None:
                raise TeacherError("no reference rationale for this log (no --fallback-teacher)",
                                   False)
            text = self.fallback(messages)
        with self._lock:
            self.counts[source] += 1
        return text


class TemplateTeacher:
    """The rule-based teacher as a :class:`Teacher` (reads the log and label from the prompt)."""

    _PROMPT = re.compile(r"Log: (?P<log>.*)\nCorrect label: (?P<label>\w+)", re.DOTALL)

    def __call__(self, messages: list[dict[str, str]]) -> str:
        """Return :func:`template_rationale` for the log and label in the last user message."""
        match = self._PROMPT.search(messages[-1]["content"])
        if not match:
            raise TeacherError("template teacher: prompt has no log/label", False)
        return template_rationale(match["log"], match["label"])


def teacher_messages(log: str, label: str) -> list[dict[str, str]]:
    """Chat messages asking the teacher to justify ``label`` for ``log``."""
    return [
        {"role": "system", "content": TEACHER_SYSTEM},
        {"role": "user", "content": TEACHER_USER.format(log=log, label=label)},
    ]


def call_with_retries(
    teacher: Teacher, messages: list[dict[str, str]], retries: int, backoff: float,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Call ``teacher``; retry retryable failures with exponential back-off (``backoff·2^k`` s).

    Raises:
        TeacherError: The last error once retries are exhausted, or a non-retryable one at once.
    """
    for attempt in range(retries + 1):
        try:
            return teacher(messages)
        except TeacherError as err:
            if not err.retryable or attempt == retries:
                raise
            delay = backoff * (2**attempt)
            logger.debug("teacher call failed (%s); retry %d in %.2fs", err, attempt + 1, delay)
            sleep(delay)
    raise AssertionError("unreachable")


def judge_reply(reply: str, label: str) -> tuple[str, str | None]:
    """Return ``(status, rationale)``: ``ok`` with the think text, or ``disagree``/``empty``.

    >>> judge_reply("<think>bad</think><answer>abnormal</answer>", "abnormal")
    ('ok', 'bad')
    >>> judge_reply("<think>fine</think><answer>normal</answer>", "abnormal")
    ('disagree', None)
    """
    if parse_answer(reply) != label:
        return "disagree", None
    think = extract_think(reply).strip()
    return ("ok", think) if think else ("empty", None)


def _row_key(row: Mapping[str, Any], position: int) -> str:
    info = row.get("extra_info")
    if isinstance(info, Mapping) and info.get("index") is not None:
        return f"{info.get('split', '')}:{info['index']}"
    return f"row:{position}"


def _row_log(row: Mapping[str, Any]) -> str:
    info = row.get("extra_info")
    if isinstance(info, Mapping) and info.get("log"):
        return str(info["log"])
    user = [m for m in list(row["prompt"]) if m["role"] == "user"]
    return str(user[-1]["content"]).removeprefix("Log: ") if user else ""


def _label(row: Mapping[str, Any]) -> str:
    label = row["reward_model"]["ground_truth"]
    if label not in LABELS:
        raise LogDataError(f"row has ground truth {label!r}, expected one of {LABELS}")
    return str(label)


def load_done(sidecar: Path) -> dict[str, dict[str, Any]]:
    """Read finished rows from the sidecar (``ok``/``disagree``/``empty``; failures are retried)."""
    done: dict[str, dict[str, Any]] = {}
    if not sidecar.is_file():
        return done
    for line in sidecar.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by an interruption: that row is asked again
        if record.get("status") != "failed":
            done[record["key"]] = record
    return done


@dataclass
class DistilStats:
    """Counts of one distillation run."""

    asked: int = 0
    kept: int = 0
    disagreed: int = 0
    empty: int = 0
    failed: int = 0
    resumed: int = 0

    def line(self) -> str:
        """One-line summary."""
        return (
            f"asked {self.asked}, kept {self.kept}, dropped (disagreeing) {self.disagreed}, "
            f"dropped (no rationale) {self.empty}, failed {self.failed}, resumed {self.resumed}"
        )


def distil(
    rows: list[dict[str, Any]], teacher: Teacher, sidecar: Path, *, concurrency: int = 8,
    retries: int = 3, backoff: float = 1.0, progress: bool = True,
) -> tuple[dict[str, dict[str, Any]], DistilStats]:
    """Ask ``teacher`` for every row not yet in ``sidecar``; append each result to it.

    Returns:
        All finished records by row key (including resumed ones) and the run's counts.
    """
    done = load_done(sidecar)
    stats = DistilStats(resumed=sum(1 for i, r in enumerate(rows) if _row_key(r, i) in done))
    todo = [(i, r) for i, r in enumerate(rows) if _row_key(r, i) not in done]
    lock = threading.Lock()
    sidecar.parent.mkdir(parents=True, exist_ok=True)

    def one(position: int, row: dict[str, Any]) -> dict[str, Any]:
        key, label = _row_key(row, position), _label(row)
        try:
            reply = call_with_retries(teacher, teacher_messages(_row_log(row), label), retries, backoff)
        except TeacherError as err:
            return {"key": key, "status": "failed", "error": str(err)}
        status, rationale = judge_reply(reply, label)
        record = {"key": key, "status": status, "rationale": rationale}
        if status != "ok":  # what the teacher said, so a rejection can be inspected
            record["reply"] = reply[:REPLY_KEPT]
        return record

    with sidecar.open("a", encoding="utf-8") as handle, ThreadPoolExecutor(max(1, concurrency)) as pool:
        futures = [pool.submit(one, i, r) for i, r in todo]
        for future in tqdm(as_completed(futures), total=len(futures), disable=not progress,
                           desc="rationales", unit="row"):
            record = future.result()
            stats.asked += 1
            counter = {"ok": "kept", "disagree": "disagreed", "empty": "empty", "failed": "failed"}
            setattr(stats, counter[record["status"]], getattr(stats, counter[record["status"]]) + 1)
            with lock:
                handle.write(json.dumps(record) + "\n")
                handle.flush()
            if record["status"] != "failed":
                done[record["key"]] = record
    return done, stats


def sft_frame(rows: list[dict[str, Any]], done: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """Build the SFT chat frame from the rows whose rationale was kept."""
    out = []
    for i, row in enumerate(rows):
        record = done.get(_row_key(row, i))
        if not record or record.get("status") != "ok":
            continue
        label, rationale = _label(row), str(record["rationale"])
        prompt = [{"role": str(m["role"]), "content": str(m["content"])} for m in list(row["prompt"])]
        answer = f"<think>{rationale}</think><answer>{label}</answer>"
        extra = dict(row.get("extra_info") or {})
        extra["reference_rationale"] = rationale
        out.append(
            {
                "data_source": row.get("data_source"),
                "messages": [*prompt, {"role": "assistant", "content": answer}],
                "prompt": prompt,
                "ability": row.get("ability", "log_anomaly"),
                "reward_model": dict(row["reward_model"]),
                "extra_info": extra,
            }
        )
    return pd.DataFrame(out)


def merge_rationales(train: pd.DataFrame, sft: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Copy ``extra_info.reference_rationale`` from SFT rows into matching RL rows (by row key).

    Returns:
        The updated frame and how many rows received a rationale.
    """
    by_key = {
        _row_key(r, i): r["extra_info"]["reference_rationale"]
        for i, r in enumerate(sft.to_dict("records"))
    }
    infos, hits = [], 0
    for i, row in enumerate(train.to_dict("records")):
        info = dict(row.get("extra_info") or {})
        key = _row_key(row, i)
        if key in by_key:
            info["reference_rationale"] = by_key[key]
            hits += 1
        infos.append(info)
    merged = train.copy()
    merged["extra_info"] = infos
    return merged, hits


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Read an RL parquet's rows as plain dicts (numpy arrays turned into lists).

    Raises:
        LogDataError: When the file is missing or lacks ``prompt``/``reward_model``.
    """
    require_file(path, "input parquet")
    frame = pd.read_parquet(path)
    missing = {"prompt", "reward_model"} - set(frame.columns)
    if missing:
        raise LogDataError(f"{path} lacks column(s) {sorted(missing)}")
    return [plain(r) for r in frame.to_dict("records")]


def make_teacher(args: argparse.Namespace) -> Teacher:
    """Build the teacher named by ``--teacher`` (URL, local model folder or ``template``).

    Raises:
        LogDataError: On an unusable teacher spec or a missing API-key variable.
    """
    spec = str(args.teacher)
    if spec == "template":
        return TemplateTeacher()
    if spec.startswith(("http://", "https://")):
        if not args.teacher_model:
            raise LogDataError("--teacher-model is required with an endpoint URL")
        key = os.environ.get(args.api_key_env)
        if args.api_key_env != "OPENAI_API_KEY" and not key:
            raise LogDataError(f"environment variable {args.api_key_env} is not set")
        return OpenAITeacher(spec, args.teacher_model, key, timeout=args.timeout,
                             temperature=args.temperature, max_tokens=args.max_tokens)
    path = Path(spec).expanduser()
    if path.is_dir():
        return HFTeacher(path, max_new_tokens=args.max_tokens)
    if path.suffix.lower() in REFERENCE_SUFFIXES:
        fallback = None
        if getattr(args, "fallback_teacher", None):
            fallback = make_teacher(argparse.Namespace(**{**vars(args), "teacher": args.fallback_teacher,
                                                          "fallback_teacher": None}))
        return ReferenceTeacher(path, fallback)
    raise LogDataError(f"--teacher {spec!r} is neither an http(s) URL, a model folder, a "
                       "reference-rationale file nor 'template'")


def run(args: argparse.Namespace) -> int:
    """CLI body: distil, write the SFT parquet, optionally merge into an RL parquet."""
    verify_file(args.input)
    rows = read_rows(Path(args.input))
    out = Path(args.out)
    sidecar = Path(args.sidecar) if args.sidecar else out.with_name(out.name + ".parts.jsonl")
    teacher = make_teacher(args)
    done, stats = distil(rows, teacher, sidecar, concurrency=args.concurrency, retries=args.retries,
                         backoff=args.backoff, progress=not args.no_progress)
    frame = sft_frame(rows, done)
    if frame.empty:
        raise LogDataError(f"no rationale kept ({stats.line()}); check the teacher")
    atomic_write_parquet(frame, out)
    amend_meta(out, f"rationales --teacher {args.teacher} from {Path(args.input).name}")
    print(f"wrote {len(frame):,} rationales to {out}")
    print(f"  {stats.line()}")
    if isinstance(teacher, ReferenceTeacher):
        print(f"  from the reference file {teacher.counts['reference']:,}, from the fallback "
              f"{teacher.counts['fallback']:,} (this run; resumed rows not counted)")
    if args.merge_into:
        target = Path(args.merge_into)
        merged, hits = merge_rationales(pd.DataFrame(read_rows(target)), frame)
        verify_file(target)
        atomic_write_parquet(merged, Path(args.merged_out or target))
        amend_meta(Path(args.merged_out or target), f"rationales --merge-into ({hits} rows)")
        print(f"  merged {hits:,} rationales into {args.merged_out or target}")
    return 1 if stats.failed else 0


def register(subparsers: Any) -> None:
    """Add the ``rationales`` subcommand to ``python -m logdata``."""
    parser = add_command(subparsers, "rationales",
                         "distil teacher rationales into an SFT chat parquet",
                         description=__doc__.split("\n\n")[0])
    add_flag(parser, "--teacher", required=True,
             help="http(s)://host:port/v1 (OpenAI-compatible), a local HF model folder, a file of "
                  "reference rationales (.json/.jsonl/.csv/.tsv/.parquet, e.g. R-Log's), "
                  "or 'template' (rule-based, smoke runs only)")
    add_flag(parser, "--fallback-teacher", default=None, metavar="TEACHER",
             help="teacher for the rows a reference file does not cover (default: none, they "
                  "fail)")
    add_flag(parser, "--teacher-model", default=None,
             help="model name for an endpoint (required with a URL; default: none)")
    add_flag(parser, "--api-key-env", default="OPENAI_API_KEY", metavar="NAME",
             help="environment variable holding the API key (never written anywhere)")
    add_input_flag(parser, "RL parquet (train.parquet)", aliases=("--in",))
    add_out_flag(parser, "SFT chat parquet to write")
    add_flag(parser, "--sidecar", type=Path, default=None, metavar="PATH",
             help="resume file (default: <out>.parts.jsonl)")
    add_flag(parser, "--concurrency", type=int, default=8, metavar="N",
             help="parallel teacher requests")
    add_flag(parser, "--timeout", type=float, default=60.0, metavar="SECONDS",
             help="seconds per request")
    add_flag(parser, "--retries", type=int, default=3, metavar="N",
             help="retries per row after a failure")
    add_flag(parser, "--backoff", type=float, default=1.0, metavar="SECONDS",
             help="first retry delay (doubles)")
    add_flag(parser, "--temperature", type=float, default=0.7,
             help="teacher sampling temperature")
    add_flag(parser, "--max-tokens", type=int, default=512, metavar="N",
             help="teacher reply budget")
    add_flag(parser, "--merge-into", type=Path, default=None, metavar="PATH",
             help="RL parquet to receive extra_info.reference_rationale (default: none)")
    add_flag(parser, "--merged-out", type=Path, default=None, metavar="PATH",
             help="where to write it (default: in place)")
    add_progress_flag(parser)
    parser.set_defaults(func=run)


def iter_keys(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """Row keys used for resuming and merging (``split:index`` or ``row:N``)."""
    return [_row_key(r, i) for i, r in enumerate(rows)]
