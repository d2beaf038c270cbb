"""``python -m serving {redis,detect,ingest,replay,status,alerts,new-templates,export-onnx}``: the CLI."""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from logdata.cliargs import add_command, add_flag, add_input_flag, new_parser
from logdata.errors import LogDataError, run_cli
from serving.events import DEFAULT_MAX_LINE_BYTES
from serving.redis_server import redact_url
from serving.scoring import BACKENDS, DEFAULT_CACHE_TOKENS, DEFAULT_MAX_BATCH, ONNX_PROVIDERS
from serving.transport import DEFAULT_LEASE_MS, DEFAULT_PARTITIONS, DEFAULT_PREFIX

logger = logging.getLogger("serving")

DEFAULT_URL = "redis://127.0.0.1:6379/0"
ENV_URL = "LOGRL_REDIS_URL"
ENV_KAFKA = "LOGRL_KAFKA_BOOTSTRAP"


def _connection_flags(parser: argparse.ArgumentParser) -> None:
    add_flag(parser, "--redis", default=os.environ.get(ENV_URL, DEFAULT_URL), metavar="URL",
             help=f"Redis URL (default: ${ENV_URL} or {DEFAULT_URL})")
    add_flag(parser, "--prefix", default=DEFAULT_PREFIX, help="key prefix of this service")


def _transport_flags(parser: argparse.ArgumentParser) -> None:
    add_flag(parser, "--transport", choices=("redis", "kafka"), default="redis",
             help="event transport: Redis Streams, or Kafka (Redis still holds state and verdicts)")
    add_flag(parser, "--kafka-bootstrap", default=os.environ.get(ENV_KAFKA, "127.0.0.1:9092"),
             metavar="HOST:PORT", help=f"Kafka bootstrap servers (--transport kafka; ${ENV_KAFKA})")


def _client(url: str) -> Any:
    """A connected client for ``url`` (``redis://[:PASSWORD@]host:port/db``, or ``rediss://``).

    Raises:
        LogDataError: One line, the password redacted: refused credentials, or no server.
    """
    import redis

    try:
        client = redis.Redis.from_url(url)
        client.ping()
    except redis.AuthenticationError as exc:
        raise LogDataError(f"Redis at {redact_url(url)} refused the credentials ({exc}); give the "
                           f"password in the URL (redis://:PASSWORD@host:port/db) or ${ENV_URL}"
                           ) from None
    except (redis.RedisError, ValueError) as exc:
        raise LogDataError(f"cannot reach Redis at {redact_url(url)}: {exc} (start one with "
                           "`python -m serving redis start --dir DIR`)") from None
    return client


def _transport(args: argparse.Namespace, partitions: int | None = None, lease_ms: int = DEFAULT_LEASE_MS
               ) -> Any:
    from serving.transport import RedisStreams

    client = _client(args.redis)
    if partitions is None:
        stored = client.hget(f"{args.prefix}:config", "partitions")
        partitions = int(stored) if stored else DEFAULT_PARTITIONS
    if getattr(args, "transport", "redis") == "kafka":
        from serving.kafka import KafkaTransport

        return KafkaTransport(client, args.kafka_bootstrap, args.prefix, partitions, lease_ms,
                              group=f"{args.prefix}.detectors")
    return RedisStreams(client, args.prefix, partitions, lease_ms)


# -- redis ----------------------------------------------------------------------------------
def _redis(args: argparse.Namespace) -> int:
    from serving.redis_server import RedisServer, stop_in_folder

    if args.action == "stop":
        stopped = stop_in_folder(args.dir)
        print(f"stopped redis-server in {args.dir}" if stopped else f"no server recorded in {args.dir}")
        return 0
    server = RedisServer(args.dir, args.port, aof=args.aof)
    server.start()
    server.process = None  # leave it running after this command exits
    print(server.url)
    return 0


