"""The Kafka transport (serving/kafka.py).

Unit tests need neither a broker nor confluent-kafka: the entry encoding, partition routing, the
offsets committed, and the ownership/redelivery logic over an in-memory fake of the consumer
group. The integration test runs against a real broker at ``$LOGRL_KAFKA_BOOTSTRAP`` (default
127.0.0.1:9092) and is skipped when none answers within about 2 s.
"""

from __future__ import annotations

import os
import random
import time
import uuid
from types import SimpleNamespace

import pytest

from serving import kafka
from serving.kafka import (
    KafkaTransport,
    decode_fields,
    encode_fields,
    lag_row,
    next_offsets,
    pack_fields,
    unpack_fields,
)
from serving.transport import Message, partition_of


# -- the value encoding ------------------------------------------------------------------------
def _awkward_fields() -> dict[bytes, bytes]:
    rng = random.Random(0)
    return {
        b"e": b"12345", b"t": b"1700000000000000000", b"f": b"hdfs", b"s": b"blk_1 blk_2",
        b"c": b"bad \xff\xfe\xc3\x28 utf-8 \x00 nul",  # invalid UTF-8 and a NUL
        b"empty": b"",
        b"\xff key": b"\x80",  # invalid UTF-8 in a field name
        b"big": rng.randbytes(1 << 20),  # 1 MB of random bytes (bin 32)
        b"mid": rng.randbytes(300),  # bin 16
    }


@pytest.mark.parametrize("codec", ["pure", "default"])
def test_entry_values_round_trip_arbitrary_bytes(codec):
    fields = _awkward_fields()
    enc, dec = (pack_fields, unpack_fields) if codec == "pure" else (encode_fields, decode_fields)
    assert dec(enc(fields)) == fields
    many = {f"k{i}".encode(): bytes([i % 256]) * (i % 40) for i in range(70_000)}  # map 32
    assert dec(enc(many)) == many
    assert dec(enc({})) == {}


def test_the_pure_codec_and_msgspec_write_the_same_bytes():
    msgspec = pytest.importorskip("msgspec")
    fields = _awkward_fields()
    assert pack_fields(fields) == msgspec.msgpack.encode(fields)
    assert unpack_fields(msgspec.msgpack.encode(fields)) == fields
    assert msgspec.msgpack.decode(pack_fields(fields), type=dict[bytes, bytes]) == fields


def test_producer_fields_are_encoded_like_redis_does():
    # what Publisher hands over: str and int values (redis-py sends them as UTF-8 text)
    assert decode_fields(encode_fields({"e": 7, "t": "17", "c": "héllo", "x": 1.5})) == \
        {b"e": b"7", b"t": b"17", b"c": "héllo".encode(), b"x": b"1.5"}
    with pytest.raises(TypeError):
        encode_fields({"e": None})


@pytest.mark.parametrize("value", [b"junk", b"", None, b"\x81\xc4\x01e", b"\x81\xc4\x01e\xa1x",
                                   pack_fields({b"e": b"1"}) + b"!", b"\x92\xc4\x00\xc4\x00"])
def test_undecodable_values_become_malformed_entries(value):
    from serving.worker import decode

    assert decode_fields(value) == {}
    with pytest.raises(ValueError):
        unpack_fields(value or b"")
    assert decode(Message(0, "0", decode_fields(value)), "hdfs", 100) == "malformed"


def test_invalid_utf8_content_reaches_the_worker_as_invalid_utf8():
    from serving.worker import decode

    fields = decode_fields(encode_fields({"e": "3", "t": "1", "f": "hdfs", "s": "blk_1",
                                          "c": b"\xff\xfe"}))
    assert decode(Message(0, "0", fields), "hdfs", 100) == "invalid_utf8"


def test_next_offsets_is_the_highest_offset_plus_one_per_partition():
    messages = [Message(2, "7", {}), Message(0, "10", {}), Message(2, "9", {}), Message(0, "3", {}),
                Message(1, "0", {})]
    assert next_offsets(messages) == {0: 11, 1: 1, 2: 10}
    assert next_offsets([]) == {}


