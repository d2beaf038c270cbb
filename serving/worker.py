"""The ``detect`` worker: leased partitions in, verdicts, session verdicts and alerts out.

One loop (:meth:`Worker.run`):

1. every ``lease_ms / 3``: heartbeat, renew leases, take free partitions up to a fair share;
   a partition just taken is *recovered* first: its open sessions are loaded and every pending
   entry (a dead worker's) is claimed and processed in stream order;
2. read up to ``batch`` new entries of the owned partitions (``XREADGROUP``, blocking briefly);
3. decode and check them (bad ones are counted by reason and acknowledged, never retried),
   mine their templates with the persistent store from ``prepare``/``parse`` (new templates get
   new ids and go once to ``<prefix>:templates:new``), run the detector;
4. write everything in one ``MULTI``/``EXEC`` guarded by ``WATCH`` on the leases: session states,
   verdicts (``<prefix>:verdicts:<bucket>``, field ``<event id>@<session>`` or ``<event id>``),
   closed sessions' verdicts, alerts, counters, the latency histogram, and the ``XACK`` of the
   entries. A lost lease aborts the transaction: nothing is acknowledged and the new owner redoes
   the entries;
5. every ``sweep_s``: close sessions idle for ``session_timeout_s`` (judging ``<eos>``).

When Redis is unreachable the loop waits for it (exponential backoff, a warning per try), then
recovers its partitions as in 1. (the in-memory state may be ahead of what Redis kept).
SIGTERM/SIGINT stop the loop after the current batch and give the leases back.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import signal
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from logdata.drain import TemplateMiner, event_id
from reward.labels import ABNORMAL
from serving.detector import KeySequenceDetector, Outcome, SessionState, TemplateDetector
from serving.events import DEFAULT_MAX_LINE_BYTES, END, Windowing
from serving.transport import VERDICT_BUCKET, Message, RedisStreams, partition_of

logger = logging.getLogger(__name__)

#: Latency histogram: bucket ``b`` holds latencies in ``[1.1**b, 1.1**(b+1))`` microseconds.
LATENCY_BASE = 1.1
#: A round (leases, read, batch, sweep) slower than this is logged with its breakdown.
SLOW_ROUND_S = 0.25
#: How soon a worker owning less than its fair share looks for free partitions again.
LEASE_RETRY_S = 0.1
ALERT_STREAM_MAXLEN = 100_000
#: Reconnection backoff when Redis is unreachable: first wait, doubling up to the cap (s).
RECONNECT_BASE_S = 0.1
RECONNECT_CAP_S = 5.0

#: Add an alert once: HSETNX into the alert hash, and on success XADD to the alert stream.
_ALERT = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'id', ARGV[1], 'alert', ARGV[2])
  return 1
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 0
"""


@dataclass
class WorkerConfig:
    """Worker settings.

    Attributes:
        name: Consumer and lease owner name (unique per worker).
        batch: Entries read per round.
        block_ms: How long a read waits when nothing is new.
        session_timeout_s: A session idle this long is closed.
        sweep_s: How often idle sessions are looked for.
        sweep_max: Sessions closed per sweep at most (the rest wait for the next round).
        retention_s: Verdict hashes expire this long after their last write.
        max_line_bytes: Longer messages are skipped (``oversize``).
        format_name: The log format events must carry (others: ``unknown_format``).
        exit_when_idle_s: Stop after this long without any entry and no open session (tests,
            benchmarks); None runs until signalled.
    """

    name: str
    batch: int = 512
    block_ms: int = 20
    session_timeout_s: float = 30.0
    sweep_s: float = 1.0
    sweep_max: int = 16
    retention_s: int = 86_400
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
    format_name: str = ""
    exit_when_idle_s: float | None = None


@dataclass
class Event:
    """A decoded event entry."""

    message: Message
    id: int
    time_ns: int
    content: str
    sessions: list[str]


def decode(message: Message, format_name: str, max_line_bytes: int) -> Event | str | None:
    r"""An :class:`Event`, the skip reason of a bad entry, or None for a control entry.

    >>> m = Message(0, "1-0", {b"e": b"7", b"t": b"5", b"f": b"hdfs", b"c": b"\xff"})
    >>> decode(m, "hdfs", 100), decode(m, "bgl", 100)
    ('invalid_utf8', 'unknown_format')
    """
    fields = message.fields
    if b"ctl" in fields:
        return None
    try:
        eid, stamp, content = int(fields[b"e"]), int(fields[b"t"]), fields[b"c"]
        sessions = fields.get(b"s", b"").decode("utf-8").split()
        fmt = fields.get(b"f")
        fmt = fmt.decode("utf-8") if fmt is not None else None
    except (KeyError, ValueError, UnicodeDecodeError):
        return "malformed"
    if fmt is not None and format_name and fmt != format_name:
        return "unknown_format"
    if len(content) > max_line_bytes:
        return "oversize"
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        return "invalid_utf8"
    return Event(message, eid, stamp, text, sessions)


