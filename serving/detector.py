"""The detectors a worker runs on each batch: next-key top-K per session, or verdict per template.

:class:`KeySequenceDetector` applies the offline rule of :mod:`validation.keyseq_detect` to live
sessions, event by event: a session's model input is ``<bos>`` + the keys of its current chunk
(sessions longer than the model context are cut into chunks of ``context - 2`` keys, as
``logdata sequences --long-sequences chunk`` cuts them); the first ``skip_first`` keys of a session
are never judged; a key is a miss when its rank is ``>= K``; when the session closes, ``<eos>`` is
judged if the window kind's rule (or ``--judge-eos``) says so; the session is abnormal when its
misses exceed ``min_misses``. K, the caps and the rules are imported from the offline detector, so
a replayed log gets the offline verdict of every session (``tests/test_serving_consistency.py``).

State is plain data (:class:`SessionState`, JSON in Redis), so any worker can continue a session.
An event already applied to a session (its id is not above the session's ``last``) is skipped:
redelivered entries change nothing.

:class:`TemplateDetector` gives each event the verdict ``model_predict.py`` gave its template
(``predictions.parquet``); templates it does not know get ``unknown`` and are reported on
``<prefix>:templates:new`` for the next batch classification.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from logdata.errors import LogDataError
from logdata.io import read_parquet
from reward.labels import ABNORMAL, NORMAL, UNKNOWN
from serving.scoring import RankRequest

logger = logging.getLogger(__name__)


@dataclass
class SessionState:
    """A live session (stored as JSON in ``<prefix>:session:<id>``).

    Attributes:
        id: Session id (block id, ``count-k`` or ``time-k``).
        chunk: Token ids of the current chunk's keys (without ``<bos>``).
        offset: Index in the session of the chunk's first key.
        n: Keys in the session so far.
        misses: Misses so far (judged keys outside the top-K).
        first_miss: Position of the first miss (-1: none).
        max_rank: Worst rank of a judged key.
        last: Id of the last event applied (-1: none).
        alerted: An alert was raised for this session.
        chunks: Chunks started.
    """

    id: str
    chunk: list[int] = field(default_factory=list)
    offset: int = 0
    n: int = 0
    misses: int = 0
    first_miss: int = -1
    max_rank: int = 0
    last: int = -1
    alerted: bool = False
    chunks: int = 1

    def to_json(self) -> str:
        """Compact JSON."""
        return json.dumps(self.__dict__, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> SessionState:
        """Inverse of :meth:`to_json`."""
        return cls(**json.loads(text))


@dataclass(frozen=True)
class KeyRule:
    """The offline detection rule (see :func:`validation.keyseq_detect.detect`).

    Attributes:
        k: Top-K (capped as offline).
        min_misses: Abnormal when misses exceed this.
        skip_first: Leading keys of a session that are context only.
        judge_eos: Judge ``<eos>`` when a session closes.
        max_keys: Keys per chunk (model context minus ``<bos>`` and ``<eos>``).
        min_events: Sessions with fewer keys get no verdict (offline leaves them out).
    """

    k: int
    min_misses: int = 0
    skip_first: int = 1
    judge_eos: bool = True
    max_keys: int = 510
    min_events: int = 1


@dataclass(frozen=True)
class EventVerdict:
    """The verdict of one event in one session: the rank of its key (-1: not judged)."""

    event: int
    session: str
    rank: int
    miss: bool

    @property
    def field(self) -> str:
        """Its field in the verdict hash: ``<event id>@<session>``."""
        return f"{self.event}@{self.session}"

    @property
    def value(self) -> str:
        """``<rank>,<0|1>``."""
        return f"{self.rank},{int(self.miss)}"


@dataclass
class Outcome:
    """What one batch changed: verdicts, sessions to store or close, new alerts."""

    verdicts: list[EventVerdict] = field(default_factory=list)
    touched: dict[str, SessionState] = field(default_factory=dict)
    closed: dict[str, dict[str, Any]] = field(default_factory=dict)
    alerts: dict[str, dict[str, Any]] = field(default_factory=dict)
    repeated: int = 0


class KeySequenceDetector:
    """Top-K next-key detection over live sessions.

    Args:
        rule: The detection rule.
        scorer: A :mod:`serving.scoring` scorer.
        bos_id: ``<bos>`` token id.
        eos_id: ``<eos>`` token id.
    """

    def __init__(self, rule: KeyRule, scorer: Any, bos_id: int, eos_id: int) -> None:
        if rule.max_keys < 1:
            raise LogDataError("the model context leaves no room for keys")
        self.rule = rule
        self.scorer = scorer
        self.bos = bos_id
        self.eos = eos_id

    def apply(self, states: dict[str, SessionState],
              events: Sequence[tuple[str, int, int, str]]) -> Outcome:
        """Apply events ``(session, event id, token id, key)`` in stream order.

        Args:
            states: Every session the events name (new ones as fresh states); updated in place.
            events: The batch's events.

        Returns:
            Verdicts, touched sessions and new alerts.
        """
        out = Outcome()
        pending: dict[str, list[tuple[int, int, str]]] = {}
        for sid, eid, token, name in events:
            state = states[sid]
            queued = pending.setdefault(sid, [])
            if eid <= state.last or (queued and eid <= queued[-1][0]):
                out.repeated += 1
                continue
            queued.append((eid, token, name))
        while pending:
            requests, taken = [], {}
            for sid, queue in pending.items():
                state = states[sid]
                if len(state.chunk) >= self.rule.max_keys:  # start a new chunk, as offline
                    state.offset += len(state.chunk)
                    state.chunk = []
                    state.chunks += 1
                room = self.rule.max_keys - len(state.chunk)
                taken[sid], pending[sid] = queue[:room], queue[room:]
                requests.append(RankRequest(sid, (self.bos, *state.chunk),
                                            tuple(t for _, t, _ in taken[sid])))
            ranks = self.scorer.ranks(requests)
            for request, rank_list in zip(requests, ranks, strict=True):
                self._update(states[request.session], taken[request.session], rank_list, out)
            pending = {sid: q for sid, q in pending.items() if q}
        out.touched = {sid: states[sid] for sid, _, _, _ in events}
        return out

    def _update(self, state: SessionState, taken: list[tuple[int, int, str]], ranks: list[int],
                out: Outcome) -> None:
        for (eid, token, name), rank in zip(taken, ranks, strict=True):
            position = state.n
            judged = position >= self.rule.skip_first
            miss = judged and rank >= self.rule.k
            state.chunk.append(token)
            state.n += 1
            state.last = eid
            if judged:
                state.max_rank = max(state.max_rank, rank)
            if miss:
                state.misses += 1
                if state.first_miss < 0:
                    state.first_miss = position
            out.verdicts.append(EventVerdict(eid, state.id, rank if judged else -1, miss))
            self._maybe_alert(state, out, eid, name, rank, position)

    def _maybe_alert(self, state: SessionState, out: Outcome, eid: int, key: str, rank: int,
                     position: int) -> None:
        if state.alerted or state.misses <= self.rule.min_misses:
            return
        state.alerted = True
        out.alerts[state.id] = {"session": state.id, "event": eid, "key": key, "rank": rank,
                                "position": position, "misses": state.misses, "k": self.rule.k}

    def close(self, states: dict[str, SessionState], reason: str) -> Outcome:
        """Close sessions: judge ``<eos>`` when the rule says so and give the session verdict."""
        out = Outcome()
        judge = [s for s in states.values() if self.rule.judge_eos and s.n >= self.rule.min_events]
        requests = [RankRequest(s.id, (self.bos, *s.chunk), (self.eos,)) for s in judge]
        for state, ranks in zip(judge, self.scorer.ranks(requests) if requests else [], strict=True):
            rank = ranks[0]
            state.max_rank = max(state.max_rank, rank)
            if rank >= self.rule.k:
                state.misses += 1
                if state.first_miss < 0:
                    state.first_miss = state.n
                self._maybe_alert(state, out, state.last, "<eos>", rank, state.n)
        for state in states.values():
            scored = state.n >= self.rule.min_events
            out.closed[state.id] = {
                "session": state.id,
                "pred": (ABNORMAL if state.misses > self.rule.min_misses else NORMAL) if scored else None,
                "misses": state.misses, "first_miss": state.first_miss, "max_rank": state.max_rank,
                "n_events": state.n, "chunks": state.chunks, "last_event": state.last,
                "closed_by": reason,
            }
        self.scorer.forget(states)
        return out


def load_predictions(path: Path) -> dict[str, str]:
    """Template text → prediction (``normal``/``abnormal``; ``unknown`` kept) from ``model_predict.py``.

    Raises:
        LogDataError: When the file lacks ``log``/``pred`` columns or is empty.
    """
    frame = read_parquet(path)
    missing = {"log", "pred"} - set(frame.columns)
    if missing:
        raise LogDataError(f"{path} lacks columns {sorted(missing)}; pass model_predict.py's "
                           "predictions.parquet")
    if frame.empty:
        raise LogDataError(f"{path} has no predictions")
    # several samples of one template: the majority, ties read as abnormal (alerts over silence)
    votes = frame.groupby("log")["pred"].agg(lambda s: _majority(s.tolist()))
    return {str(k): str(v) for k, v in votes.items()}


def _majority(preds: list[str]) -> str:
    abnormal, normal = preds.count(ABNORMAL), preds.count(NORMAL)
    if abnormal == normal == 0:
        return UNKNOWN
    return ABNORMAL if abnormal >= normal else NORMAL


class TemplateDetector:
    """Verdict per event from its template's prediction.

    Args:
        predictions: Template text → prediction (:func:`load_predictions`).
    """

    def __init__(self, predictions: dict[str, str]) -> None:
        self.predictions = predictions

    def verdicts(self, templates: Sequence[str]) -> list[str]:
        """The prediction of each template; ``unknown`` for templates never classified."""
        return [self.predictions.get(t, UNKNOWN) for t in templates]