def test_lag_rows():
    assert lag_row(1, 100, 250, 200) == {"partition": 1, "length": 150, "lag": 50, "pending": None,
                                         "owner": None}
    assert lag_row(0, 100, 250, None)["lag"] == 150  # nothing committed: from the low watermark
    assert lag_row(0, 100, 250, -1001)["lag"] == 150  # OFFSET_INVALID
    assert lag_row(0, 0, 0, None, "w1") == {"partition": 0, "length": 0, "lag": 0, "pending": None,
                                            "owner": "w1"}


def test_a_missing_confluent_kafka_is_one_clear_line(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_kafka(name, *args, **kwargs):
        if name.startswith("confluent_kafka"):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_kafka)
    with pytest.raises(kafka.LogDataError, match=r"^the Kafka transport needs confluent-kafka: "
                                                 r"pip install -e '\.\[kafka\]'$"):
        KafkaTransport(None, "127.0.0.1:9092")


# -- an in-memory consumer group -----------------------------------------------------------------
class TopicPartition:
    def __init__(self, topic, partition, offset=-1001):
        self.topic, self.partition, self.offset, self.error = topic, partition, offset, None


class KafkaException(Exception):
    pass


FAKE_CK = SimpleNamespace(TopicPartition=TopicPartition, KafkaException=KafkaException,
                          OFFSET_BEGINNING=-2)


class FakeMessage:
    def __init__(self, topic, partition, offset, value):
        self._t, self._p, self._o, self._v = topic, partition, offset, value

    def error(self):
        return None

    def topic(self):
        return self._t

    def partition(self):
        return self._p

    def offset(self):
        return self._o

    def value(self):
        return self._v


class FakeBroker:
    """One topic's log per partition and the group's committed offsets."""

    def __init__(self, partitions):
        self.log = {p: [] for p in range(partitions)}
        self.committed: dict[int, int] = {}


class FakeProducer:
    def __init__(self, broker, fail=False):
        self.broker, self.fail, self.pending, self.calls = broker, fail, [], []

    def produce(self, topic, value, key, partition, on_delivery):
        self.calls.append((topic, key, partition))
        self.pending.append((partition, value, on_delivery))

    def poll(self, timeout):
        return 0

    def flush(self, timeout):
        for partition, value, callback in self.pending:
            if self.fail:
                callback("broker down", None)
            else:
                self.broker.log[partition].append(value)
                callback(None, None)
        self.pending = []
        return 0


class FakeConsumer:
    """The group coordinator's decisions are scheduled with :meth:`assign`/:meth:`revoke` and
    delivered, like librdkafka's, from inside ``consume``."""

    def __init__(self, broker):
        self.broker, self.events, self.assigned, self.paused, self.position = broker, [], set(), set(), {}
        self.callbacks = None
        self.generation = 0

    def subscribe(self, topics, on_assign, on_revoke, on_lost):
        self.topic = topics[0]
        self.callbacks = (on_assign, on_revoke)

    def assign(self, *partitions):
        self.events.append(("assign", partitions))

    def revoke(self, *partitions):
        self.events.append(("revoke", partitions))

    def consume(self, num_messages, timeout):
        for kind, partitions in self.events:
            tps = [TopicPartition(self.topic, p) for p in partitions]
            if kind == "assign":
                self.generation += 1
                self.assigned |= set(partitions)
                for p in partitions:
                    self.position[p] = self.broker.committed.get(p, 0)
                self.callbacks[0](self, tps)
            else:
                self.callbacks[1](self, tps)
                self.assigned -= set(partitions)
                self.paused -= set(partitions)
        self.events = []
        out = []
        for p in sorted(self.assigned - self.paused):
            while len(out) < num_messages and self.position[p] < len(self.broker.log[p]):
                out.append(FakeMessage(self.topic, p, self.position[p],
                                       self.broker.log[p][self.position[p]]))
                self.position[p] += 1
        return out

    def pause(self, tps):
        self.paused |= {tp.partition for tp in tps}

    def resume(self, tps):
        self.paused -= {tp.partition for tp in tps}

    def seek(self, tp):
        self.position[tp.partition] = 0 if tp.offset == -2 else tp.offset

    def committed(self, tps, timeout):
        return [TopicPartition(tp.topic, tp.partition, self.broker.committed.get(tp.partition, -1001))
                for tp in tps]

    def commit(self, offsets, asynchronous):
        assert asynchronous is False
        if any(tp.partition not in self.assigned for tp in offsets):
            raise KafkaException("REBALANCE_IN_PROGRESS")
        for tp in offsets:
            self.broker.committed[tp.partition] = tp.offset
        return offsets

    def close(self):
        if self.assigned:
            self.callbacks[1](self, [TopicPartition(self.topic, p) for p in self.assigned])
        self.assigned = set()


