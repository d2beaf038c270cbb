"""Log formats: one format file per dataset, read by one loader.

A format file (YAML or JSON) describes a log the way logparser users do, plus what the data stage
needs to label and window it. The built-in datasets are format files shipped in
``logdata/formats/builtin/`` (``--dataset NAME``); ``logdata/formats/loghub/`` holds logparser's
published Drain settings for loghub's 16 systems; any other file is passed with ``--format-file``.

Keys (only ``log_format`` is required):

* ``name``: dataset name, the ``data_source`` of the VeRL rows (default: the file's stem).
* ``log_format``: logparser's syntax: ``<Field>`` placeholders, the rest a literal regex in which
  runs of spaces match any white space; ``<Content>`` is required. Each field matches ``.*?``
  unless ``patterns`` gives it a regex; the whole pattern must match the stripped line.
* ``patterns``: ``{field: regex}`` for fields that must look a certain way (a line that does not
  is ``unparsable``); our extension, absent from logparser.
* ``masks``: regexes; each match in the content becomes ``<*>`` before mining (logparser's
  ``regex``/``rex``). RE2 syntax runs natively; a mask RE2 rejects (look-around,
  back-references) runs with Python's ``re``, slower, with a warning.
* ``similarity``: Drain's similarity threshold ``st`` (default 0.5); ``depth``: Drain's tree depth
  (default 4, meaning what it means in Drain: ``depth - 3`` leading tokens route a line);
  ``max_children``: Drain's ``maxChild`` (default 100).
* ``label``: ``{field: F, normal: V}`` (field ``F`` equal to ``V`` marks a normal line, anything
  else abnormal, and ``alert`` keeps the value), ``{blocks: true}`` (HDFS: a line is abnormal when
  a block id it mentions is labelled ``Anomaly`` in ``--labels``), or absent (unlabelled: every
  line is normal and a warning says so).
* ``timestamp``: ``{fields: [F, ...], format: strptime-format | epoch}``; the fields are joined
  with one space before parsing.
* ``node``, ``component``, ``level``: the fields copied into ``structured.parquet`` under those
  names (default: a field of that name, any case).
* ``window``: default test-session windowing, ``{kind: count|time|block, size, step}``.

A bad format file is a one-line :class:`~logdata.errors.LogDataError` naming the key.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from logdata.errors import LogDataError

logger = logging.getLogger(__name__)

PARAM = "<*>"
CONTENT = "Content"
BUILTIN_DIR = Path(__file__).with_name("builtin")
LOGHUB_DIR = Path(__file__).with_name("loghub")
#: Optional fields copied into structured.parquet when a format names them.
OPTIONAL_FIELDS: tuple[str, ...] = ("node", "component", "level")
#: Session windowing kinds of a format file (the CLI's ``--window`` vocabulary).
WINDOW_KINDS: tuple[str, ...] = ("count", "time", "block")
#: Label rules: ``field`` (a header field), ``blocks`` (HDFS block ids) or ``none``.
LABEL_RULES: tuple[str, ...] = ("field", "blocks", "none")
EPOCH = "epoch"
_KEYS = {"name", "log_format", "patterns", "masks", "similarity", "depth", "max_children", "label",
         "timestamp", "window", *OPTIONAL_FIELDS}
_FIELD_RE = re.compile(r"(<[^<>]+>)")
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@cache
def is_re2(pattern: str) -> bool:
    """Whether ``pattern`` compiles under RE2, the engine ``pyarrow.compute`` uses."""
    try:
        pc.match_substring_regex(pa.array(["probe 123"]), pattern=pattern)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False
    return True


@dataclass(frozen=True)
class DatasetFormat:
    """Settings of one dataset, as read from its format file.

    Attributes:
        name: dataset name, also the ``data_source`` of the VeRL rows.
        log_format: logparser-style line format (``<Field>`` placeholders).
        patterns: ``(field, regex)`` pairs replacing a field's default ``.*?``.
        masks: ``(regex, replacement)`` pairs applied to the content before mining.
        depth: Drain tree depth (``depth - 3`` routing tokens; 3 or less routes by length only).
        similarity: Drain similarity threshold.
        max_children: Drain's cap on children per inner node.
        label_rule: one of :data:`LABEL_RULES`.
        label_field: the header field holding the label (``field`` rule).
        normal_value: the value of ``label_field`` on a normal line.
        timestamp_fields: fields joined to build the timestamp (empty: no timestamp).
        timestamp_format: strptime format of the joined fields, or ``epoch`` (seconds).
        columns: ``(our column, field)`` pairs for :data:`OPTIONAL_FIELDS`.
        window: default session windowing, one of :data:`WINDOW_KINDS`.
        window_size: lines per count window or seconds per time window.
        window_step: step between window starts (lines or seconds).
        source: the format file it came from.
    """

    name: str
    log_format: str
    patterns: tuple[tuple[str, str], ...] = ()
    masks: tuple[tuple[str, str], ...] = ()
    depth: int = 4
    similarity: float = 0.5
    max_children: int = 100
    label_rule: str = "none"
    label_field: str | None = None
    normal_value: str = "-"
    timestamp_fields: tuple[str, ...] = ()
    timestamp_format: str = EPOCH
    columns: tuple[tuple[str, str], ...] = ()
    window: str = "count"
    window_size: float = 100
    window_step: float = 100
    source: str = field(default="", compare=False)

    @property
    def has_blocks(self) -> bool:
        """Whether lines carry HDFS block ids (a ``block_ids`` column)."""
        return self.label_rule == "blocks"

    @property
    def fields(self) -> tuple[str, ...]:
        """The placeholder names of ``log_format``, in order."""
        return tuple(part[1:-1] for part in _FIELD_RE.split(self.log_format)[1::2])

    @property
    def header_fields(self) -> int:
        """Number of fields before ``<Content>`` (a line with fewer tokens is ``truncated``)."""
        return self.fields.index(CONTENT)

    def line_regex(self) -> str:
        """The RE2 regex (named groups) matching one stripped line; see :func:`line_regex`."""
        return line_regex(self.log_format, dict(self.patterns))

    def to_json(self) -> dict[str, Any]:
        """Return the format as a format-file dict (stored in ``meta.json``)."""
        spec: dict[str, Any] = {
            "name": self.name, "log_format": self.log_format,
            "patterns": dict(self.patterns), "masks": [m for m, _ in self.masks],
            "similarity": self.similarity, "depth": self.depth, "max_children": self.max_children,
            "window": {"kind": self.window, "size": self.window_size, "step": self.window_step},
        }
        if self.label_rule == "field":
            spec["label"] = {"field": self.label_field, "normal": self.normal_value}
        elif self.label_rule == "blocks":
            spec["label"] = {"blocks": True}
        if self.timestamp_fields:
            spec["timestamp"] = {"fields": list(self.timestamp_fields),
                                 "format": self.timestamp_format}
        spec.update(dict(self.columns))
        return spec


def line_regex(log_format: str, patterns: dict[str, str] | None = None) -> str:
    r"""Turn a logparser ``log_format`` into an anchored regex with one named group per field.

    Literal parts are regex text in which runs of spaces match ``\s+`` (logparser's rule); each
    field is ``(?P<Field>.*?)`` unless ``patterns`` names it. One relaxation: when the literal
    before a final ``<Content>`` ends in spaces, that white space and the content are optional, so
    a line whose message is empty is kept (with empty content) rather than rejected.

    >>> line_regex("<Date> <Level>: <Content>", {"Date": r"\d+"})
    '^(?P<Date>\\d+)\\s+(?P<Level>.*?):(?:\\s+(?P<Content>.*))?$'
    """
    patterns = patterns or {}
    parts = _FIELD_RE.split(log_format)
    out = []
    for i, part in enumerate(parts):
        if i % 2 == 0:
            # logparser's rule for spaces; unnamed groups become non-capturing (named groups
            # are the fields)
            out.append(re.sub(r"(?<!\\)\((?!\?)", "(?:", re.sub(" +", r"\\s+", part)))
            continue
        name = part[1:-1]
        last = i == len(parts) - 2 and parts[-1] == ""
        # a last <Content> runs to the end of the line: greedy is the same match, and faster
        default = ".*" if name == CONTENT and last else ".*?"
        group = f"(?P<{name}>{patterns.get(name, default)})"
        before = out[-1] if out else ""
        if name == CONTENT and last and before.endswith(r"\s+"):
            out[-1] = before[: -len(r"\s+")]
            group = rf"(?:\s+{group})?"
        out.append(group)
    return "^" + "".join(out) + "$"


# -- loading --------------------------------------------------------------------------------
def _fail(where: str, key: str, problem: str) -> LogDataError:
    return LogDataError(f"format file {where}: key {key!r} {problem}")


def _read_spec(path: Path) -> dict[str, Any]:
    import yaml

    if not path.is_file():
        raise LogDataError(f"format file {path} does not exist" if not path.exists()
                           else f"format file {path} is not a file")
    try:
        text = path.read_text(encoding="utf-8")
        spec = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as exc:
        reason = " ".join(str(exc).split())
        raise LogDataError(f"format file {path} is not valid "
                           f"{'JSON' if path.suffix.lower() == '.json' else 'YAML'}: {reason}") \
            from None
    if not isinstance(spec, dict):
        raise LogDataError(f"format file {path}: expected a mapping of keys, got "
                           f"{type(spec).__name__}")
    return spec


def _check_regex(where: str, key: str, pattern: Any, re2: bool) -> str:
    """Return ``pattern`` when it compiles (under RE2 when ``re2``), else raise naming ``key``."""
    if not isinstance(pattern, str) or not pattern:
        raise _fail(where, key, f"must be a non-empty regex string, got {pattern!r}")
    try:
        re.compile(pattern)
    except re.error as exc:
        raise _fail(where, key, f"is not a valid regex ({exc}): {pattern!r}") from None
    if re2 and not is_re2(pattern):
        raise _fail(where, key, f"uses syntax RE2 does not support (look-around or "
                                f"back-references): {pattern!r}")
    return pattern


def _number(where: str, key: str, value: Any, kind: type, low: float, high: float | None) -> Any:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        ok = ok and float(value).is_integer()
    if not ok or value < low or (high is not None and value > high):
        span = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise _fail(where, key, f"must be {'an integer' if kind is int else 'a number'} {span}, "
                                f"got {value!r}")
    return kind(value)


def _field_name(where: str, key: str, value: Any, fields: tuple[str, ...]) -> str:
    if value not in fields:
        raise _fail(where, key, f"names field {value!r}, which log_format does not have "
                                f"(fields: {', '.join(fields)})")
    return value


def _log_format(where: str, spec: dict[str, Any]) -> tuple[str, tuple[str, ...]]:
    text = spec.get("log_format")
    if not isinstance(text, str) or not text.strip():
        raise _fail(where, "log_format", "is required: a string such as "
                                         "'<Date> <Time> <Level> <Component>: <Content>'")
    fields = tuple(part[1:-1] for part in _FIELD_RE.split(text)[1::2])
    for name in fields:
        if not _NAME_RE.match(name):
            raise _fail(where, "log_format", f"has field <{name}>: names are letters, digits, _")
    if CONTENT not in fields:
        raise _fail(where, "log_format", "must contain <Content>")
    duplicated = sorted({f for f in fields if fields.count(f) > 1})
    if duplicated:
        raise _fail(where, "log_format", f"repeats field(s) {duplicated}")
    return text, fields


def _label(where: str, spec: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    label = spec.get("label")
    if label is None:
        return {"label_rule": "none"}
    if not isinstance(label, dict):
        raise _fail(where, "label", "must be {field: F, normal: V} or {blocks: true}")
    if label.get("blocks") is True and set(label) == {"blocks"}:
        return {"label_rule": "blocks"}
    if set(label) - {"field", "normal"} or "field" not in label:
        raise _fail(where, "label", f"must be {{field: F, normal: V}} or {{blocks: true}}, got "
                                    f"{label!r}")
    normal = label.get("normal", "-")
    if not isinstance(normal, (str, int)):
        raise _fail(where, "label.normal", f"must be a string, got {normal!r}")
    return {"label_rule": "field",
            "label_field": _field_name(where, "label.field", label["field"], fields),
            "normal_value": str(normal)}


def _timestamp(where: str, spec: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    stamp = spec.get("timestamp")
    if stamp is None:
        return {}
    if not isinstance(stamp, dict) or set(stamp) - {"fields", "format"} or "fields" not in stamp:
        raise _fail(where, "timestamp", "must be {fields: [F, ...], format: strptime-format|epoch}")
    names = stamp["fields"]
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, list) or not names:
        raise _fail(where, "timestamp.fields", "must be a non-empty list of field names")
    fmt = stamp.get("format", EPOCH)
    if not isinstance(fmt, str) or not fmt:
        raise _fail(where, "timestamp.format", f"must be a strptime format or epoch, got {fmt!r}")
    return {"timestamp_fields": tuple(_field_name(where, "timestamp.fields", n, fields)
                                      for n in names),
            "timestamp_format": fmt}


def _window(where: str, spec: dict[str, Any]) -> dict[str, Any]:
    window = spec.get("window")
    if window is None:
        return {}
    if not isinstance(window, dict) or set(window) - {"kind", "size", "step"}:
        raise _fail(where, "window", "must be {kind: count|time|block, size: N, step: N}")
    kind = window.get("kind", "count")
    if kind not in WINDOW_KINDS:
        raise _fail(where, "window.kind", f"must be one of {list(WINDOW_KINDS)}, got {kind!r}")
    if kind == "block":
        return {"window": kind, "window_size": 0, "window_step": 0}
    size = _number(where, "window.size", window.get("size", 100 if kind == "count" else 3600),
                   float, 1e-9, None)
    step = _number(where, "window.step", window.get("step", size), float, 1e-9, None)
    return {"window": kind, "window_size": size, "window_step": step}


def parse_spec(spec: dict[str, Any], where: str = "<spec>", default_name: str = "custom"
               ) -> DatasetFormat:
    """Validate a format-file dict and return its :class:`DatasetFormat`.

    Raises:
        LogDataError: one line naming the first bad key.

    >>> parse_spec({"log_format": "<Time> <Content>", "similarity": 2}).name
    Traceback (most recent call last):
    logdata.errors.LogDataError: format file <spec>: key 'similarity' must be a number [0.0, 1.0], got 2
    """
    unknown = sorted(set(spec) - _KEYS)
    if unknown:
        raise _fail(where, unknown[0], f"is not a format-file key (keys: {', '.join(sorted(_KEYS))})")
    log_format, fields = _log_format(where, spec)
    name = spec.get("name", default_name)
    if not isinstance(name, str) or not re.match(r"^[A-Za-z0-9_.-]+$", name):
        raise _fail(where, "name", f"must be a word (letters, digits, . _ -), got {name!r}")
    patterns = spec.get("patterns") or {}
    if not isinstance(patterns, dict):
        raise _fail(where, "patterns", "must map field names to regexes")
    for key, pattern in patterns.items():
        _field_name(where, "patterns", key, fields)
        _check_regex(where, f"patterns.{key}", pattern, re2=True)
    masks = spec.get("masks") or []
    if not isinstance(masks, list):
        raise _fail(where, "masks", "must be a list of regexes")
    for i, mask in enumerate(masks):
        _check_regex(where, f"masks[{i}]", mask, re2=False)
    columns = []
    for column in OPTIONAL_FIELDS:
        if column in spec:
            columns.append((column, _field_name(where, column, spec[column], fields)))
        else:
            same = [f for f in fields if f.lower() == column]
            if same:
                columns.append((column, same[0]))
    fmt = DatasetFormat(
        name=name, log_format=log_format,
        patterns=tuple((str(k), str(v)) for k, v in patterns.items()),
        masks=tuple((m, PARAM) for m in masks),
        similarity=_number(where, "similarity", spec.get("similarity", 0.5), float, 0.0, 1.0),
        depth=_number(where, "depth", spec.get("depth", 4), int, 2, None),
        max_children=_number(where, "max_children", spec.get("max_children", 100), int, 2, None),
        columns=tuple(columns), source=where,
        **_label(where, spec, fields), **_timestamp(where, spec, fields), **_window(where, spec),
    )
    if not is_re2(fmt.line_regex()):
        raise _fail(where, "log_format", "becomes a regex RE2 rejects (look-around or "
                                         "back-references in its literal parts)")
    return fmt


def load_format_file(path: str | Path) -> DatasetFormat:
    """Read and validate a YAML or JSON format file.

    Raises:
        LogDataError: one line naming the file and the bad key.
    """
    path = Path(path)
    return parse_spec(_read_spec(path), str(path), default_name=path.stem.lower())


def builtin_formats() -> dict[str, DatasetFormat]:
    """The shipped datasets (``logdata/formats/builtin/*.yaml``) by name."""
    formats = {}
    for path in sorted(BUILTIN_DIR.glob("*.yaml")):
        fmt = load_format_file(path)
        formats[fmt.name] = replace(fmt, source=f"builtin:{fmt.name}")
    return formats


#: Built-in dataset name → format (read from ``logdata/formats/builtin/``).
FORMATS: dict[str, DatasetFormat] = builtin_formats()


def get_format(name: str) -> DatasetFormat:
    """Return the built-in format ``name``.

    Raises:
        LogDataError: for an unknown dataset name.
    """
    try:
        return FORMATS[name]
    except KeyError:
        raise LogDataError(f"unknown dataset {name!r}; choose one of {sorted(FORMATS)} or pass "
                           "--format-file") from None


def resolve_format(dataset: str | None = None, format_file: str | Path | None = None
                   ) -> DatasetFormat:
    """The format of ``--dataset NAME`` or ``--format-file FILE`` (exactly one of them).

    Raises:
        LogDataError: when both or neither are given, or the name/file is bad.
    """
    if (dataset is None) == (format_file is None):
        raise LogDataError("give exactly one of --dataset NAME and --format-file FILE")
    return get_format(dataset) if dataset is not None else load_format_file(format_file)


def format_from_meta(meta: dict[str, Any]) -> DatasetFormat | None:
    """The format stored in a data-stage ``meta.json`` (``format`` key), or None."""
    spec = meta.get("format")
    return parse_spec(spec, "meta.json format") if isinstance(spec, dict) else None


#: LogGPT's Drain ``(depth, similarity)`` per dataset (github.com/nokia/LogGPT
#: ``utils/preprocessing.py``). BGL and HDFS equal our defaults; Thunderbird differs: depth 2
#: (lines routed by token count only) and similarity 0.3. Our Thunderbird default stays loghub's
#: Drain benchmark setting (4 / 0.5, logpai/logparser ``Drain/benchmark.py``);
#: ``parse --drain-preset loggpt`` applies these.
LOGGPT_DRAIN: dict[str, tuple[int, float]] = {
    "bgl": (4, 0.5), "hdfs": (4, 0.5), "thunderbird": (2, 0.3),
}
#: Names accepted by :func:`with_drain_preset`.
DRAIN_PRESETS: tuple[str, ...] = ("default", "loggpt")


def with_drain_preset(fmt: DatasetFormat, preset: str) -> DatasetFormat:
    """``fmt`` with the Drain depth and similarity of ``preset``.

    ``default`` keeps the format's own settings; ``loggpt`` takes :data:`LOGGPT_DRAIN` (a dataset
    LogGPT does not parse keeps its own settings).

    Raises:
        LogDataError: for an unknown preset.

    >>> with_drain_preset(FORMATS["thunderbird"], "loggpt").depth
    2
    """
    if preset not in DRAIN_PRESETS:
        raise LogDataError(f"unknown Drain preset {preset!r}; choose one of {DRAIN_PRESETS}")
    if preset == "default" or fmt.name not in LOGGPT_DRAIN:
        return fmt
    depth, similarity = LOGGPT_DRAIN[fmt.name]
    return replace(fmt, depth=depth, similarity=similarity)


def check_masks(masks: tuple[tuple[str, str], ...]) -> None:
    """Verify each mask compiles (RE2, or Python ``re`` for the slower fallback).

    Raises:
        LogDataError: naming the first regex neither engine accepts.
    """
    for pattern, _ in masks:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise LogDataError(f"mask {pattern!r} is not a valid regex: {exc}") from None
