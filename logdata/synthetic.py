"""Synthetic logs with our own templates, in BGL-like and HDFS-like formats.

Logs are interleaved *workflows*: a BGL-like job, boot, I/O, health-poll or network bring-up,
or an HDFS-like block write or replication, each running its steps in a fixed order with
varying parameters, on timestamps that only increase. A share ``anomaly_rate`` of workflows is
abnormal, in one of two ways (chosen at random):

* an **alert**: one or two anomaly templates (kernel panic, TLB error, lost link …) are inserted
  at a random step and the workflow stops there;
* an **order break**: a step is skipped, two steps are swapped or a step is repeated.

BGL-like lines carry the alert category in the first field (``-`` when normal); order-breaking
lines carry the category ``APPSEQ`` so that line labels stay meaningful. HDFS-like lines carry a
``blk_<id>`` and the labels go to ``anomaly_label.csv`` (``BlockId,Label``) beside the log.

BGL-like workflows run on a *unit* (a scheduler, file system, sensor, network …: 10 per kind)
named as the first word of every line, so each (unit, step) is its own template: 30 steps and
16 alerts over 50 units give 300 normal and 160 anomaly templates (:func:`bgl_templates`). Normal
steps use routine verbs (submitted, mounted, started, completed …); every alert carries a cue
word (fatal, failed, error, timeout, panic, lost, uncorrectable, crashed …) shared across kinds.
Units are introduced one after another through the file, so a chronological split puts unseen
units — new templates with familiar wording — in the val and test periods, and a model can learn
the rule from training templates and apply it to unseen ones. The HDFS-like format keeps 11
normal and 5 anomaly templates and workflow kinds that start one after another.
"""

from __future__ import annotations

import argparse
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from logdata.cliargs import add_command, add_flag, add_out_flag, add_progress_flag, add_seed_flag
from logdata.errors import LogDataError
from logdata.io import atomic_path

logger = logging.getLogger(__name__)

ORDER_ALERT = "APPSEQ"
LABELS_FILE = "anomaly_label.csv"
START_EPOCH = 1_117_838_570  # 2005-06-03, like BGL
# BGL-like units are all introduced within this leading share of the file
UNIT_SPAN = 0.9


@dataclass(frozen=True)
class Step:
    """One log statement: component, level and a ``str.format`` template.

    Fields available to templates: ``job``, ``uid``, ``block``, ``fs``, ``ip``, ``blk`` (set
    per workflow) and ``n``, ``m``, ``hex``, ``port``, ``ip2`` (new on every line).
    """

    component: str
    level: str
    text: str


@dataclass(frozen=True)
class Alert:
    """An anomaly template with its alert category."""

    category: str
    step: Step


#: Units (subsystems) per BGL-like workflow kind. Every step and alert text starts with the unit,
#: so each (unit, step) pair is its own template; units are introduced one after another through
#: the file, so later periods (val, test) hold templates never seen in training, whose wording
#: (the step verbs, the alert cue words) is nevertheless familiar. No unit holds a digit or an
#: alert cue word.
BGL_UNITS: dict[str, tuple[str, ...]] = {
    "job": ("ciod", "mpirun", "scheduler", "loadleveler", "cobalt", "slurmd", "launcher",
            "dispatcher", "spooler", "jobagent"),
    "boot": ("bootloader", "microloader", "firmware", "bios", "idoproxy", "mmcs", "svcnode",
             "initrd", "palomino", "blockctl"),
    "io": ("gpfs", "nfs", "lustre", "scratch", "ciofs", "burstbuffer", "archive", "homefs",
           "projfs", "tmpfs"),
    "health": ("fan", "psu", "thermal", "voltage", "clock", "humidity", "coolant", "airflow",
               "rack", "chassis"),
    "net": ("torus", "tree", "ethernet", "collective", "barrier", "infiniband", "myrinet",
            "linkcard", "switch", "router"),
}