@pytest.fixture
def fake_kafka(monkeypatch):
    monkeypatch.setattr(kafka, "kafka_module", lambda: FAKE_CK)
    broker = FakeBroker(3)

    def make(client=None, fail=False):
        t = KafkaTransport(client, "fake:9092", prefix="t", partitions=3)
        t._new_producer = lambda conf: FakeProducer(broker, fail)
        t._new_consumer = lambda conf: FakeConsumer(broker)
        return t

    return SimpleNamespace(broker=broker, make=make)


def _events(n, partitions=3):
    """``n`` events of sessions s0…s9, routed like ``Publisher`` does."""
    entries: dict[int, list] = {}
    for i in range(n):
        sid = f"s{i % 10}"
        entries.setdefault(partition_of(sid, partitions), []).append(
            {"e": str(i), "t": "1", "f": "hdfs", "s": sid, "c": f"line {i}".encode() + b"\xff"})
    return entries


def test_publish_produces_every_entry_to_its_own_partition(fake_kafka):
    t = fake_kafka.make()
    entries = _events(50)
    assert t.publish(entries) == 50
    assert {call[0] for call in t._producer.calls} == {"t.events"}
    assert all(key == str(p).encode() for _, key, p in t._producer.calls)
    for p, rows in entries.items():
        got = [decode_fields(v) for v in fake_kafka.broker.log[p]]
        assert [f[b"e"] for f in got] == [r["e"].encode() for r in rows]  # in order, all there
        assert {f[b"s"].decode() for f in got} <= {r["s"] for r in rows}
        assert all(partition_of(f[b"s"].decode(), 3) == p for f in got)
    with pytest.raises(ValueError, match="partition 3"):
        t.publish({3: [{"e": "1"}]})


def test_publish_raises_when_entries_are_not_delivered(fake_kafka):
    with pytest.raises(kafka.LogDataError, match="1 of 1 entries not delivered"):
        fake_kafka.make(fail=True).publish({0: [{"e": "1"}]})


def _drain(t, worker, owned, limit=100):
    out = []
    for _ in range(limit):
        got = t.read(worker, owned, 7, 0)
        if not got:
            break
        out += got
    return out


