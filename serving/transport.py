"""Event transport: Redis Streams with consumer groups (default); Kafka in :mod:`serving.kafka`.

Events travel in ``partitions`` ordered streams ``<prefix>:events:<p>``. ``ingest``/``replay``
put every event into the partition of its session (:func:`partition_of`), so one partition holds
all events of a session in log order. A worker owns a partition through a lease
(``<prefix>:lease:<p>``, a key with a time-to-live that the owner renews): only the owner reads
it, in order, with one consumer group (``detectors``). When a worker dies its leases expire after
``lease_ms`` (the idle timeout), another worker takes them over and first claims the dead
worker's pending entries (``XAUTOCLAIM``), in stream order, before reading new ones.

At-least-once: an entry is acknowledged (``XACK``) only after the verdicts of its events were
written, in one transaction that also fails when the lease was lost meanwhile (``WATCH``); an
entry delivered twice finds its events already applied to the session state (by event id) and
is only acknowledged again.

Every Redis key the service uses is in :data:`KEYS`.
"""

from __future__ import annotations

import logging
import math
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

DEFAULT_PREFIX = "logrl"
DEFAULT_PARTITIONS = 4
GROUP = "detectors"
DEFAULT_LEASE_MS = 5_000
#: Stream length kept per partition (approximate ``MAXLEN ~``); acknowledged entries beyond it go.
DEFAULT_MAXLEN = 1_000_000

#: Every Redis key of the service, by role (``{prefix}`` and the named fields are filled in).
KEYS: dict[str, str] = {
    "events": "{prefix}:events:{partition}",  # stream: the events of a partition
    "lease": "{prefix}:lease:{partition}",  # string: worker name, with a TTL
    "workers": "{prefix}:workers",  # zset: worker name → last heartbeat (ms)
    "seq": "{prefix}:seq",  # counter: event ids given by `ingest`
    "session": "{prefix}:session:{session}",  # string: JSON state of an open session
    "open": "{prefix}:open:{partition}",  # zset: open session → last event time (ms)
    "verdicts": "{prefix}:verdicts:{bucket}",  # hash: "<event id>" or "<event id>@<session>" → verdict
    "session_verdicts": "{prefix}:session-verdicts",  # hash: session → final verdict JSON
    "alerts": "{prefix}:alerts",  # hash: session (or event id) → alert JSON
    "alert_stream": "{prefix}:alerts:stream",  # stream: one entry per new alert
    "templates_new": "{prefix}:templates:new",  # stream: templates the store did not know
    "template_ids": "{prefix}:templates:ids",  # hash: template text → event id
    "stats": "{prefix}:stats",  # hash: counters (events, skipped per reason, …)
    "latency": "{prefix}:latency",  # hash: latency histogram bucket → count
    "config": "{prefix}:config",  # hash: partitions, mode (written by the first worker/ingest)
}
#: Verdict hashes hold this many consecutive event ids each (so old ones can expire together).
VERDICT_BUCKET = 1 << 16


def key(role: str, prefix: str = DEFAULT_PREFIX, **fields: Any) -> str:
    """The Redis key of ``role`` (see :data:`KEYS`).

    >>> key("events", partition=3), key("verdicts", prefix="x", bucket=0)
    ('logrl:events:3', 'x:verdicts:0')
    """
    return KEYS[role].format(prefix=prefix, **fields)


def partition_of(session: str, partitions: int) -> int:
    """The partition of a session: CRC-32 of its id modulo ``partitions`` (stable across runs).

    >>> partition_of("blk_1", 4) == partition_of("blk_1", 4), 0 <= partition_of("x", 3) < 3
    (True, True)
    """
    return zlib.crc32(session.encode("utf-8")) % partitions


@dataclass(frozen=True)
class Message:
    """One stream entry.

    Attributes:
        partition: Its partition.
        id: The stream entry id (``1700000000000-0``).
        fields: Its fields as raw bytes (decoding is the worker's job, so bad bytes are counted).
    """

    partition: int
    id: str
    fields: dict[bytes, bytes]


