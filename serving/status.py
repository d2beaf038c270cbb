"""``status``: per-partition lag and pending entries, throughput, latency percentiles, skips."""

from __future__ import annotations

import time
from typing import Any

from serving.transport import RedisStreams
from serving.worker import percentile_from_histogram


def _counters(client: Any, name: str) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in client.hgetall(name).items()}


def latency_histogram(transport: RedisStreams) -> dict[int, int]:
    """The workers' end-to-end latency histogram (bucket → events)."""
    return {int(k): v for k, v in _counters(transport.client, transport.key("latency")).items()}


def collect(transport: RedisStreams, interval: float = 1.0) -> dict[str, Any]:
    """A status report: counters sampled twice ``interval`` seconds apart for the rates.

    Returns:
        ``partitions`` (lag, pending, length, owner), ``workers``, ``counters``, ``rates``
        (events/s processed and ingested), ``latency_ms`` (p50, p99), ``open_sessions``.
    """
    stats = transport.key("stats")
    before = _counters(transport.client, stats)
    time.sleep(max(0.0, interval))
    after = _counters(transport.client, stats)
    hist = latency_histogram(transport)
    now_ms = time.time() * 1000
    workers = transport.client.zrangebyscore(transport.key("workers"),
                                             now_ms - 2 * transport.lease_ms, "+inf")
    return {
        "partitions": transport.lag(),
        "workers": sorted(w.decode() for w in workers),
        "counters": after,
        "rates": {name: (after.get(name, 0) - before.get(name, 0)) / interval if interval else None
                  for name in ("events", "ingest:events")},
        "latency_ms": {"p50": percentile_from_histogram(hist, 0.5),
                       "p99": percentile_from_histogram(hist, 0.99), "events": sum(hist.values())},
        "open_sessions": sum(int(transport.client.zcard(transport.key("open", partition=p)))
                             for p in range(transport.partitions)),
        "alerts": int(transport.client.hlen(transport.key("alerts"))),
        "new_templates": int(transport.client.xlen(transport.key("templates_new")))
        if transport.client.exists(transport.key("templates_new")) else 0,
    }


def render(report: dict[str, Any]) -> str:
    """The report as a few lines of text."""
    lines = [f"workers: {', '.join(report['workers']) or 'none'}"]
    for row in report["partitions"]:
        lines.append(f"  partition {row['partition']}: lag {row['lag']}, pending {row['pending']}, "
                     f"length {row['length']}, owner {row['owner'] or '-'}")
    rates, lat, c = report["rates"], report["latency_ms"], report["counters"]

    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    lines.append(f"processed {c.get('events', 0):,} events ({rates['events'] or 0:,.0f}/s), "
                 f"ingested {c.get('ingest:events', 0):,} ({rates['ingest:events'] or 0:,.0f}/s)")
    lines.append(f"latency p50 {fmt(lat['p50'])} ms, p99 {fmt(lat['p99'])} ms over {lat['events']:,} events")
    skipped = {k: v for k, v in c.items() if "skipped:" in k}
    lines.append(f"open sessions {report['open_sessions']:,}, alerts {report['alerts']:,}, new templates "
                 f"{report['new_templates']:,}, skipped {skipped or 'none'}")
    return "\n".join(lines)