def test_assignment_reading_committing_and_redelivery(fake_kafka):
    t = fake_kafka.make()
    t.publish(_events(60))
    assert t.acquire("w1", []) == ([], [])
    consumer = t._consumer
    consumer.assign(0, 1, 2)
    assert t.read("w1", [], 100, 0) == []  # assigned, not yet announced: held back
    owned, taken = t.acquire("w1", [])
    assert owned == taken == [0, 1, 2]
    assert all(t.recover("w1", p) == [] for p in owned)
    assert t.owns("w1", owned, None) and t.lease_keys([1]) == ["t:lease:1"]
    got = _drain(t, "w1", owned)
    assert sorted(int(m.fields[b"e"]) for m in got) == list(range(60))
    by_p = {p: [int(m.id) for m in got if m.partition == p] for p in owned}
    assert all(ids == list(range(len(fake_kafka.broker.log[p]))) for p, ids in by_p.items())
    # the first half of partition 0 is committed, nothing of the others
    half = [m for m in got if m.partition == 0][: len(by_p[0]) // 2]
    t.ack(half)
    t.committed(half)
    assert fake_kafka.broker.committed == {0: len(half)}
    # a rebalance moves everything to another worker: it gets exactly the uncommitted entries
    consumer.revoke(0, 1, 2)
    assert t.read("w1", owned, 100, 0) == []
    assert not t.owns("w1", [0], None)  # a transaction still in flight must not commit
    assert t.acquire("w1", owned) == ([], [])
    t2 = fake_kafka.make()
    t2.acquire("w2", [])
    t2._consumer.assign(0, 1, 2)
    t2.read("w2", [], 100, 0)
    assert t2.acquire("w2", []) == ([0, 1, 2], [0, 1, 2])
    again = _drain(t2, "w2", [0, 1, 2])
    assert sorted((m.partition, m.id) for m in again) == \
        sorted((m.partition, m.id) for m in got if m not in half)
    t2.committed(again)
    assert fake_kafka.broker.committed == {p: len(fake_kafka.broker.log[p]) for p in range(3)}


def _assigned(fake_kafka):
    """A transport with 30 events published and partitions 0-2 assigned to worker w1."""
    t = fake_kafka.make()
    t.publish(_events(30))
    t.acquire("w1", [])
    t._consumer.assign(0, 1, 2)
    t.read("w1", [], 1, 0)
    owned, _ = t.acquire("w1", [])
    return t, owned


def test_a_partition_revoked_and_assigned_back_is_forgotten_once(fake_kafka):
    t, owned = _assigned(fake_kafka)
    first = _drain(t, "w1", owned)
    t.committed([m for m in first if m.partition != 1])
    t._consumer.revoke(0, 1, 2)
    t._consumer.assign(1, 2)  # between two acquire calls; another worker may have run partition 1
    assert t.read("w1", owned, 100, 0) == []  # nothing handed out for unannounced partitions
    assert 1 in t._paused  # its entries wait, the partition paused
    owned, taken = t.acquire("w1", owned)
    assert (owned, taken) == ([], [])  # left out once: the worker drops its cached sessions
    owned, taken = t.acquire("w1", owned)
    assert owned == taken == [1, 2]
    redelivered = _drain(t, "w1", owned)
    assert sorted((m.partition, m.id) for m in redelivered) == \
        sorted((m.partition, m.id) for m in first if m.partition == 1)  # only the uncommitted


def test_a_partition_the_worker_dropped_is_read_again_from_its_committed_offset(fake_kafka):
    t, owned = _assigned(fake_kafka)
    p = owned[0]
    batch = [m for m in _drain(t, "w1", owned) if m.partition == p]
    t.committed(batch[:2])
    # the worker's transaction failed: it dropped p from its partitions without committing
    owned_now, taken = t.acquire("w1", [q for q in owned if q != p])
    assert owned_now == owned and taken == [p]
    again = _drain(t, "w1", owned_now)
    assert [m.id for m in again] == [m.id for m in batch[2:]]


def test_the_worker_commit_pattern_watches_lease_keys(fake_kafka, redis_server):
    """The worker's verdict transaction (WATCH lease keys, owns, MULTI, ack, EXEC, committed)."""
    import redis

    client = redis_server.client()
    t = fake_kafka.make(client)
    t.publish(_events(12))
    t.acquire("w1", [])
    t._consumer.assign(0, 1, 2)
    t.read("w1", [], 1, 0)
    owned, _ = t.acquire("w1", [])
    assert client.zrange("t:workers", 0, -1) == [b"w1"]
    assert client.get("t:lease:0") == b"w1" and client.pttl("t:lease:0") > 0
    messages = _drain(t, "w1", owned)

    def commit(worker, partitions, batch, meddle=None):
        with client.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(*t.lease_keys(partitions))  # an empty list would be a Redis error
                if meddle:
                    meddle()
                if not t.owns(worker, partitions, pipe):
                    raise redis.WatchError("lease lost")
                pipe.multi()
                pipe.hincrby("t:stats", "entries", len(batch))
                t.ack(batch, pipe)
                pipe.execute()
                t.committed(batch)
                return True
            except redis.WatchError:
                return False

    first = [m for m in messages if m.partition == owned[0]]
    assert commit("w1", [owned[0]], first)
    assert fake_kafka.broker.committed == {owned[0]: int(first[-1].id) + 1}
    # another worker got the partition and set its lease meanwhile: the transaction aborts
    rest = [m for m in messages if m.partition == owned[1]]
    assert not commit("w1", [owned[1]], rest, meddle=lambda: client.set("t:lease:1", "w2"))
    assert owned[1] not in fake_kafka.broker.committed
    # … or before it started: owns() reads the lease and says no
    client.set("t:lease:2", "w3")
    assert not commit("w1", [owned[2]], [m for m in messages if m.partition == owned[2]])
    assert owned[2] not in fake_kafka.broker.committed
    assert int(client.hget("t:stats", "entries")) == len(first)
    t.release("w1", owned)
    assert client.get("t:lease:0") is None and client.get("t:lease:1") == b"w2"
    assert client.get("t:lease:2") == b"w3"


# -- a real broker --------------------------------------------------------------------------------
BOOTSTRAP = os.environ.get("LOGRL_KAFKA_BOOTSTRAP", "127.0.0.1:9092")


@pytest.fixture
def broker():
    pytest.importorskip("confluent_kafka", reason="confluent-kafka is not installed (.[kafka])")
    why = kafka.broker_reachable(BOOTSTRAP, timeout_s=2.0)
    if why:
        pytest.skip(f"{why}; set LOGRL_KAFKA_BOOTSTRAP to a broker to run this test")
    prefix = f"logrl-test-{uuid.uuid4().hex[:8]}"
    yield SimpleNamespace(bootstrap=BOOTSTRAP, prefix=prefix, group=f"{prefix}-detectors")
    from confluent_kafka.admin import AdminClient

    AdminClient({"bootstrap.servers": BOOTSTRAP}).delete_topics([f"{prefix}.events"])


def _worker_read(t, worker, want, deadline_s=60.0):
    """A worker-like loop: acquire (every round here) and read until ``want`` entries came."""
    owned: list[int] = []
    got: list[Message] = []
    deadline = time.monotonic() + deadline_s
    while len(got) < want and time.monotonic() < deadline:
        owned, taken = t.acquire(worker, owned)
        for p in taken:
            got += t.recover(worker, p)
        got += t.read(worker, owned, 100, 200)
    return owned, got


def test_a_real_broker_delivers_commits_and_redelivers(broker):
    n, partitions = 120, 4

    def make() -> KafkaTransport:
        return KafkaTransport(None, broker.bootstrap, broker.prefix, partitions, 6000,
                              group=broker.group, timeout_s=15)

    producer = make()
    producer.setup()
    producer.setup()  # idempotent
    entries = _events(n, partitions)
    assert producer.publish(entries) == n
    lag = producer.lag()
    assert [row["length"] for row in lag] == [len(entries.get(p, [])) for p in range(partitions)]
    assert [row["lag"] for row in lag] == [row["length"] for row in lag]  # nothing committed yet

    first = make()
    owned, got = _worker_read(first, "w1", n)
    assert owned == list(range(partitions))
    assert sorted(int(m.fields[b"e"]) for m in got) == list(range(n))
    assert all(m.fields[b"c"].endswith(b"\xff") for m in got)  # invalid UTF-8 arrives unchanged
    for p in range(partitions):  # in order per partition, offsets from 0
        assert [int(m.id) for m in got if m.partition == p] == list(range(len(entries.get(p, []))))
    done = [m for m in got if int(m.id) < len(entries.get(m.partition, [])) // 2]
    first.ack(done)
    first.committed(done)
    first.release("w1", owned)  # leaves the group: the uncommitted half goes to the next owner

    second = make()
    owned, again = _worker_read(second, "w2", n - len(done))
    assert sorted((m.partition, m.id) for m in again) == \
        sorted((m.partition, m.id) for m in got if m not in done)
    assert [row["lag"] for row in producer.lag()] == \
        [len(entries.get(p, [])) - len(entries.get(p, [])) // 2 for p in range(partitions)]
    second.committed(again)
    assert [row["lag"] for row in producer.lag()] == [0] * partitions
    second.release("w2", owned)
    producer.close()