def _decode_id(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


#: Renew a lease only when we still own it (a worker that lost it must not take it back).
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""


class RedisStreams:
    """Partitioned Redis Streams with consumer groups and leased partition ownership.

    Args:
        client: A ``redis.Redis`` client (``decode_responses`` off).
        prefix: Key prefix (several services can share one server).
        partitions: Number of partition streams.
        lease_ms: Lease time-to-live: how long a dead worker's partitions wait before others
            take them over (and claim its pending entries).
        maxlen: Approximate length cap per stream.
    """

    def __init__(self, client: Any, prefix: str = DEFAULT_PREFIX,
                 partitions: int = DEFAULT_PARTITIONS, lease_ms: int = DEFAULT_LEASE_MS,
                 maxlen: int = DEFAULT_MAXLEN) -> None:
        self.client = client
        self.prefix = prefix
        self.partitions = partitions
        self.lease_ms = lease_ms
        self.maxlen = maxlen
        self._renew = client.register_script(_RENEW)
        self.share = partitions  # partitions a worker should own (set by acquire)

    def key(self, role: str, **fields: Any) -> str:
        """:func:`key` with this transport's prefix."""
        return key(role, self.prefix, **fields)

    def stream(self, partition: int) -> str:
        """The stream of ``partition``."""
        return self.key("events", partition=partition)

    # -- producer side -------------------------------------------------------------------
    def setup(self) -> None:
        """Create the consumer group of every partition (idempotent) and record the layout.

        Raises:
            ValueError: When the server already holds a layout with another partition count.
        """
        config = self.key("config")
        self.client.hsetnx(config, "partitions", self.partitions)
        stored = int(self.client.hget(config, "partitions"))
        if stored != self.partitions:
            raise ValueError(f"{self.prefix} on this server has {stored} partitions, not "
                             f"{self.partitions}; use --partitions {stored} or another --prefix")
        for p in range(self.partitions):
            try:
                self.client.xgroup_create(self.stream(p), GROUP, id="0", mkstream=True)
            except Exception as exc:  # BUSYGROUP: it exists
                if "BUSYGROUP" not in str(exc):
                    raise

    def publish(self, entries: dict[int, list[dict[str, Any]]]) -> int:
        """Append entries to their partitions in one round trip; returns how many."""
        pipe = self.client.pipeline(transaction=False)
        n = 0
        for partition, rows in entries.items():
            stream = self.stream(partition)
            for fields in rows:
                pipe.xadd(stream, fields, maxlen=self.maxlen, approximate=True)
                n += 1
        pipe.execute()
        return n

    # -- ownership -----------------------------------------------------------------------
    def heartbeat(self, worker: str) -> int:
        """Record ``worker`` as alive; returns how many workers are alive."""
        now = int(time.time() * 1000)
        workers = self.key("workers")
        pipe = self.client.pipeline(transaction=False)
        pipe.zadd(workers, {worker: now})
        pipe.zremrangebyscore(workers, 0, now - 2 * self.lease_ms)
        pipe.zcard(workers)
        return max(1, int(pipe.execute()[-1]))

    def acquire(self, worker: str, owned: Iterable[int]) -> tuple[list[int], list[int]]:
        """Renew the leases of ``owned`` and take free partitions up to a fair share.

        Returns:
            ``(partitions owned now, partitions newly taken)``: new ones must be recovered
            (:meth:`recover`) before they are read.
        """
        alive = self.heartbeat(worker)
        share = self.share = math.ceil(self.partitions / alive)
        kept = [p for p in owned if self._renew(keys=[self.key("lease", partition=p)],
                                                args=[worker, self.lease_ms])]
        while len(kept) > share:  # others joined: give partitions back
            p = kept.pop()
            self.release(worker, [p])
        taken = []
        for p in range(self.partitions):
            if len(kept) + len(taken) >= share:
                break
            if p in kept:
                continue
            lease = self.key("lease", partition=p)
            # a lease still ours that we did not count as owned (a reply lost to a connection
            # error, a transaction that failed on one) is taken again rather than left to expire
            if self.client.set(lease, worker, nx=True, px=self.lease_ms) or \
                    self._renew(keys=[lease], args=[worker, self.lease_ms]):
                taken.append(p)
        return sorted(kept + taken), taken

    def release(self, worker: str, partitions: Iterable[int]) -> None:
        """Give up leases ``worker`` holds (on shutdown or rebalancing)."""
        for p in partitions:
            lease = self.key("lease", partition=p)
            if self.client.get(lease) == worker.encode():
                self.client.delete(lease)

    def lease_keys(self, partitions: Iterable[int]) -> list[str]:
        """The lease keys of ``partitions`` (WATCHed by the verdict transaction)."""
        return [self.key("lease", partition=p) for p in partitions]

    def owns(self, worker: str, partitions: Sequence[int], pipe: Any) -> bool:
        """Inside a WATCH: whether ``worker`` still holds every lease of ``partitions``."""
        values = pipe.mget(self.lease_keys(partitions)) if partitions else []
        return all(v == worker.encode() for v in values)

    # -- consumer side -------------------------------------------------------------------
    def recover(self, worker: str, partition: int, count: int = 1000) -> list[Message]:
        """Every pending entry of ``partition`` (any consumer's), claimed by ``worker``, in order."""
        out: list[Message] = []
        start = "0-0"
        while True:
            reply = self.client.xautoclaim(self.stream(partition), GROUP, worker, min_idle_time=0,
                                           start_id=start, count=count)
            start, claimed = _decode_id(reply[0]), reply[1]
            out += [Message(partition, _decode_id(i), f) for i, f in claimed if f is not None]
            if start == "0-0":
                break
        out.sort(key=lambda m: tuple(int(x) for x in m.id.split("-")))
        return out

    def read(self, worker: str, partitions: Sequence[int], count: int, block_ms: int
             ) -> list[Message]:
        """New entries of ``partitions`` for ``worker`` (waits up to ``block_ms`` when none)."""
        if not partitions:
            time.sleep(block_ms / 1000)
            return []
        # XREADGROUP's COUNT applies per stream: share the batch among the partitions
        per_stream = max(1, count // len(partitions))
        reply = self.client.xreadgroup(GROUP, worker, {self.stream(p): ">" for p in partitions},
                                       count=per_stream, block=block_ms or None)
        out = []
        for stream, entries in reply or []:
            partition = int(_decode_id(stream).rsplit(":", 1)[1])
            out += [Message(partition, _decode_id(i), f) for i, f in entries]
        return out

    def ack(self, messages: Sequence[Message], pipe: Any | None = None) -> None:
        """Acknowledge ``messages`` (on ``pipe`` when given, else now)."""
        by_partition: dict[int, list[str]] = {}
        for m in messages:
            by_partition.setdefault(m.partition, []).append(m.id)
        target = pipe if pipe is not None else self.client.pipeline(transaction=False)
        for p, ids in by_partition.items():
            target.xack(self.stream(p), GROUP, *ids)
        if pipe is None:
            target.execute()

    def committed(self, messages: Sequence[Message]) -> None:
        """Called after the verdict transaction: nothing to do, the XACK was part of it."""

    def lag(self) -> list[dict[str, Any]]:
        """Per partition: lag, pending entries, stream length and owner.

        ``lag``: entries not yet delivered to the group; ``pending``: delivered, unacknowledged.
        """
        rows = []
        for p in range(self.partitions):
            stream = self.stream(p)
            info = {"partition": p, "length": 0, "lag": 0, "pending": 0, "owner": None}
            if self.client.exists(stream):
                info["length"] = int(self.client.xlen(stream))
                for group in self.client.xinfo_groups(stream):
                    name = group.get("name", group.get(b"name"))
                    if _decode_id(name) == GROUP:
                        info["pending"] = int(group.get("pending", 0))
                        lag = group.get("lag")
                        info["lag"] = int(lag) if lag is not None else None
            owner = self.client.get(self.key("lease", partition=p))
            info["owner"] = owner.decode() if owner else None
            rows.append(info)
        return rows