# -- detect ---------------------------------------------------------------------------------
def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LogDataError(f"cannot read the {what} {path}: {exc}") from None


def _meta(folder: Path, what: str) -> dict[str, Any]:
    """The ``meta.json`` of a data-stage output folder, which must have one."""
    from logdata.io import require_file
    from logdata.staging import META, read_meta

    require_file(folder / META, f"{what} meta")
    return read_meta(folder)


def _miner(parsed: Path) -> Any:
    from logdata.drain import MinerSettings, TemplateMiner

    store = parsed / "templates.json"
    settings = _read_json(store, "template store").get("settings") or {}
    try:
        miner_settings = MinerSettings(tuple(tuple(m) for m in settings["masks"]),
                                       int(settings["depth"]), float(settings["similarity"]),
                                       int(settings["max_children"]))
    except (KeyError, TypeError, ValueError):
        raise LogDataError(f"{store} records no parser settings; parse the log again") from None
    return TemplateMiner.load(store, miner_settings)


def _format(parsed: Path) -> dict[str, Any]:
    meta = _meta(parsed, "data-stage")
    fmt = meta.get("format")
    if not isinstance(fmt, dict):
        raise LogDataError(f"{parsed / 'meta.json'} records no log format; run `logdata prepare` or "
                           "`parse` again")
    return fmt


