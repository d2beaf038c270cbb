"""``ingest`` (tail a file, follow rotation, or read stdin) and ``replay`` (a finished log at a rate).

Both read raw lines as bytes, drop oversize and invalid UTF-8 lines (counted), split the rest
with the service's log format and publish them to their partitions (:mod:`serving.events`).
The format, windowing and partition count are the ones the ``detect`` workers published in
``<prefix>:config``, so producers and consumers cannot disagree; start a worker first (``ingest``
waits for it up to ``--wait`` seconds).

Counters go to ``<prefix>:stats`` as ``ingest:lines``, ``ingest:events``, ``ingest:entries`` and
``ingest:skipped:<reason>``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from logdata.errors import LogDataError
from logdata.formats import parse_spec
from logdata.io import require_file
from logdata.readers import open_compressed
from serving.events import DEFAULT_MAX_LINE_BYTES, Batch, EventBuilder, Windowing, decode_lines, end_entries
from serving.transport import RedisStreams

logger = logging.getLogger(__name__)

OVERSIZE = object()  # marker yielded for a line longer than the limit
READ_CHUNK = 1 << 16


@dataclass(frozen=True)
class ServiceLayout:
    """What producers need to know, as published by the workers (``<prefix>:config``)."""

    format: dict[str, Any]
    windowing: Windowing
    partitions: int
    mode: str


def publish_layout(transport: RedisStreams, fmt: dict[str, Any], windowing: Windowing, mode: str
                   ) -> None:
    """Record the layout producers must follow (the worker does this at start)."""
    transport.client.hset(transport.key("config"), mapping={
        "format": json.dumps(fmt), "windowing": json.dumps(windowing.to_json()), "mode": mode,
        "partitions": transport.partitions})


def read_layout(client: Any, prefix: str, wait_s: float = 0.0) -> ServiceLayout:
    """The layout a worker published, waiting up to ``wait_s`` for one.

    Raises:
        LogDataError: When no worker published one.
    """
    deadline = time.monotonic() + wait_s
    while True:
        config = client.hgetall(f"{prefix}:config")
        if b"format" in config:
            return ServiceLayout(json.loads(config[b"format"]),
                                 Windowing(**json.loads(config[b"windowing"])),
                                 int(config[b"partitions"]), config[b"mode"].decode())
        if time.monotonic() >= deadline:
            raise LogDataError(f"no detector has published a layout under prefix {prefix!r}: "
                               "start `python -m serving detect` first (or raise --wait)")
        time.sleep(0.2)


class Publisher:
    """Decodes, splits, routes and publishes batches of raw lines.

    Args:
        transport: The partitioned streams.
        layout: The workers' layout.
        max_line_bytes: Longer lines are skipped (``oversize``).
        retry_s: How long to keep retrying while Redis is unreachable before giving up.
    """

    def __init__(self, transport: RedisStreams, layout: ServiceLayout,
                 max_line_bytes: int = DEFAULT_MAX_LINE_BYTES, retry_s: float = 60.0) -> None:
        if layout.partitions != transport.partitions:
            transport.partitions = layout.partitions
        self.t = transport
        self.builder = EventBuilder(parse_spec(layout.format, "service layout"), layout.windowing,
                                    layout.partitions)
        self.max_line_bytes = max_line_bytes
        self.retry_s = retry_s
        self.totals: Counter = Counter()

    def _ids(self, n: int) -> range:
        last = int(self._retry(lambda: self.t.client.incrby(self.t.key("seq"), n)))
        return range(last - n + 1, last + 1)

    def _retry(self, action: Any) -> Any:
        """Run ``action``, retrying while Redis is unreachable, up to ``retry_s`` seconds.

        Publishing again after a connection error may add an entry twice: the workers apply an
        event once per session (by its id), so a duplicate changes nothing.
        """
        import redis

        deadline, delay = time.monotonic() + self.retry_s, 0.1
        while True:
            try:
                return action()
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                if time.monotonic() + delay > deadline:
                    raise LogDataError(f"Redis unreachable for {self.retry_s:.0f} s: {exc}") from None
                logger.warning("Redis unreachable (%s); retrying in %.1f s", exc, delay)
                time.sleep(delay)
                delay = min(2 * delay, 5.0)

    def send(self, raw: list[Any]) -> Batch:
        """Publish one batch of raw lines (bytes, or :data:`OVERSIZE` markers)."""
        oversize = sum(1 for line in raw if line is OVERSIZE)
        lines, skipped = decode_lines([line for line in raw if line is not OVERSIZE],
                                      self.max_line_bytes)
        skipped["oversize"] += oversize
        batch = self.builder.build(lines, self._ids)
        batch.skipped.update(skipped)
        entries = self._retry(lambda: self.t.publish(batch.entries)) if batch.entries else 0
        counts = Counter({"ingest:lines": len(raw), "ingest:events": batch.events,
                          "ingest:entries": entries})
        counts.update({f"ingest:skipped:{k}": v for k, v in batch.skipped.items() if v})
        self._retry(lambda: self._count(counts))
        self.totals.update(counts)
        return batch

    def _count(self, counts: Counter) -> None:
        pipe = self.t.client.pipeline(transaction=False)
        for name, n in counts.items():
            pipe.hincrby(self.t.key("stats"), name, n)
        pipe.execute()

    def end(self) -> None:
        """Tell every worker the stream ended (they close all open sessions)."""
        self._retry(lambda: self.t.publish(end_entries(self.t.partitions)))


def iter_lines(stream: BinaryIO, max_line_bytes: int, follow: bool = False,
               reopen: Any = None) -> Iterator[Any]:
    """Raw lines of a binary stream without their newline; :data:`OVERSIZE` for too-long ones.

    Memory stays bounded by ``max_line_bytes`` whatever the line length. With ``follow`` it
    waits for more data at the end; ``reopen()`` (when given) returns a new stream when the file
    was rotated or truncated, else None. A final line without a newline is yielded at the end of
    a non-followed stream.
    """
    buffer, dropping = b"", False
    while True:
        chunk = stream.read1(READ_CHUNK) if hasattr(stream, "read1") else stream.read(READ_CHUNK)
        if not chunk:
            if not follow:
                if buffer and not dropping:
                    yield buffer
                elif dropping:
                    yield OVERSIZE
                return
            fresh = reopen() if reopen else None
            if fresh is not None:
                stream, buffer, dropping = fresh, b"", False
                continue
            yield None  # idle tick: lets the caller flush
            time.sleep(0.05)
            continue
        buffer += chunk
        while True:
            cut = buffer.find(b"\n")
            if cut < 0:
                if len(buffer) > max_line_bytes:
                    dropping, buffer = True, b""
                break
            line, buffer = buffer[:cut], buffer[cut + 1:]
            if dropping:
                dropping = False
                yield OVERSIZE
            elif len(line) > max_line_bytes:
                yield OVERSIZE
            else:
                yield line.rstrip(b"\r")


class FileFollower:
    """Reopens a followed file when it is rotated (new inode) or truncated."""

    def __init__(self, path: Path, from_start: bool) -> None:
        self.path = path
        self.stream = path.open("rb")
        if not from_start:
            self.stream.seek(0, os.SEEK_END)
        self.inode = os.fstat(self.stream.fileno()).st_ino

    def reopen(self) -> BinaryIO | None:
        """A new stream when the path now names another file or a shorter one, else None."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return None
        if stat.st_ino != self.inode or stat.st_size < self.stream.tell():
            logger.info("%s was rotated or truncated: reading it from the start", self.path)
            self.stream.close()
            self.stream = self.path.open("rb")
            self.inode = os.fstat(self.stream.fileno()).st_ino
            return self.stream
        return None


