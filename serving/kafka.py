"""Event transport over Kafka (confluent-kafka): the interface of :class:`~serving.transport.RedisStreams`.

Events go to one topic, ``<prefix>.events``, with ``partitions`` partitions; producers write each
entry to the explicit partition of its session (:func:`~serving.transport.partition_of`, keyed by
the partition number), so a partition holds all events of a session in log order, as with Redis
Streams. Workers form the consumer group ``detectors`` (``enable.auto.commit=false``).

Ownership is Kafka's group assignment: :meth:`KafkaTransport.acquire` reports the partitions the
group coordinator assigned to this consumer, and the ones assigned since its last call as newly
taken. :meth:`~KafkaTransport.recover` returns nothing: Kafka redelivers every entry after the
committed offset of a partition to its next owner by itself. A partition that was revoked and
assigned back between two calls is left out of one answer, so the worker forgets its cached
sessions and recovers it (they may have moved on meanwhile).

At-least-once: the offsets are committed (synchronously, the next offset of each partition) by
:meth:`~KafkaTransport.committed`, which the worker calls only after its Redis transaction with the
verdicts succeeded. Fencing is Kafka's group generation: a commit after a rebalance fails and the
entries are redelivered to the new owner; the session state's per-session last event id makes a
redelivered event harmless. Because Redis cannot ``WATCH`` zero keys, and to also fence a worker
that stalled past ``max.poll.interval.ms`` while its partitions moved, every assigned partition
carries a Redis lease key, ``<prefix>:lease:<p>`` (the worker name, set by each ``acquire``, with a
time-to-live): the worker's verdict transaction ``WATCH``es it and aborts when another worker set
it meanwhile. Redis stays the state store (sessions, verdicts, alerts, counters).

The Kafka value of an entry is a MessagePack map of binary strings to binary strings
(:func:`encode_fields`), so arbitrary bytes (invalid UTF-8 included) reach the worker unchanged,
which counts them as ``invalid_utf8`` exactly as with Redis Streams.
"""

from __future__ import annotations

import logging
import re
import socket
import struct
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from logdata.errors import LogDataError
from serving.transport import DEFAULT_LEASE_MS, DEFAULT_PARTITIONS, DEFAULT_PREFIX, GROUP, Message, key

logger = logging.getLogger(__name__)

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
#: Kafka brokers refuse session timeouts under this by default (``group.min.session.timeout.ms``).
MIN_SESSION_TIMEOUT_MS = 6_000
_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
INSTALL_HINT = "the Kafka transport needs confluent-kafka: pip install -e '.[kafka]'"


def kafka_module() -> Any:
    """``confluent_kafka``, or a one-line :class:`LogDataError` saying how to install it."""
    try:
        import confluent_kafka
        import confluent_kafka.admin  # makes confluent_kafka.admin an attribute
    except ImportError:
        raise LogDataError(INSTALL_HINT) from None
    return confluent_kafka