#: Normal steps per workflow kind, in their fixed order. Routine vocabulary only; the second
#: word (the verb) differs between the steps of a kind, so Drain never merges two steps.
BGL_WORKFLOWS: dict[str, tuple[Step, ...]] = {
    "job": (
        Step("MMCS", "INFO", "{unit} submitted job {job} for user{uid} to partition {block}"),
        Step("MMCS", "INFO", "{unit} allocated {n} compute nodes for job {job} in block {block}"),
        Step("APP", "INFO", "{unit} loading program image for job {job} size {n} bytes"),
        Step("KERNEL", "INFO", "{unit} started job {job} on {n} processors"),
        Step("APP", "INFO", "{unit} wrote checkpoint of job {job} to /gpfs/ckpt/{n}"),
        Step("KERNEL", "INFO", "{unit} finished job {job} normally with exit code {m}"),
        Step("MMCS", "INFO", "{unit} released resources of job {job} after {n} seconds"),
    ),
    "boot": (
        Step("MMCS", "INFO", "{unit} received boot request for block {block} from node {n}"),
        Step("KERNEL", "INFO", "{unit} chip status changed to {hex} ok"),
        Step("KERNEL", "INFO", "{unit} loaded image {hex} of {n} bytes"),
        Step("KERNEL", "INFO", "{unit} verified checksum {hex} of image"),
        Step("DISCOVERY", "INFO", "{unit} discovered node card {n} with {m} nodes"),
        Step("MMCS", "INFO", "{unit} completed boot of block {block} in {n} ms"),
    ),
    "io": (
        Step("KERNEL", "INFO", "{unit} mounting /gpfs/fs{fs} started"),
        Step("KERNEL", "INFO", "{unit} mounted /gpfs/fs{fs} with {n} io nodes"),
        Step("APP", "INFO", "{unit} opened file handle {hex} on io node {n}"),
        Step("APP", "INFO", "{unit} wrote {m} blocks through io node {n}"),
        Step("APP", "INFO", "{unit} closed file handle {hex} after {m} writes"),
        Step("KERNEL", "INFO", "{unit} unmounted /gpfs/fs{fs} cleanly"),
    ),
    "health": (
        Step("HARDWARE", "INFO", "{unit} monitor poll {n} started"),
        Step("HARDWARE", "INFO", "{unit} reading {n} on module {m} within limits"),
        Step("HARDWARE", "INFO", "{unit} sensor {m} reports {n} nominal"),
        Step("HARDWARE", "INFO", "{unit} status report {n} generated for rack {block}"),
        Step("HARDWARE", "INFO", "{unit} monitor poll {n} finished with {m} readings"),
    ),
    "net": (
        Step("KERNEL", "INFO", "{unit} link {n} training started"),
        Step("KERNEL", "INFO", "{unit} receiver {n} input pipe synchronized"),
        Step("KERNEL", "INFO", "{unit} connected link {n} with {m} retransmissions"),
        Step("KERNEL", "INFO", "{unit} network {n} ready"),
        Step("LINKCARD", "INFO", "{unit} power on complete for card {n}"),
        Step("KERNEL", "INFO", "{unit} interface {n} configured with address {ip}"),
    ),
}

#: Anomaly templates per workflow kind (an alert interrupts a workflow of that kind). Each carries
#: a cue word (fatal, failed, error, timeout, panic, lost, uncorrectable, crashed …) as its second
#: word, shared across kinds, so the rule generalises from training units to unseen ones.
BGL_ALERTS: dict[str, tuple[Alert, ...]] = {
    "job": (
        Alert("APPSEV", Step("APP", "FATAL", "{unit} lost connection to io node {n} during job {job}")),
        Alert("APPOUT", Step("APP", "FATAL", "{unit} fatal error: out of memory loading job {job}")),
        Alert("APPCRASH", Step("APP", "FAILURE", "{unit} crashed with signal {m} in job {job}")),
        Alert("APPTO", Step("APP", "ERROR", "{unit} timeout waiting for job {job} after {n} seconds")),
    ),
    "boot": (
        Alert("KERNPAN", Step("KERNEL", "FATAL", "{unit} panic: machine check on core {n}")),
        Alert("KERNTERM", Step("KERNEL", "FATAL", "{unit} aborted boot of block {block} reason {hex}")),
        Alert("KERNFAIL", Step("KERNEL", "FAILURE", "{unit} failed to load image {hex} error {m}")),
    ),
    "io": (
        Alert("KERNMNTF", Step("KERNEL", "FATAL", "{unit} mount failed on /gpfs/fs{fs} with error {m}")),
        Alert("KERNSTOR", Step("KERNEL", "FATAL", "{unit} uncorrectable storage error at {hex}")),
        Alert("KERNIO", Step("KERNEL", "ERROR", "{unit} error reading handle {hex}: request timed out")),
    ),
    "health": (
        Alert("MONPOW", Step("HARDWARE", "FAILURE",
                             "{unit} failure: reading {n} out of range on module {m}")),
        Alert("MONTEMP", Step("HARDWARE", "FATAL", "{unit} fatal threshold exceeded on node card {m}")),
        Alert("MONHW", Step("HARDWARE", "ERROR", "{unit} hardware fault on module {m}: sensor lost")),
    ),
    "net": (
        Alert("LINKDISC", Step("LINKCARD", "FATAL", "{unit} lost synchronization on link {n}")),
        Alert("KERNDTLB", Step("KERNEL", "FATAL", "{unit} uncorrectable parity error on link {n}")),
        Alert("LINKTO", Step("KERNEL", "ERROR", "{unit} timeout: link {n} unreachable")),
    ),
}