def latency_buckets(latencies_us: np.ndarray) -> dict[int, int]:
    """Histogram counts of latencies (µs) in :data:`LATENCY_BASE` buckets.

    >>> latency_buckets(np.array([1.0, 1.05, 1000.0]))
    {0: 2, 72: 1}
    """
    idx = np.floor(np.log(np.maximum(latencies_us, 1.0)) / math.log(LATENCY_BASE)).astype(int)
    values, counts = np.unique(idx, return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts, strict=True)}


def percentile_from_histogram(hist: dict[int, int], q: float) -> float | None:
    """The ``q`` quantile (0–1) in milliseconds from a latency histogram (bucket midpoints).

    >>> round(percentile_from_histogram({0: 2, 72: 1}, 0.99), 3)
    1.002
    """
    total = sum(hist.values())
    if not total:
        return None
    seen = 0
    for bucket in sorted(hist):
        seen += hist[bucket]
        if seen >= q * total:
            return LATENCY_BASE ** (bucket + 0.5) / 1000.0
    return LATENCY_BASE ** (max(hist) + 0.5) / 1000.0


class Worker:
    """A detection worker.

    Args:
        transport: The partitioned streams.
        config: Worker settings.
        miner: The template store (``TemplateMiner.load`` of ``templates.json``).
        detector: A :class:`KeySequenceDetector` or a :class:`TemplateDetector`.
        key_ids: Key (``E12``) → model token id (key-sequence mode).
        windowing: Session windows (count windows close when full).
    """

    def __init__(self, transport: RedisStreams, config: WorkerConfig, miner: TemplateMiner,
                 detector: KeySequenceDetector | TemplateDetector,
                 key_ids: Callable[[str], int] | None = None,
                 windowing: Windowing | None = None) -> None:
        self.t = transport
        self.r = transport.client
        self.config = config
        self.miner = miner
        self.known_templates = len(miner)
        self.detector = detector
        self.key_ids = key_ids
        self.windowing = windowing or Windowing(kind="none")
        self.owned: list[int] = []
        self.states: dict[str, SessionState] = {}
        self.open: dict[int, dict[str, float]] = defaultdict(dict)
        self.reported: set[int] = set()
        self.stopping = False
        self.processed = 0
        self._alert = self.r.register_script(_ALERT)
        self._next_lease = 0.0
        self._next_sweep = time.monotonic() + config.sweep_s
        self._last_entry = time.monotonic()
        self._resync: set[int] = set()  # owned partitions to recover before reading them again

    # -- loop --------------------------------------------------------------------------
    def run(self) -> int:
        """Process until signalled (or idle, see ``exit_when_idle_s``); returns events processed."""
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # Connection errors reach the loop instead of being retried inside redis-py: a command
        # retried blindly (XREADGROUP whose reply was lost) could strand entries in our pending
        # list, while the loop's reconnection reloads the state and claims every pending entry.
        self.r.set_retry(Retry(NoBackoff(), 0))
        # the model, tokenizer and template store never die: keep them out of the collector's
        # full passes, which otherwise stall the loop for tens of milliseconds (p99 latency)
        gc.collect()
        gc.freeze()
        self.t.setup()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop)
        try:
            while not self.stopping:
                try:
                    self.step()
                except (redis.ConnectionError, redis.TimeoutError) as exc:
                    self._reconnect(exc)
                    continue
                if self._idle_exit():
                    break
        finally:
            try:
                self.t.release(self.config.name, self.owned)
                self.r.zrem(self.t.key("workers"), self.config.name)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                logger.warning("%s: could not give the leases back (%s); they expire", self.config.name,
                               exc)
        return self.processed

    def _reconnect(self, exc: Exception) -> None:
        """Wait for Redis to come back, then recover every owned partition.

        The in-memory state may be ahead of what Redis kept, so it is dropped; once the server
        answers (exponential backoff, a warning per try), each owned partition is recovered as
        when taken: its open sessions reloaded, its pending entries claimed and processed.
        """
        import redis

        logger.warning("%s: lost the connection to Redis (%s); reconnecting", self.config.name, exc)
        for p in list(self.open):
            self._forget_partition(p)
        self.states.clear()
        self._resync.update(self.owned)
        delay = RECONNECT_BASE_S
        while not self.stopping:
            time.sleep(delay)
            try:
                self.r.ping()
                break
            except (redis.ConnectionError, redis.TimeoutError) as again:
                delay = min(2 * delay, RECONNECT_CAP_S)
                logger.warning("%s: Redis still unreachable (%s); next try in %.1f s",
                               self.config.name, again, delay)
        else:
            return
        logger.warning("%s: reconnected to Redis; recovering partitions %s", self.config.name,
                       sorted(self._resync))
        self._next_lease = 0.0
        self._last_entry = time.monotonic()

    def _stop(self, *_: Any) -> None:
        self.stopping = True

    def _idle_exit(self) -> bool:
        limit = self.config.exit_when_idle_s
        if limit is None:
            return False
        quiet = time.monotonic() - self._last_entry >= limit
        return quiet and not any(self.open.values())

    def step(self) -> None:
        """One round: leases, a read, the batch, the idle sweep (a slow round is logged)."""
        now = time.monotonic()
        if now >= self._next_lease:
            self._refresh_leases()
            # below its fair share (partitions another worker just gave back are not leased
            # yet): look again soon instead of leaving them unread for a third of a lease
            short = len(self.owned) < getattr(self.t, "share", 0)
            self._next_lease = now + (LEASE_RETRY_S if short else self.t.lease_ms / 3000)
        leased = time.monotonic()
        messages = self.t.read(self.config.name, self.owned, self.config.batch,
                               self.config.block_ms)
        read = time.monotonic()
        if messages:
            self._last_entry = read
            self.process(messages)
        processed = time.monotonic()
        if processed >= self._next_sweep:
            more = self.sweep()  # with more idle sessions left, sweep again after the next read
            self._next_sweep = time.monotonic() + (0.0 if more else self.config.sweep_s)
        spent = time.monotonic() - now
        if spent > SLOW_ROUND_S:
            logger.warning("%s: slow round %.0f ms (leases %.0f, read %.0f, %d entries %.0f, "
                           "sweep %.0f)", self.config.name, 1000 * spent, 1000 * (leased - now),
                           1000 * (read - leased), len(messages), 1000 * (processed - read),
                           1000 * (time.monotonic() - processed))

    def _refresh_leases(self) -> None:
        before = set(self.owned)
        owned, taken = self.t.acquire(self.config.name, self.owned)
        for p in before - set(owned):
            self._forget_partition(p)
        self.owned = owned
        self._resync = (self._resync | set(taken)) & set(owned)
        for p in sorted(self._resync):
            self._recover(p)
            self._resync.discard(p)

    def _forget_partition(self, partition: int) -> None:
        sessions = list(self.open.pop(partition, {}))
        for sid in sessions:
            self.states.pop(sid, None)
        if isinstance(self.detector, KeySequenceDetector):
            self.detector.scorer.forget(sessions)  # memory only: a stale cache is never used
        logger.info("%s: partition %d released", self.config.name, partition)

    def _recover(self, partition: int) -> None:
        """Load a taken partition's open sessions and process its pending entries in order."""
        now = time.time()
        opened = self.r.zrange(self.t.key("open", partition=partition), 0, -1, withscores=True)
        self.open[partition] = {sid.decode(): now for sid, _ in opened}
        pending = self.t.recover(self.config.name, partition)
        logger.info("%s: took partition %d (%d open sessions, %d pending entries)",
                    self.config.name, partition, len(opened), len(pending))
        for start in range(0, len(pending), self.config.batch):
            self.process(pending[start:start + self.config.batch])

    # -- a batch -------------------------------------------------------------------------
    def process(self, messages: Sequence[Message]) -> None:
        """Process entries, split at control entries so each applies after what precedes it."""
        segment: list[Message] = []
        for message in messages:
            if b"ctl" in message.fields:
                self._process_events(segment)
                segment = []
                self._control(message)
            else:
                segment.append(message)
        self._process_events(segment)

    def _process_events(self, messages: Sequence[Message]) -> None:
        if not messages:
            return
        counts: Counter = Counter()
        events: list[Event] = []
        for message in messages:
            decoded = decode(message, self.config.format_name, self.config.max_line_bytes)
            if isinstance(decoded, Event):
                events.append(decoded)
            else:
                counts[f"skipped:{decoded}"] += 1
        cids = self.miner.add_batch(pa.array([e.content for e in events], pa.string())) \
            if events else np.zeros(0, np.int32)
        fresh = cids >= self.known_templates
        if isinstance(self.detector, TemplateDetector):  # never classified: report them too
            known = self.detector.predictions
            fresh |= np.array([self.miner.template(int(c)) not in known for c in cids], dtype=bool)
        new_templates = self._new_templates(cids, events, fresh)
        if isinstance(self.detector, KeySequenceDetector):
            writes = self._keyseq(events, cids, counts)
        else:
            writes = self._templates(events, cids, counts)
        partitions = sorted({m.partition for m in messages})
        if self._commit(partitions, messages, writes, counts, events, new_templates):
            self.processed += len(events)

    def _new_templates(self, cids: np.ndarray, events: Sequence[Event], fresh: np.ndarray
                       ) -> list[dict[str, str]]:
        """Reports of the templates flagged ``fresh`` this worker has not reported yet."""
        reports = []
        for i in np.flatnonzero(fresh):
            cid = int(cids[i])
            if cid in self.reported:
                continue
            self.reported.add(cid)
            reports.append({"event_id": event_id(cid), "template": self.miner.template(cid),
                          "example": events[i].content, "worker": self.config.name})
        return reports

    def _keyseq(self, events: Sequence[Event], cids: np.ndarray, counts: Counter
                ) -> Callable[[Any], None]:
        assert isinstance(self.detector, KeySequenceDetector) and self.key_ids is not None
        triples = []
        now = time.time()
        for event, cid in zip(events, cids, strict=True):
            key_name = event_id(int(cid))
            token = self.key_ids(key_name)
            for sid in event.sessions:
                triples.append((sid, event.id, token, key_name))
                self.open[event.message.partition][sid] = now
        # each event without a session is counted, also in a batch where others have one
        counts["skipped:no_session"] += sum(1 for event in events if not event.sessions)
        states = self._load_states({sid for sid, *_ in triples})
        outcome = self.detector.apply(states, triples)
        full = [sid for sid, s in outcome.touched.items()
                if self.windowing.kind == "count" and s.n >= int(self.windowing.size)]
        closed = self._close(full, "full") if full else Outcome()
        counts["repeated"] += outcome.repeated
        counts["verdicts"] += len(outcome.verdicts)
        return lambda pipe: (self._write_outcome(pipe, outcome), self._write_outcome(pipe, closed))

    def _templates(self, events: Sequence[Event], cids: np.ndarray, counts: Counter
                   ) -> Callable[[Any], None]:
        assert isinstance(self.detector, TemplateDetector)
        texts = [self.miner.template(int(c)) for c in cids]
        preds = self.detector.verdicts(texts)
        counts["verdicts"] += len(preds)
        counts["unknown"] += sum(p not in (ABNORMAL, "normal") for p in preds)

        def write(pipe: Any) -> None:
            by_bucket: dict[int, dict[str, str]] = defaultdict(dict)
            for event, pred, text in zip(events, preds, texts, strict=True):
                by_bucket[event.id // VERDICT_BUCKET][str(event.id)] = pred
                if pred == ABNORMAL:
                    self._queue_alert(pipe, f"e{event.id}", {"event": event.id, "template": text})
            self._write_verdicts(pipe, by_bucket)

        return write

    def _load_states(self, sids: set[str]) -> dict[str, SessionState]:
        missing = [sid for sid in sids if sid not in self.states]
        if missing:
            stored = self.r.mget([self.t.key("session", session=s) for s in missing])
            for sid, text in zip(missing, stored, strict=True):
                self.states[sid] = SessionState.from_json(text) if text else SessionState(sid)
        return {sid: self.states[sid] for sid in sids}

    def _close(self, sids: Sequence[str], reason: str) -> Outcome:
        assert isinstance(self.detector, KeySequenceDetector)
        states = self._load_states(set(sids))
        outcome = self.detector.close(states, reason)
        for sid in sids:
            self.states.pop(sid, None)
            for opened in self.open.values():
                opened.pop(sid, None)
        return outcome

    def _write_outcome(self, pipe: Any, outcome: Outcome) -> None:
        by_bucket: dict[int, dict[str, str]] = defaultdict(dict)
        for v in outcome.verdicts:
            by_bucket[v.event // VERDICT_BUCKET][v.field] = v.value
        self._write_verdicts(pipe, by_bucket)
        now_ms = int(time.time() * 1000)
        for sid, state in outcome.touched.items():
            if sid in outcome.closed:
                continue
            pipe.set(self.t.key("session", session=sid), state.to_json())
        for sid in outcome.touched:
            if sid not in outcome.closed:
                pipe.zadd(self._open_key(sid), {sid: now_ms})
        for sid, verdict in outcome.closed.items():
            pipe.delete(self.t.key("session", session=sid))
            pipe.zrem(self._open_key(sid), sid)
            pipe.hset(self.t.key("session_verdicts"), sid, json.dumps(verdict))
        for sid, alert in outcome.alerts.items():
            self._queue_alert(pipe, sid, {**alert, "template": self._template_of(alert["key"])})

    def _template_of(self, key: str) -> str | None:
        """The template text of a key (``E12``); None for ``<eos>``."""
        if not key.startswith("E") or not key[1:].isdigit():
            return None
        cid = int(key[1:]) - 1
        return self.miner.template(cid) if 0 <= cid < len(self.miner) else None

    def _open_key(self, sid: str) -> str:
        return self.t.key("open", partition=partition_of(sid, self.t.partitions))

    def _write_verdicts(self, pipe: Any, by_bucket: dict[int, dict[str, str]]) -> None:
        for bucket, fields in by_bucket.items():
            name = self.t.key("verdicts", bucket=bucket)
            pipe.hset(name, mapping=fields)
            pipe.expire(name, self.config.retention_s)

    def _queue_alert(self, pipe: Any, alert_id: str, alert: dict[str, Any]) -> None:
        alert = {**alert, "time": time.time(), "worker": self.config.name}
        self._alert(keys=[self.t.key("alerts"), self.t.key("alert_stream")],
                    args=[alert_id, json.dumps(alert), ALERT_STREAM_MAXLEN], client=pipe)

    def _commit(self, partitions: Sequence[int], messages: Sequence[Message],
                writes: Callable[[Any], Any], counts: Counter, events: Sequence[Event],
                new_templates: Sequence[dict[str, str]]) -> bool:
        """Write the batch and acknowledge its entries atomically; False when a lease was lost."""
        import redis

        with self.r.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(*self.t.lease_keys(partitions))
                if not self.t.owns(self.config.name, partitions, pipe):
                    raise redis.WatchError("lease lost")
                pipe.multi()
                writes(pipe)
                for template in new_templates:
                    pipe.xadd(self.t.key("templates_new"), template, maxlen=100_000,
                              approximate=True)
                stats = self.t.key("stats")
                pipe.hincrby(stats, "events", len(events))
                pipe.hincrby(stats, "entries", len(messages))
                for name, n in counts.items():
                    if n:
                        pipe.hincrby(stats, name, n)
                if events:
                    now = time.time_ns()
                    lat = (now - np.array([e.time_ns for e in events], dtype=np.int64)) / 1000.0
                    for bucket, n in latency_buckets(lat).items():
                        pipe.hincrby(self.t.key("latency"), str(bucket), n)
                self.t.ack(messages, pipe)
                pipe.execute()
                self.t.committed(messages)
                return True
            except redis.WatchError:
                logger.warning("%s: lost the lease of partition(s) %s; their entries go to the new "
                               "owner", self.config.name, partitions)
                for p in partitions:
                    if p in self.owned:
                        self.owned.remove(p)
                    self._forget_partition(p)
                return False

    # -- closing -------------------------------------------------------------------------
    def _control(self, message: Message) -> None:
        """An ``end`` entry: close every open session of its partition, then acknowledge it."""
        if message.fields.get(b"ctl") != END.encode() or \
                not isinstance(self.detector, KeySequenceDetector):
            self._commit([message.partition], [message], lambda pipe: None, Counter(), [], [])
            return
        sids = list(self.open.get(message.partition, {}))
        closed = self._close(sids, "end") if sids else Outcome()
        self._commit([message.partition], [message],
                     lambda pipe: self._write_outcome(pipe, closed),
                     Counter({"sessions_closed": len(closed.closed)}), [], [])

    def sweep(self) -> bool:
        """Close up to ``sweep_max`` sessions idle for ``session_timeout_s``, longest idle first.

        A sweep never holds the loop for long; returns whether idle sessions remain.
        """
        if not isinstance(self.detector, KeySequenceDetector):
            return False
        limit = time.time() - self.config.session_timeout_s
        idle = sorted((last, p, sid) for p in self.owned for sid, last in self.open.get(p, {}).items()
                      if last < limit)
        by_partition: dict[int, list[str]] = defaultdict(list)
        for _, p, sid in idle[:self.config.sweep_max]:
            by_partition[p].append(sid)
        for p, sids in sorted(by_partition.items()):
            closed = self._close(sids, "timeout")
            self._commit([p], [], lambda pipe, c=closed: self._write_outcome(pipe, c),
                         Counter({"sessions_closed": len(closed.closed)}), [], [])
        return len(idle) > self.config.sweep_max