# -- the value of an entry: a MessagePack map of bin → bin -------------------------------------
def _to_bytes(value: Any) -> bytes:
    """A field name or value as bytes, the way redis-py sends it (str as UTF-8, numbers as text)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(value).encode("ascii")
    raise TypeError(f"an entry field must be bytes, str, int or float, not {type(value).__name__}")


def _bin_header(n: int) -> bytes:
    if n < 1 << 8:
        return b"\xc4" + bytes((n,))
    if n < 1 << 16:
        return b"\xc5" + struct.pack(">H", n)
    if n < 1 << 32:
        return b"\xc6" + struct.pack(">I", n)
    raise ValueError(f"an entry field of {n} bytes is too large")


def _map_header(n: int) -> bytes:
    if n < 16:
        return bytes((0x80 | n,))
    if n < 1 << 16:
        return b"\xde" + struct.pack(">H", n)
    return b"\xdf" + struct.pack(">I", n)


def pack_fields(fields: Mapping[bytes, bytes]) -> bytes:
    """The pure-Python encoder (the same bytes as ``msgspec.msgpack.encode``)."""
    parts = [_map_header(len(fields))]
    for name, value in fields.items():
        parts += [_bin_header(len(name)), name, _bin_header(len(value)), value]
    return b"".join(parts)


_HEADERS = {0xc4: (">B", 1), 0xc5: (">H", 2), 0xc6: (">I", 4)}  # bin 8/16/32


def unpack_fields(data: bytes) -> dict[bytes, bytes]:
    """The pure-Python decoder of :func:`pack_fields` (as strict as msgspec's: bin items only).

    Raises:
        ValueError: When ``data`` is not such a map (or has bytes after it).
    """
    view = memoryview(data)
    pos = 0

    def length(fmt: str, size: int) -> int:
        nonlocal pos
        if pos + size > len(view):
            raise ValueError("truncated entry value")
        (n,) = struct.unpack_from(fmt, view, pos)
        pos += size
        return n

    def item() -> bytes:
        nonlocal pos
        if pos >= len(view):
            raise ValueError("truncated entry value")
        tag = view[pos]
        pos += 1
        if tag in _HEADERS:
            n = length(*_HEADERS[tag])
        else:
            raise ValueError(f"an entry field is not a binary string (MessagePack type 0x{tag:02x})")
        if pos + n > len(view):
            raise ValueError("truncated entry value")
        out = bytes(view[pos:pos + n])
        pos += n
        return out

    if not view:
        raise ValueError("empty entry value")
    tag = view[0]
    pos = 1
    if 0x80 <= tag <= 0x8f:
        count = tag & 0x0f
    elif tag == 0xde:
        count = length(">H", 2)
    elif tag == 0xdf:
        count = length(">I", 4)
    else:
        raise ValueError(f"an entry value is not a MessagePack map (type 0x{tag:02x})")
    fields = {}
    for _ in range(count):
        name = item()
        fields[name] = item()
    if pos != len(view):
        raise ValueError("bytes after the entry value")
    return fields


try:  # msgspec (when installed) writes and reads the same format, faster
    import msgspec as _msgspec

    _ENCODER = _msgspec.msgpack.Encoder()
    _DECODER = _msgspec.msgpack.Decoder(dict[bytes, bytes])
except ImportError:  # pragma: no cover - depends on the environment
    _msgspec = None


def encode_fields(fields: Mapping[Any, Any]) -> bytes:
    r"""The Kafka value of an entry: its fields as a MessagePack map of bin → bin.

    >>> encode_fields({"e": 7, "c": b"\xff"})
    b'\x82\xc4\x01e\xc4\x017\xc4\x01c\xc4\x01\xff'
    """
    raw = {_to_bytes(k): _to_bytes(v) for k, v in fields.items()}
    return _ENCODER.encode(raw) if _msgspec is not None else pack_fields(raw)


def decode_fields(value: bytes | None) -> dict[bytes, bytes]:
    r"""The fields of a Kafka value (``{}``, counted ``malformed`` by the worker, for a bad one).

    >>> decode_fields(encode_fields({"e": 7, "c": b"\xff"})), decode_fields(b"junk")
    ({b'e': b'7', b'c': b'\xff'}, {})
    """
    if not value:
        return {}
    try:
        if _msgspec is not None:
            return _DECODER.decode(value)
        return unpack_fields(value)
    except (ValueError, TypeError) as exc:  # msgspec.DecodeError/ValidationError are ValueErrors
        logger.debug("undecodable entry value: %s", exc)
        return {}


def next_offsets(messages: Iterable[Message]) -> dict[int, int]:
    """The offsets to commit: per partition, the highest offset among ``messages`` plus one.

    >>> next_offsets([Message(0, "5", {}), Message(1, "2", {}), Message(0, "3", {})])
    {0: 6, 1: 3}
    """
    out: dict[int, int] = {}
    for m in messages:
        offset = int(m.id) + 1
        if offset > out.get(m.partition, -1):
            out[m.partition] = offset
    return out


def lag_row(partition: int, low: int, high: int, committed: int | None,
            owner: str | None = None) -> dict[str, Any]:
    """A :meth:`KafkaTransport.lag` row; nothing committed yet counts from the low watermark.

    >>> lag_row(0, 10, 25, 20)["lag"], lag_row(0, 10, 25, None)["lag"], lag_row(0, 10, 25, -1001)
    (5, 15, {'partition': 0, 'length': 15, 'lag': 15, 'pending': None, 'owner': None})
    """
    start = committed if committed is not None and committed >= 0 else low
    return {"partition": partition, "length": max(0, high - low), "lag": max(0, high - start),
            "pending": None, "owner": owner}


def broker_reachable(bootstrap: str, timeout_s: float = 2.0) -> str | None:
    """None when a Kafka broker answers at ``bootstrap`` within about ``timeout_s``; else why not.

    A TCP connect to each ``host:port`` comes first (fast when nothing listens), then a metadata
    request (``AdminClient.list_topics``).
    """
    errors = []
    for address in bootstrap.split(","):
        host, _, port = address.strip().rpartition(":")
        try:
            with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout_s):
                break
        except (OSError, ValueError) as exc:
            errors.append(f"{address.strip()}: {exc}")
    else:
        return f"no Kafka broker at {bootstrap} ({'; '.join(errors)})"
    try:
        ck = kafka_module()
    except LogDataError as exc:
        return str(exc)
    try:
        ck.admin.AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=timeout_s)
    except ck.KafkaException as exc:
        return f"{bootstrap} accepts connections but does not answer as a Kafka broker: {exc}"
    return None


class KafkaTransport:
    """Partitioned Kafka topic, consumer group ownership, Redis for state (see the module doc).

    Args:
        client: A ``redis.Redis`` client (``decode_responses`` off): the state store, the worker
            list and the lease keys that fence the verdict transactions. None is allowed for
            producers and tests (then no layout check, heartbeat or lease is kept).
        bootstrap: Kafka ``bootstrap.servers`` (``host:port[,host:port…]``).
        prefix: Redis key prefix; the topic is ``<prefix>.events``.
        partitions: Partitions of the topic (created with this many when missing; an existing
            topic must have exactly this many).
        lease_ms: How often the worker refreshes its assignment (every ``lease_ms / 3``) and the
            Kafka ``session.timeout.ms`` (at least 6 000, the broker's usual minimum): how long a
            dead worker's partitions wait before the group hands them to others.
        replication: Replication factor of a topic this transport creates.
        group: Consumer group id.
        config: Extra librdkafka settings for every client (security, ``max.poll.interval.ms``,
            …); they override the ones this class sets.
        timeout_s: Timeout of broker requests (metadata, topic creation, commits, flushes).
    """

    def __init__(self, client: Any, bootstrap: str = DEFAULT_BOOTSTRAP,
                 prefix: str = DEFAULT_PREFIX, partitions: int = DEFAULT_PARTITIONS,
                 lease_ms: int = DEFAULT_LEASE_MS, *, replication: int = 1, group: str = GROUP,
                 config: Mapping[str, Any] | None = None, timeout_s: float = 10.0) -> None:
        self.ck = kafka_module()
        self.topic = f"{prefix}.events"
        if not _TOPIC_NAME.match(self.topic) or self.topic in (".", ".."):
            raise LogDataError(f"prefix {prefix!r} makes an invalid Kafka topic name {self.topic!r} "
                               "(use letters, digits, '.', '_' and '-')")
        if partitions < 1:
            raise LogDataError(f"a Kafka topic needs at least one partition, not {partitions}")
        self.client = client
        self.bootstrap = bootstrap
        self.prefix = prefix
        self.partitions = partitions
        self.lease_ms = lease_ms
        self.replication = replication
        self.group = group
        self.config = dict(config or {})
        self.timeout_s = timeout_s
        self.session_timeout_ms = max(MIN_SESSION_TIMEOUT_MS, int(lease_ms))
        self._producer: Any = None
        self._consumer: Any = None
        self._meta: Any = None  # an unsubscribed consumer of the group, for lag()
        self._assigned: set[int] = set()  # the group's assignment, kept by the callbacks
        self._announced: set[int] = set()  # what acquire() last reported (and not revoked since)
        self._came_back: set[int] = set()  # announced partitions revoked since the last acquire
        self._buffer: dict[int, list[Message]] = defaultdict(list)  # read, not yet handed out
        self._position: dict[int, int] = {}  # next offset expected per partition
        self._paused: set[int] = set()

    # -- names and clients ---------------------------------------------------------------
    def key(self, role: str, **fields: Any) -> str:
        """:func:`serving.transport.key` with this transport's prefix."""
        return key(role, self.prefix, **fields)

    def _conf(self, **settings: Any) -> dict[str, Any]:
        return {"bootstrap.servers": self.bootstrap, **settings, **self.config}

    def _tp(self, partition: int, offset: int | None = None) -> Any:
        if offset is None:
            return self.ck.TopicPartition(self.topic, partition)
        return self.ck.TopicPartition(self.topic, partition, offset)

    def _unreachable(self, exc: BaseException) -> LogDataError:
        return LogDataError(f"Kafka at {self.bootstrap}: {' '.join(str(exc).split())}")

    def _new_consumer(self, conf: dict[str, Any]) -> Any:
        """A ``confluent_kafka.Consumer`` (a seam for tests)."""
        return self.ck.Consumer(conf)

    def _new_producer(self, conf: dict[str, Any]) -> Any:
        """A ``confluent_kafka.Producer`` (a seam for tests)."""
        return self.ck.Producer(conf)

    def _consumer_conf(self, worker: str) -> dict[str, Any]:
        return self._conf(**{
            "group.id": self.group, "client.id": worker, "enable.auto.commit": False,
            "enable.auto.offset.store": False, "auto.offset.reset": "earliest",
            "enable.partition.eof": False, "session.timeout.ms": self.session_timeout_ms,
            "heartbeat.interval.ms": max(100, self.session_timeout_ms // 3)})

    # -- producer side -------------------------------------------------------------------
    def setup(self) -> None:
        """Create the topic when missing, check its partition count and record the layout.

        Raises:
            LogDataError: When the broker is unreachable, or the topic or the Redis layout has
                another partition count.
        """
        if self.client is not None:
            config = self.key("config")
            self.client.hsetnx(config, "partitions", self.partitions)
            stored = int(self.client.hget(config, "partitions"))
            if stored != self.partitions:
                raise LogDataError(f"{self.prefix} on this Redis server has {stored} partitions, "
                                   f"not {self.partitions}; use --partitions {stored} or another "
                                   "--prefix")
        admin = self.ck.admin.AdminClient(self._conf())
        found = self._topic_partitions(admin)
        if found is None:
            new = self.ck.admin.NewTopic(self.topic, num_partitions=self.partitions,
                                         replication_factor=self.replication)
            try:
                admin.create_topics([new], operation_timeout=self.timeout_s)[self.topic].result(
                    timeout=self.timeout_s)
                logger.info("created topic %s (%d partitions)", self.topic, self.partitions)
            except self.ck.KafkaException as exc:
                if exc.args and getattr(exc.args[0], "code", lambda: None)() != \
                        self.ck.KafkaError.TOPIC_ALREADY_EXISTS:
                    raise self._unreachable(exc) from None
            except TimeoutError:
                raise LogDataError(f"Kafka at {self.bootstrap}: creating topic {self.topic} did not "
                                   f"finish within {self.timeout_s:g} s") from None
            deadline = time.monotonic() + self.timeout_s
            while (found := self._topic_partitions(admin)) is None and time.monotonic() < deadline:
                time.sleep(0.1)  # metadata catches up with the creation
        if found is not None and found != self.partitions:
            raise LogDataError(f"Kafka topic {self.topic} has {found} partitions, not "
                               f"{self.partitions}; use --partitions {found} or another --prefix")

    def _topic_partitions(self, admin: Any) -> int | None:
        try:
            # all topics: a request naming the topic may auto-create it with the broker's default
            meta = admin.list_topics(timeout=self.timeout_s)
        except self.ck.KafkaException as exc:
            raise self._unreachable(exc) from None
        topic = meta.topics.get(self.topic)
        if topic is None or topic.error is not None or not topic.partitions:
            return None
        return len(topic.partitions)

    def publish(self, entries: dict[int, list[dict[str, Any]]]) -> int:
        """Produce entries to their partitions and wait until the broker has them; returns how many.

        Raises:
            LogDataError: When some were not delivered within ``timeout_s``.
        """
        if self._producer is None:
            self._producer = self._new_producer(self._conf(**{
                "acks": "all", "enable.idempotence": True, "linger.ms": 5}))
        producer = self._producer
        failed: list[str] = []

        def delivered(err: Any, _msg: Any) -> None:
            if err is not None:
                failed.append(str(err))

        n = 0
        for partition, rows in entries.items():
            if not 0 <= partition < self.partitions:
                raise ValueError(f"partition {partition} is not in 0..{self.partitions - 1}")
            name = str(partition).encode()
            for fields in rows:
                value = encode_fields(fields)
                while True:
                    try:
                        producer.produce(self.topic, value=value, key=name, partition=partition,
                                         on_delivery=delivered)
                        break
                    except BufferError:  # the local queue is full: let deliveries drain
                        producer.poll(0.1)
                n += 1
        left = producer.flush(self.timeout_s)
        if left or failed:
            raise LogDataError(f"Kafka at {self.bootstrap}: {len(failed) + left} of {n} entries "
                               f"not delivered to {self.topic} ({failed[0] if failed else 'timed out'})")
        return n

    # -- ownership -----------------------------------------------------------------------
    def _on_assign(self, _consumer: Any, partitions: list[Any]) -> None:
        for tp in partitions:
            if tp.topic == self.topic:
                self._assigned.add(tp.partition)
                self._position.pop(tp.partition, None)  # it restarts at the committed offset
                self._buffer.pop(tp.partition, None)
                self._paused.discard(tp.partition)

    def _on_revoke(self, _consumer: Any, partitions: list[Any]) -> None:
        for tp in partitions:
            if tp.topic != self.topic:
                continue
            p = tp.partition
            if p in self._announced:
                self._came_back.add(p)
            self._assigned.discard(p)
            self._announced.discard(p)
            self._buffer.pop(p, None)
            self._position.pop(p, None)
            self._paused.discard(p)

    def _ensure_consumer(self, worker: str) -> Any:
        if self._consumer is None:
            self._consumer = self._new_consumer(self._consumer_conf(worker))
            self._consumer.subscribe([self.topic], on_assign=self._on_assign,
                                     on_revoke=self._on_revoke, on_lost=self._on_revoke)
        return self._consumer

    def acquire(self, worker: str, owned: Iterable[int]) -> tuple[list[int], list[int]]:
        """The partitions the group assigned to ``worker`` and those assigned since the last call.

        Also records the worker as alive and sets the lease keys of its partitions. A partition
        the caller believes it still owns but that was revoked and assigned back meanwhile is
        left out once (so the caller forgets its cached sessions) and reported new next time.

        Returns:
            ``(partitions owned now, partitions newly taken)``.
        """
        self._ensure_consumer(worker)
        self._poll(0, 0.0)  # serve the group's callbacks (messages read now wait in the buffer)
        owned = set(owned)
        withheld = self._came_back & self._assigned & owned
        self._came_back.clear()
        now = sorted(self._assigned - withheld)
        taken = [p for p in now if p not in owned]
        for p in taken:
            if p in self._announced:  # the caller dropped it (a failed batch): read it again
                self._rewind(p)
        self._announced = set(now)
        resume = sorted(self._paused & self._announced)
        if resume:
            self._consumer.resume([self._tp(p) for p in resume])
            self._paused -= set(resume)
        self._heartbeat(worker, now)
        return now, taken

    def _heartbeat(self, worker: str, partitions: Sequence[int]) -> None:
        if self.client is None:
            return
        now_ms = int(time.time() * 1000)
        workers = self.key("workers")
        ttl = 2 * max(self.session_timeout_ms, self.lease_ms)
        pipe = self.client.pipeline(transaction=False)
        pipe.zadd(workers, {worker: now_ms})
        pipe.zremrangebyscore(workers, 0, now_ms - 2 * self.lease_ms)
        for p in partitions:
            pipe.set(self.key("lease", partition=p), worker, px=ttl)
        pipe.execute()

    def _rewind(self, partition: int) -> None:
        """Continue ``partition`` from its committed offset (entries read since are read again)."""
        committed = self._consumer.committed([self._tp(partition)], timeout=self.timeout_s)
        offset = committed[0].offset if committed and committed[0].offset >= 0 \
            else self.ck.OFFSET_BEGINNING
        self._consumer.seek(self._tp(partition, offset))
        self._buffer.pop(partition, None)
        self._position.pop(partition, None)
        logger.info("partition %d: reading again from offset %s", partition, offset)

    def release(self, worker: str, partitions: Iterable[int]) -> None:
        """On shutdown: drop ``worker``'s lease keys and leave the group (its partitions move on)."""
        if self.client is not None:
            for p in partitions:
                lease = self.key("lease", partition=p)
                if self.client.get(lease) == worker.encode():
                    self.client.delete(lease)
        self.close()

    def lease_keys(self, partitions: Iterable[int]) -> list[str]:
        """The lease keys of ``partitions`` (WATCHed by the verdict transaction)."""
        return [self.key("lease", partition=p) for p in partitions]

    def owns(self, worker: str, partitions: Sequence[int], pipe: Any) -> bool:
        """Inside a WATCH: whether ``partitions`` are still assigned here and leased to ``worker``."""
        if any(p not in self._announced for p in partitions):
            return False
        if self.client is None or not partitions:
            return True
        return all(v == worker.encode() for v in pipe.mget(self.lease_keys(partitions)))

    # -- consumer side -------------------------------------------------------------------
    def recover(self, worker: str, partition: int, count: int = 1000) -> list[Message]:
        """Nothing: Kafka redelivers a partition's uncommitted entries from its committed offset."""
        return []

    def _poll(self, count: int, timeout_s: float) -> None:
        """Consume up to ``count`` entries (0: only serve callbacks) into the buffer."""
        for m in self._consumer.consume(num_messages=max(1, count), timeout=timeout_s):
            err = m.error()
            if err is not None:
                if err.fatal():
                    raise self._unreachable(self.ck.KafkaException(err))
                logger.warning("Kafka consumer: %s", err)
                continue
            p, offset = m.partition(), m.offset()
            if m.topic() != self.topic or p not in self._assigned \
                    or offset < self._position.get(p, -1):
                continue  # not ours any more, or already read (a refetch after pause/resume)
            self._position[p] = offset + 1
            self._buffer[p].append(Message(p, str(offset), decode_fields(m.value())))

    def read(self, worker: str, partitions: Sequence[int], count: int, block_ms: int
             ) -> list[Message]:
        """Entries of ``partitions`` for ``worker`` (waits up to ``block_ms`` when none).

        Entries of other assigned partitions (not yet reported by :meth:`acquire`) wait in a
        buffer, their partitions paused, until they are.
        """
        if self._consumer is None:
            time.sleep(block_ms / 1000)
            return []
        if not any(self._buffer.get(p) for p in set(partitions) & self._announced):
            self._poll(count, block_ms / 1000)
        wanted = set(partitions) & self._announced  # again: the poll may have revoked some
        out: list[Message] = []
        for p in sorted(wanted):
            queued = self._buffer.get(p)
            if queued and len(out) < count:
                take = count - len(out)
                out += queued[:take]
                del queued[:take]
        held = sorted(p for p, q in self._buffer.items()
                      if q and p not in wanted and p not in self._paused)
        if held:
            self._consumer.pause([self._tp(p) for p in held])
            self._paused |= set(held)
        return out

    def ack(self, messages: Sequence[Message], pipe: Any | None = None) -> None:
        """Nothing inside the Redis transaction: :meth:`committed` commits the offsets after it."""

    def committed(self, messages: Sequence[Message]) -> None:
        """After the verdict transaction: commit the next offset of each partition (synchronously).

        A failed commit (the group rebalanced meanwhile) is logged, not raised: the entries are
        redelivered to the partition's owner, and redelivered events change nothing.
        """
        offsets = next_offsets(messages)
        if not offsets or self._consumer is None:
            return
        tps = [self._tp(p, o) for p, o in sorted(offsets.items())]
        try:
            result = self._consumer.commit(offsets=tps, asynchronous=False)
        except self.ck.KafkaException as exc:
            logger.warning("offset commit of partition(s) %s failed (%s): their entries will be "
                           "redelivered", sorted(offsets), exc)
            return
        for tp in result or []:
            if tp.error is not None:
                logger.warning("offset commit of partition %d failed (%s): its entries will be "
                               "redelivered", tp.partition, tp.error)

    def lag(self) -> list[dict[str, Any]]:
        """Per partition: length, lag (high watermark − committed offset), pending, owner.

        ``length`` is high − low watermark; nothing committed yet counts from the low watermark;
        ``pending`` is None (Kafka has no per-entry acknowledgement); ``owner`` is the lease holder.
        """
        if self._meta is None:
            self._meta = self._new_consumer(self._conf(**{
                "group.id": self.group, "enable.auto.commit": False}))
        meta = self._meta
        try:
            topic = meta.list_topics(timeout=self.timeout_s).topics.get(self.topic)
            exists = topic is not None and topic.error is None and bool(topic.partitions)
            tps = [self._tp(p) for p in range(self.partitions)]
            committed = {tp.partition: tp.offset
                         for tp in meta.committed(tps, timeout=self.timeout_s)} if exists else {}
            marks = [meta.get_watermark_offsets(tp, timeout=self.timeout_s, cached=False)
                     if exists else (0, 0) for tp in tps]
        except self.ck.KafkaException as exc:
            raise self._unreachable(exc) from None
        owners: list[Any] = [None] * self.partitions
        if self.client is not None:
            owners = self.client.mget(self.lease_keys(range(self.partitions)))
        return [lag_row(p, low, high, committed.get(p), owner.decode() if owner else None)
                for p, ((low, high), owner) in enumerate(zip(marks, owners, strict=True))]

    def close(self) -> None:
        """Leave the group and flush the producer (idempotent)."""
        for name in ("_consumer", "_meta"):
            consumer = getattr(self, name)
            setattr(self, name, None)
            if consumer is not None:
                try:
                    consumer.close()
                except (RuntimeError, self.ck.KafkaException) as exc:
                    logger.warning("closing the Kafka consumer: %s", exc)
        self._assigned.clear()
        self._announced.clear()
        self._buffer.clear()
        self._position.clear()
        self._paused.clear()
        if self._producer is not None:
            self._producer.flush(self.timeout_s)
            self._producer = None