HDFS_WORKFLOWS: dict[str, tuple[Step, ...]] = {
    "write": (
        Step("dfs.FSNamesystem", "INFO", "BLOCK* allocate {blk} for /user/data/part-{n}"),
        Step("dfs.DataNode$DataXceiver", "INFO", "receiving {blk} from /{ip}:{port}"),
        Step("dfs.DataNode$PacketResponder", "INFO", "responder {m} for {blk} terminating"),
        Step("dfs.DataNode$DataXceiver", "INFO", "received {blk} of size {n} from /{ip}"),
        Step("dfs.FSNamesystem", "INFO",
             "BLOCK* blockMap updated: {ip2}:{port} is added to {blk} size {n}"),
        Step("dfs.DataNode", "INFO", "verification succeeded for {blk}"),
        Step("dfs.FSDataset", "INFO", "deleting {blk} file /data/dfs/current/subdir{m}/{blk}"),
    ),
    "replicate": (
        Step("dfs.FSNamesystem", "INFO", "ask {ip}:{port} to replicate {blk} to {ip2}:{port}"),
        Step("dfs.DataNode", "INFO", "starting thread to transfer {blk} to {ip2}:{port}"),
        Step("dfs.DataNode", "INFO", "transmitted {blk} to /{ip2}:{port}"),
        Step("dfs.FSNamesystem", "INFO", "BLOCK* removeStoredBlock: {blk} from {ip}:{port}"),
    ),
}

HDFS_ALERTS: dict[str, tuple[Alert, ...]] = {
    "write": (
        Alert("-", Step("dfs.DataNode", "WARN", "exception in receiveBlock for {blk}: reset")),
        Alert("-", Step("dfs.DataNode$PacketResponder", "WARN",
                        "responder {m} for {blk} interrupted")),
        Alert("-", Step("dfs.FSDataset", "WARN", "unexpected error deleting {blk}: file not found")),
    ),
    "replicate": (
        Alert("-", Step("dfs.FSNamesystem", "WARN",
                        "BLOCK* redundant addStoredBlock request for {blk} on {ip}:{port}")),
        Alert("-", Step("dfs.DataNode", "WARN", "{ip}:{port} got exception while serving {blk}")),
    ),
}

FORMATS: tuple[str, ...] = ("bgl", "hdfs")


def _plan(rng: random.Random, n_steps: int, abnormal: bool,
          n_alerts: int) -> list[tuple[int, str | None]]:
    """Return the workflow's (step index or -1-alert index, alert category or None) sequence."""
    steps: list[tuple[int, str | None]] = [(i, None) for i in range(n_steps)]
    if not abnormal:
        return steps
    if rng.random() < 0.5:  # alert: insert one or two anomaly templates, the workflow dies
        at = rng.randrange(1, n_steps)
        alerts = [(-1 - rng.randrange(n_alerts), "") for _ in range(rng.choice((1, 2)))]
        return steps[:at] + alerts
    kind = rng.choice(("skip", "swap", "repeat"))
    at = rng.randrange(1, n_steps - 1)
    if kind == "skip":
        return [*steps[:at], (steps[at + 1][0], ORDER_ALERT), *steps[at + 2:]]
    if kind == "swap":
        return [*steps[:at], (at + 1, ORDER_ALERT), (at, ORDER_ALERT), *steps[at + 2:]]
    return [*steps[:at + 1], (at, ORDER_ALERT), *steps[at + 1:]]


class _Workflow:
    """One running workflow instance."""

    __slots__ = ("alerts", "fields", "plan", "pos", "steps")

    def __init__(self, steps: tuple[Step, ...], alerts: tuple[Alert, ...], plan: list,
                 fields: dict) -> None:
        self.steps, self.alerts, self.plan, self.fields, self.pos = steps, alerts, plan, \
            fields, 0


def _ip(rng: random.Random) -> str:
    return f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"