def ingest(publisher: Publisher, source: str, follow: bool = False, from_start: bool = True,
           batch_lines: int = 512, flush_ms: float = 10.0, max_seconds: float | None = None
           ) -> Counter:
    """Publish a file (``-``: stdin) until its end, or forever with ``follow``.

    Returns:
        The publisher's counters.
    """
    if source == "-":
        stream: BinaryIO = sys.stdin.buffer
        reopen = None
    else:
        path = Path(source)
        if not path.is_file():
            raise LogDataError(f"input {path} does not exist")
        follower = FileFollower(path, from_start)
        stream, reopen = follower.stream, follower.reopen
    pending: list[Any] = []
    last_flush = time.monotonic()
    started = time.monotonic()
    for line in iter_lines(stream, publisher.max_line_bytes, follow, reopen):
        if line is not None:
            pending.append(line)
        due = (time.monotonic() - last_flush) * 1000 >= flush_ms
        if pending and (len(pending) >= batch_lines or due or line is None):
            publisher.send(pending)
            pending, last_flush = [], time.monotonic()
        if max_seconds is not None and time.monotonic() - started >= max_seconds:
            break
    if pending:
        publisher.send(pending)
    return publisher.totals


def log_passes(path: Path, max_line_bytes: int, loop: bool = False) -> Iterator[Any]:
    """The raw lines of a plain or compressed log (:func:`iter_lines`), again when ``loop``.

    A pass that yields no line ends it, so an empty file never loops forever.
    """
    while True:
        count = 0
        with open_compressed(path) as stream:
            for line in iter_lines(stream, max_line_bytes):
                count += 1
                yield line
        if not loop or count == 0:
            return


def replay(publisher: Publisher, path: Path, rate: float, end: bool = True,
           max_lines: int | None = None, progress: bool = True, loop: bool = False,
           max_seconds: float | None = None) -> dict[str, float]:
    """Publish a finished log (plain or compressed) at ``rate`` lines/s (0: as fast as possible).

    Lines go out in ticks of 10 ms (``rate / 100`` lines each, at least one), each tick's batch
    stamped with its send time, so the offered load is even at the scale latency is measured on.
    With ``loop`` the log starts again at its end (soak runs), until ``max_lines`` or
    ``max_seconds``; event ids keep counting up, session keys repeat.

    Returns:
        ``lines``, ``seconds`` and the achieved ``rate``.
    """
    from tqdm.auto import tqdm

    require_file(path)  # a missing input fails before anything is published
    per_tick = max(1, int(rate / 100)) if rate > 0 else 2048
    sent = 0
    started = time.monotonic()
    bar = tqdm(desc=f"replay {path.name}", unit="line", disable=not progress, leave=False)
    batch: list[Any] = []
    for line in log_passes(path, publisher.max_line_bytes, loop):
        if max_lines is not None and sent + len(batch) >= max_lines:
            break
        if max_seconds is not None and time.monotonic() - started >= max_seconds:
            break
        batch.append(line)
        if len(batch) < per_tick:
            continue
        sent += _send_paced(publisher, batch, sent, rate, started)
        bar.update(len(batch))
        batch = []
    if batch:
        sent += _send_paced(publisher, batch, sent, rate, started)
        bar.update(len(batch))
    bar.close()
    seconds = time.monotonic() - started
    if end:
        publisher.end()
    return {"lines": sent, "seconds": seconds, "rate": sent / seconds if seconds else 0.0}


def _send_paced(publisher: Publisher, batch: list[Any], sent: int, rate: float, started: float
                ) -> int:
    if rate > 0:
        delay = started + sent / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    publisher.send(batch)
    return len(batch)