def _keyseq_setup(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """(detector, key → id function, windowing) from the model, sequences and flags."""
    from logdata.keyseq.sequences import CONTEXT_OVERHEAD
    from serving.detector import KeyRule, KeySequenceDetector
    from serving.events import Windowing
    from serving.scoring import build_scorer
    from validation import keyseq_detect as offline

    meta = _meta(args.sequences, "`logdata sequences`")
    params = meta.get("params", {})
    source = args.data_source or params.get("data_source") or "unknown"
    window = params.get("window") or {}
    kind = window.get("kind") or offline.window_kind(meta, source)
    offline.check_vocabulary(args.model, args.sequences / "test.parquet")
    scorer, tokenizer = build_scorer(args.backend, args.model, args.device, args.threads,
                                     args.max_batch, args.cache_tokens, None, args.providers)
    _, k = offline.resolve_k(args.k, source, offline.n_real_keys(tokenizer))
    context = int(params.get("context") or tokenizer.model_max_length)
    rule = KeyRule(k=k, min_misses=args.min_misses, skip_first=args.skip_first,
                   judge_eos=offline.resolve_judge_eos(args.judge_eos, kind),
                   max_keys=context - CONTEXT_OVERHEAD, min_events=int(window.get("min_events", 1)))
    windowing = Windowing(kind=kind, size=float(window.get("size") or 0),
                          step=float(window.get("step") or 0), min_events=rule.min_events,
                          origin=args.window_origin)
    cache: dict[str, int] = {}

    def key_id(name: str) -> int:
        if name not in cache:
            cache[name] = int(tokenizer.convert_tokens_to_ids(name))
        return cache[name]

    logger.info("key-sequence detection: K=%d, skip_first=%d, judge_eos=%s, chunks of %d keys, "
                "%s windows, backend %s", rule.k, rule.skip_first, rule.judge_eos, rule.max_keys,
                kind, args.backend)
    detector = KeySequenceDetector(rule, scorer, tokenizer.bos_token_id, tokenizer.eos_token_id)
    return detector, key_id, windowing


def _detect(args: argparse.Namespace) -> int:
    from serving.detector import TemplateDetector, load_predictions
    from serving.events import Windowing
    from serving.ingest import publish_layout
    from serving.worker import Worker, WorkerConfig

    if (args.model is None) == (args.predictions is None):
        raise LogDataError("pass --model with --sequences (next-key detection) or --predictions "
                           "(template detection)")
    if args.model is not None and args.sequences is None:
        raise LogDataError("--model needs --sequences (the `logdata sequences` folder it was "
                           "trained on: windowing, context, vocabulary)")
    miner = _miner(args.parsed)
    fmt = _format(args.parsed)
    if args.model is not None:
        detector, key_id, windowing = _keyseq_setup(args)
        mode = "keyseq"
    else:
        detector, key_id = TemplateDetector(load_predictions(args.predictions)), None
        windowing, mode = Windowing(kind="none"), "template"
    transport = _transport(args, args.partitions, args.lease_ms)
    transport.setup()
    publish_layout(transport, fmt, windowing, mode)
    name = args.name or f"{socket.gethostname()}-{os.getpid()}"
    config = WorkerConfig(name=name, batch=args.batch, block_ms=args.block_ms,
                          session_timeout_s=args.session_timeout, retention_s=args.retention,
                          max_line_bytes=args.max_line_bytes, format_name=fmt.get("name", ""),
                          exit_when_idle_s=args.exit_when_idle)
    worker = Worker(transport, config, miner, detector, key_id, windowing)
    print(f"worker {name}: {mode} detection on {redact_url(args.redis)} ({transport.partitions} partitions, "
          f"prefix {args.prefix})", flush=True)
    processed = worker.run()
    print(f"worker {name}: stopped after {processed:,} events")
    return 0


# -- producers ------------------------------------------------------------------------------
def _publisher(args: argparse.Namespace) -> Any:
    from serving.ingest import Publisher, read_layout

    client = _client(args.redis)
    layout = read_layout(client, args.prefix, args.wait)
    return Publisher(_transport(args, layout.partitions), layout, args.max_line_bytes)


def _ingest(args: argparse.Namespace) -> int:
    from serving.ingest import ingest

    totals = ingest(_publisher(args), str(args.input), args.follow, not args.from_end,
                    args.batch_lines, args.flush_ms, args.max_seconds)
    print(json.dumps(dict(totals)))
    return 0


def _replay(args: argparse.Namespace) -> int:
    from serving.ingest import replay

    if args.loop and args.max_lines is None and args.max_seconds is None:
        logger.warning("--loop without --max-lines or --max-seconds: replaying until interrupted")
    result = replay(_publisher(args), args.input, args.rate, not args.no_end, args.max_lines,
                    progress=not args.no_progress, loop=args.loop, max_seconds=args.max_seconds)
    print(f"replayed {result['lines']:,} lines in {result['seconds']:.2f} s "
          f"({result['rate']:,.0f} lines/s)")
    return 0


# -- status ---------------------------------------------------------------------------------
def _status(args: argparse.Namespace) -> int:
    from serving.status import collect, render

    transport = _transport(args)
    while True:
        report = collect(transport, args.interval)
        print(json.dumps(report, indent=1) if args.json else render(report), flush=True)
        if not args.watch:
            return 0
        time.sleep(max(0.0, args.watch - args.interval))


def _alerts(args: argparse.Namespace) -> int:
    """Print alerts from the alert stream, oldest first (or follow new ones)."""
    client = _client(args.redis)
    stream, last, shown = f"{args.prefix}:alerts:stream", "0-0", 0
    while True:
        reply = client.xread({stream: last}, count=args.limit - shown if args.limit else 1000,
                             block=1000 if args.follow else None)
        for _, entries in reply or []:
            for entry_id, fields in entries:
                last = entry_id
                print(fields[b"alert"].decode("utf-8", "replace"), flush=True)
                shown += 1
        if (args.limit and shown >= args.limit) or (not args.follow and not reply):
            return 0


def _new_templates(args: argparse.Namespace) -> int:
    """Write the templates the workers reported as new as a parquet model_predict.py reads."""
    from serving.templates import new_templates_frame, write_for_prediction

    client = _client(args.redis)
    frame = new_templates_frame(client, args.prefix)
    if frame.empty:
        print("no new templates reported")
        return 0
    path = write_for_prediction(frame, args.out, args.data_source, args.prompt)
    print(f"wrote {len(frame):,} new templates to {path}; classify them with "
          f"`python validation/model_predict.py --data {path} …` and restart the template workers "
          "with the merged predictions")
    return 0


def _export(args: argparse.Namespace) -> int:
    from serving.scoring import ONNX_FILE, export_onnx
    from verl_recipes.local.keyseq.model import load_model

    model, _ = load_model(args.model)
    out = export_onnx(model, args.out or args.model / ONNX_FILE)
    print(f"wrote {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    parser = new_parser("python -m serving", "LogRL real-time detection service (Redis Streams).")
    add_flag(parser, "-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    red = add_command(sub, "redis", "start or stop a local redis-server (tests, demo, benchmarks)")
    red.add_argument("action", choices=("start", "stop"))
    add_flag(red, "--dir", type=Path, required=True, metavar="PATH",
             help="server folder (data files, log, port)")
    add_flag(red, "--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: a free one)")
    add_flag(red, "--aof", action="store_true", help="append-only file, fsync on every write")
    red.set_defaults(func=_redis)

    det = add_command(sub, "detect", "run a detection worker (start several to scale out)")
    _connection_flags(det)
    _transport_flags(det)
    add_flag(det, "--parsed", type=Path, required=True, metavar="PATH",
             help="`logdata prepare`/`parse` output folder: templates.json and meta.json (format)")
    add_flag(det, "--model", type=Path, default=None, metavar="PATH",
             help="next-key model folder (key-sequence detection)")
    add_flag(det, "--sequences", type=Path, default=None, metavar="PATH",
             help="`logdata sequences` folder the model was trained on")
    add_flag(det, "--predictions", type=Path, default=None, metavar="PATH",
             help="model_predict.py's predictions.parquet (template detection)")
    add_flag(det, "--partitions", type=int, default=DEFAULT_PARTITIONS,
             help="partition streams (fixed once created under a prefix)")
    add_flag(det, "--backend", choices=BACKENDS, default="torch", help="inference backend")
    add_flag(det, "--providers", choices=sorted(ONNX_PROVIDERS), default="cpu",
             help="ONNX Runtime execution providers (onnx backend)")
    add_flag(det, "--device", default="cpu", help="torch device (torch backend)")
    add_flag(det, "--threads", type=int, default=None, help="torch/ONNX intra-op threads")
    add_flag(det, "--k", type=int, default=None, help="top-K (default: keyseq_detect's by data source)")
    add_flag(det, "--min-misses", type=int, default=0, help="abnormal when misses exceed this")
    add_flag(det, "--skip-first", type=int, default=1, help="leading keys never judged (LogGPT: 1)")
    add_flag(det, "--judge-eos", action=argparse.BooleanOptionalAction, default=None,
             help="judge <eos> at session close (default: keyseq_detect's rule by window kind)")
    add_flag(det, "--data-source", default=None, help="overrides the sequences meta")
    add_flag(det, "--window-origin", type=float, default=0.0,
             help="t0 of the time-window grid, seconds since the epoch")
    add_flag(det, "--batch", type=int, default=512, help="entries per read")
    add_flag(det, "--block-ms", type=int, default=20, help="read wait when idle")
    add_flag(det, "--max-batch", type=int, default=DEFAULT_MAX_BATCH, help="sessions per forward pass")
    add_flag(det, "--cache-tokens", type=int, default=DEFAULT_CACHE_TOKENS,
             help="KV-cache budget in tokens (torch backend)")
    add_flag(det, "--session-timeout", type=float, default=30.0, help="close sessions idle this long (s)")
    add_flag(det, "--lease-ms", type=int, default=DEFAULT_LEASE_MS,
             help="partition lease: a dead worker's partitions move after this long")
    add_flag(det, "--retention", type=int, default=86_400, help="verdicts expire after this long (s)")
    add_flag(det, "--max-line-bytes", type=int, default=DEFAULT_MAX_LINE_BYTES,
             help="longer messages are counted and skipped")
    add_flag(det, "--name", default=None, help="worker name (default: host-pid)")
    add_flag(det, "--exit-when-idle", type=float, default=None, metavar="S",
             help="stop after S seconds without entries and no open session")
    det.set_defaults(func=_detect)

    for name, helptext in (("ingest", "tail a log file (or stdin: --input -) into the streams"),
                           ("replay", "push a finished log at a given rate (tests, benchmarks)")):
        cmd = add_command(sub, name, helptext)
        _connection_flags(cmd)
        _transport_flags(cmd)
        add_input_flag(cmd, "raw log file" + (" or - for stdin" if name == "ingest"
                                              else " (plain or compressed)"))
        add_flag(cmd, "--max-line-bytes", type=int, default=DEFAULT_MAX_LINE_BYTES,
                 help="longer lines are counted and skipped")
        add_flag(cmd, "--wait", type=float, default=30.0, help="wait this long for a worker's layout")
        if name == "ingest":
            add_flag(cmd, "--follow", action="store_true", help="keep reading; follow rotation")
            add_flag(cmd, "--from-end", action="store_true", help="start at the end of the file")
            add_flag(cmd, "--batch-lines", type=int, default=512, help="lines per publish")
            add_flag(cmd, "--flush-ms", type=float, default=10.0, help="publish at least this often")
            add_flag(cmd, "--max-seconds", type=float, default=None, help="stop after this long")
            cmd.set_defaults(func=_ingest)
        else:
            add_flag(cmd, "--rate", type=float, default=5000.0, help="lines per second (0: no limit)")
            add_flag(cmd, "--max-lines", type=int, default=None, help="stop after this many lines")
            add_flag(cmd, "--max-seconds", type=float, default=None, help="stop after this long")
            add_flag(cmd, "--loop", action="store_true",
                     help="start the log again at its end (soak runs; stop with --max-lines/--max-seconds)")
            add_flag(cmd, "--no-end", action="store_true",
                     help="do not close the sessions at the end (no end marker)")
            add_flag(cmd, "--no-progress", action="store_true", help="hide the progress bar")
            cmd.set_defaults(func=_replay)

    st = add_command(sub, "status", "lag, pending entries, throughput, latency, skipped lines")
    _connection_flags(st)
    _transport_flags(st)
    add_flag(st, "--interval", type=float, default=1.0, help="seconds between the two throughput samples")
    add_flag(st, "--watch", type=float, default=None, metavar="S", help="repeat every S seconds")
    add_flag(st, "--json", action="store_true", help="print JSON")
    st.set_defaults(func=_status)

    al = add_command(sub, "alerts", "print alerts (the alert stream), oldest first")
    _connection_flags(al)
    add_flag(al, "--limit", type=int, default=0, help="stop after this many (0: all)")
    add_flag(al, "--follow", action="store_true", help="keep waiting for new alerts")
    al.set_defaults(func=_alerts)

    nt = add_command(sub, "new-templates",
                     "write the templates workers reported as new for model_predict.py")
    _connection_flags(nt)
    add_flag(nt, "--out", type=Path, required=True, metavar="PATH", help="output folder")
    add_flag(nt, "--data-source", default="custom", help="data_source of the rows")
    add_flag(nt, "--prompt", default="cot", help="system prompt variant (logdata.templates.prompts)")
    nt.set_defaults(func=_new_templates)

    ex = add_command(sub, "export-onnx",
                     "export a next-key model to ONNX (the onnx backend does it on first use)")
    add_flag(ex, "--model", type=Path, required=True, metavar="PATH", help="next-key model folder")
    add_flag(ex, "--out", type=Path, default=None, metavar="PATH", help="default: MODEL/model.onnx")
    ex.set_defaults(func=_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: one-line errors, status 2 on bad input."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run_cli(lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