def _new_fields(rng: random.Random, serial: int) -> dict:
    return {
        "job": 10_000 + serial,
        "uid": rng.randrange(1, 400),
        "block": f"R{rng.randrange(64):02d}-M{rng.randrange(2)}",
        "fs": rng.randrange(1, 9),
        "ip": _ip(rng),
        "blk": f"blk_{rng.randrange(-(2**62), 2**62)}",
        "node": (f"R{rng.randrange(64):02d}-M{rng.randrange(2)}-N{rng.randrange(16)}"
                 f"-C:J{rng.randrange(2, 18):02d}-U{rng.randrange(1, 12):02d}"),
    }


def _bgl_line(epoch: float, alert: str | None, node: str, step: Step, text: str) -> str:
    sec = int(epoch)
    tm = time.gmtime(sec)
    micro = int((epoch - sec) * 1e6)
    return (f"{alert or '-'} {sec} {tm.tm_year:04d}.{tm.tm_mon:02d}.{tm.tm_mday:02d} {node} "
            f"{tm.tm_year:04d}-{tm.tm_mon:02d}-{tm.tm_mday:02d}-{tm.tm_hour:02d}.{tm.tm_min:02d}."
            f"{tm.tm_sec:02d}.{micro:06d} {node} RAS {step.component} {step.level} {text}")


def _hdfs_line(epoch: float, step: Step, text: str, pid: int) -> str:
    tm = time.gmtime(int(epoch))
    return (f"{tm.tm_year % 100:02d}{tm.tm_mon:02d}{tm.tm_mday:02d} "
            f"{tm.tm_hour:02d}{tm.tm_min:02d}{tm.tm_sec:02d} {pid} {step.level} "
            f"{step.component}: {text}")


