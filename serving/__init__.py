"""Real-time log anomaly detection over Redis Streams (Kafka adapter): ``python -m serving``.

* :mod:`serving.ingest` — ``ingest``/``replay``: raw lines → parsed events → partition streams;
* :mod:`serving.events` — field split, sessions (as the offline stage cuts them) and routing;
* :mod:`serving.transport` — partitioned Redis Streams, consumer groups, leases, every Redis key;
* :mod:`serving.worker` — the ``detect`` loop: at-least-once, verdicts, alerts, idle sessions;
* :mod:`serving.detector` — next-key top-K per session (the offline rule) and per-template verdicts;
* :mod:`serving.scoring` — PyTorch with a per-session KV cache, or ONNX Runtime;
* :mod:`serving.redis_server` — a real ``redis-server`` for tests, the demo and benchmarks;
* :mod:`serving.status` — lag, pending, throughput, latency percentiles.
"""