def _unit_schedule(n_lines: int) -> list[tuple[str, str, int]]:
    """``(kind, unit, first line allowed)`` for every BGL-like pair, interleaving the kinds.

    Pair ``p`` (units round-robin over kinds) unlocks at line ``p / P * UNIT_SPAN * n_lines``.

    >>> _unit_schedule(1000)[:3]
    [('job', 'ciod', 0), ('boot', 'bootloader', 18), ('io', 'gpfs', 36)]
    """
    kinds = list(BGL_UNITS)
    order = [(k, BGL_UNITS[k][j]) for j in range(max(map(len, BGL_UNITS.values())))
             for k in kinds if j < len(BGL_UNITS[k])]
    return [(k, u, int(p * UNIT_SPAN * n_lines) // len(order)) for p, (k, u) in enumerate(order)]


def bgl_templates() -> dict[str, str]:
    """Every BGL-like template as Drain mines it (fields → ``<*>``), mapped to its label.

    Every field value holds a digit, so the digit mask turns each field token into ``<*>``.

    >>> templates = bgl_templates()
    >>> templates["ciod started job <*> on <*> processors"]
    'normal'
    >>> templates["torus timeout: link <*> unreachable"]
    'abnormal'
    """
    def masked(text: str, unit: str) -> str:
        return " ".join("<*>" if "{" in tok else tok
                        for tok in text.replace("{unit}", unit).split())

    out: dict[str, str] = {}
    for kind, units in BGL_UNITS.items():
        for unit in units:
            out.update((masked(s.text, unit), "normal") for s in BGL_WORKFLOWS[kind])
            out.update((masked(a.step.text, unit), "abnormal") for a in BGL_ALERTS[kind])
    return out


def generate_logs(path: str | Path, n_lines: int, fmt: str = "bgl", anomaly_rate: float = 0.05,
                  seed: int = 0, concurrency: int = 16, show_progress: bool = False) -> Path:
    """Write a synthetic log of ``n_lines`` lines and return its path.

    Args:
        path: output log file (written atomically).
        n_lines: number of lines.
        fmt: ``bgl`` (BGL-like, alert category in the first field) or ``hdfs`` (HDFS-like; also
            writes ``anomaly_label.csv`` next to the log).
        anomaly_rate: probability that a workflow (job, boot … or HDFS block) is abnormal.
        seed: random seed; the same arguments give the same bytes.
        concurrency: workflows running at once (interleaving).
        show_progress: draw a tqdm bar.

    Raises:
        LogDataError: for a bad argument.
    """
    if fmt not in FORMATS:
        raise LogDataError(f"unknown synthetic format {fmt!r}; choose one of {list(FORMATS)}")
    if n_lines < 0:
        raise LogDataError("--lines must be >= 0")
    if not 0.0 <= anomaly_rate <= 1.0:
        raise LogDataError("--anomaly-rate must be within [0, 1]")
    rng = random.Random(seed)
    workflows = BGL_WORKFLOWS if fmt == "bgl" else HDFS_WORKFLOWS
    alerts = BGL_ALERTS if fmt == "bgl" else HDFS_ALERTS
    kinds = list(workflows)
    # workflow kinds appear one after another (kind k from line k * n / (K + 1)), so that a
    # split by first occurrence finds normal and anomaly templates in every period
    unlock = [k * n_lines // (len(kinds) + 1) for k in range(len(kinds))]
    # BGL-like: (kind, unit) pairs appear one after another over the first UNIT_SPAN of the file
    pairs = _unit_schedule(n_lines) if fmt == "bgl" else []
    out = Path(path)
    block_labels: dict[str, bool] = {}
    serial = 0

    def start(line: int) -> _Workflow:
        nonlocal serial
        serial += 1
        unit = None
        if pairs:
            kind, unit = rng.choice([(k, u) for k, u, at in pairs if at <= line])
        else:
            kind = rng.choice([k for k, at in zip(kinds, unlock, strict=False) if at <= line])
        steps, kind_alerts = workflows[kind], alerts[kind]
        abnormal = rng.random() < anomaly_rate
        flow = _Workflow(steps, kind_alerts, _plan(rng, len(steps), abnormal, len(kind_alerts)),
                         _new_fields(rng, serial))
        if unit is not None:
            flow.fields["unit"] = unit
        if fmt == "hdfs":
            block_labels[flow.fields["blk"]] = abnormal
        return flow

    active = [start(0) for _ in range(max(1, concurrency))]
    epoch = float(START_EPOCH)
    with atomic_path(out) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as fh:
        buf: list[str] = []
        for line in tqdm(range(n_lines), disable=not show_progress, desc="synthetic", unit="line"):
            k = rng.randrange(len(active))
            flow = active[k]
            index, alert = flow.plan[flow.pos]
            flow.pos += 1
            if index < 0:
                entry = flow.alerts[-1 - index]
                step, alert = entry.step, entry.category
            else:
                step = flow.steps[index]
            fields = flow.fields
            fields["n"] = rng.randrange(1, 100_000)
            fields["m"] = rng.randrange(0, 64)
            fields["hex"] = f"0x{rng.getrandbits(32):08x}"
            fields["port"] = rng.randrange(1024, 65536)
            fields["ip2"] = _ip(rng)
            text = step.text.format(**fields)
            epoch += rng.expovariate(2.0)
            if fmt == "bgl":
                buf.append(_bgl_line(epoch, alert, fields["node"], step, text))
            else:
                buf.append(_hdfs_line(epoch, step, text, 100 + (fields["job"] % 900)))
            if flow.pos >= len(flow.plan):
                active[k] = start(line)
            if len(buf) >= 50_000:
                fh.write("\n".join(buf) + "\n")
                buf.clear()
        if buf:
            fh.write("\n".join(buf) + "\n")
    if fmt == "hdfs":
        _write_block_labels(out.parent / LABELS_FILE, block_labels)
    logger.info("wrote %d synthetic %s lines to %s", n_lines, fmt, out)
    return out


def _write_block_labels(path: Path, labels: dict[str, bool]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write("BlockId,Label\n")
        for blk, bad in labels.items():
            fh.write(f"{blk},{'Anomaly' if bad else 'Normal'}\n")


def run(args: argparse.Namespace) -> int:
    """Run the ``synthetic`` subcommand."""
    path = generate_logs(args.out, args.lines, args.format, args.anomaly_rate, args.seed,
                         show_progress=not args.no_progress)
    extra = f" and {path.parent / LABELS_FILE}" if args.format == "hdfs" else ""
    print(f"wrote {args.lines:,} {args.format} lines to {path}{extra}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``synthetic`` subcommand."""
    parser = add_command(subparsers, "synthetic", "generate synthetic BGL-/HDFS-like logs")
    add_out_flag(parser, "output log file (hdfs also writes anomaly_label.csv beside it)")
    add_flag(parser, "--lines", type=int, default=100_000, metavar="N", help="log lines to write")
    add_flag(parser, "--format", choices=FORMATS, default="bgl", help="log format to imitate")
    add_flag(parser, "--anomaly-rate", type=float, default=0.05, metavar="R",
             help="share of abnormal workflows (jobs, blocks)")
    add_seed_flag(parser)
    add_progress_flag(parser)
    parser.set_defaults(func=run)


