"""One declarative table of per-dataset settings.

Every dataset the data stage knows is one :class:`DatasetFormat` row in :data:`FORMATS`: how a
raw line splits into fields (an RE2-compatible regex with named groups, applied vectorised by
``pyarrow.compute``), how a line gets its label, which masks run before template mining, the
Drain parser settings and the default session windowing.

Label rules:

* ``first_field`` (BGL, Spirit, Thunderbird, synthetic): the first field is ``-`` for a normal
  line; anything else is the alert category, the line is abnormal and ``alert`` keeps the category.
* ``block_labels`` (HDFS): a line is abnormal when any block id it mentions is labelled
  ``Anomaly`` in ``anomaly_label.csv`` (``BlockId,Label``), passed with ``--labels``.

Masks are ``(regex, replacement)`` pairs; each regex must compile under RE2 (no look-around, no
back-references), which :func:`check_masks` verifies.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pyarrow as pa
import pyarrow.compute as pc

from logdata.errors import LogDataError

PARAM = "<*>"



@dataclass(frozen=True)
class DatasetFormat:
    """Settings of one dataset.

    Attributes:
        name: dataset name, also the ``data_source`` of the VeRL rows.
        header: names of the leading whitespace-separated fields (a leading ``_`` marks a field
            that is not kept); a line with fewer fields is ``truncated``. The rest of the line
            is the content, or is parsed by ``rest_regex``.
        checks: ``(field, RE2 regex)`` pairs a header field must match, else the line is
            ``unparsable``.
        rest_regex: RE2 regex with named groups (``content`` among them) over the rest of the
            line, or None when the rest is the content.
        label_rule: ``first_field`` or ``block_labels``.
        timestamp: how to build epoch seconds: ``epoch`` (group ``timestamp`` holds seconds),
            ``yymmdd_hhmmss`` (groups ``date`` and ``time``, HDFS) or ``none``.
        masks: ``(regex, replacement)`` pairs applied to the content before mining.
        depth: Drain tree depth (number of token levels is ``depth - 2``; 2 routes by token
            count only).
        similarity: Drain similarity threshold.
        max_children: Drain's cap on children per inner node.
        window: default session windowing, ``fixed``, ``time`` or ``block``.
        window_size: lines per fixed window or seconds per time window.
        window_step: step between window starts (lines or seconds).
        csv_fields: loghub structured-CSV column → our column for the optional fields.
    """

    name: str
    header: tuple[str, ...]
    checks: tuple[tuple[str, str], ...]
    rest_regex: str | None
    label_rule: str
    timestamp: str
    masks: tuple[tuple[str, str], ...]
    depth: int = 4
    similarity: float = 0.5
    max_children: int = 100
    window: str = "fixed"
    window_size: float = 100
    window_step: float = 100
    csv_fields: dict[str, str] = field(default_factory=dict)

    @property
    def has_blocks(self) -> bool:
        """Whether lines carry HDFS block ids (a ``block_ids`` column)."""
        return self.label_rule == "block_labels"


_BGL_HEADER = ("label", "timestamp", "date", "node", "_time", "_node_repeat", "_type", "component",
               "level")
_SYSLOG_HEADER = ("label", "timestamp", "date", "node", "_month", "_day", "_time", "_location")
_EPOCH_CHECKS = (("timestamp", r"^\d+$"), ("date", r"^\d{4}\.\d{2}\.\d{2}$"))
# "crond(pam_unix)[2915]: session closed" or "kernel: ..." or a message without a component
_SYSLOG_REST = r"^(?:(?P<component>[^\s\[]*?)(?:\[(?P<pid>\d+)\])?: )?(?P<content>.*)$"
_HDFS_HEADER = ("date", "time", "pid", "level")
_HDFS_CHECKS = (("date", r"^\d{6}$"), ("time", r"^\d{6}$"), ("pid", r"^\d+$"))
_HDFS_REST = r"^(?P<component>[^\s:]+):(?:\s+(?P<content>.*))?$"

#: A token holding a digit becomes ``<*>`` (one native regex pass; keeps drain3-level accuracy).
DIGIT_TOKEN = (r"\S*\d\S*", PARAM)
_BGL_MASKS = (DIGIT_TOKEN,)
_SYSLOG_MASKS = (DIGIT_TOKEN,)
_HDFS_MASKS = (DIGIT_TOKEN,)

FORMATS: dict[str, DatasetFormat] = {
    "bgl": DatasetFormat(
        name="bgl", header=_BGL_HEADER, checks=_EPOCH_CHECKS, rest_regex=None, label_rule="first_field",
        timestamp="epoch", masks=_BGL_MASKS, depth=4, similarity=0.5,
        window="fixed", window_size=100, window_step=100,
        csv_fields={"Node": "node", "Component": "component", "Level": "level"},
    ),
    "spirit": DatasetFormat(
        name="spirit", header=_SYSLOG_HEADER, checks=_EPOCH_CHECKS,
        rest_regex=_SYSLOG_REST, label_rule="first_field",
        timestamp="epoch", masks=_SYSLOG_MASKS, depth=4, similarity=0.5,
        window="fixed", window_size=100, window_step=100,
        csv_fields={"User": "node", "Node": "node", "Component": "component"},
    ),
    "thunderbird": DatasetFormat(
        name="thunderbird", header=_SYSLOG_HEADER, checks=_EPOCH_CHECKS,
        rest_regex=_SYSLOG_REST, label_rule="first_field",
        timestamp="epoch", masks=_SYSLOG_MASKS, depth=4, similarity=0.5,
        window="fixed", window_size=100, window_step=100,
        csv_fields={"User": "node", "Component": "component"},
    ),
    "hdfs": DatasetFormat(
        name="hdfs", header=_HDFS_HEADER, checks=_HDFS_CHECKS, rest_regex=_HDFS_REST,
        label_rule="block_labels",
        timestamp="yymmdd_hhmmss", masks=_HDFS_MASKS, depth=4, similarity=0.5,
        window="block", window_size=0, window_step=0,
        csv_fields={"Component": "component", "Level": "level"},
    ),
    "synthetic": DatasetFormat(
        name="synthetic", header=_BGL_HEADER, checks=_EPOCH_CHECKS, rest_regex=None, label_rule="first_field",
        timestamp="epoch", masks=_BGL_MASKS, depth=4, similarity=0.5,
        window="fixed", window_size=100, window_step=100,
        csv_fields={"Node": "node", "Component": "component", "Level": "level"},
    ),
}

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


#: Optional header fields copied into structured.parquet when a format captures them.
OPTIONAL_FIELDS: tuple[str, ...] = ("node", "component", "level")


def get_format(name: str) -> DatasetFormat:
    """Return the settings of dataset ``name``.

    Raises:
        LogDataError: for an unknown dataset name.
    """
    try:
        return FORMATS[name]
    except KeyError:
        raise LogDataError(f"unknown dataset {name!r}; choose one of {sorted(FORMATS)}") from None


def check_masks(masks: tuple[tuple[str, str], ...]) -> None:
    """Verify each mask compiles under RE2 (the engine ``pyarrow.compute`` uses).

    Raises:
        LogDataError: naming the first regex RE2 rejects.
    """
    probe = pa.array(["probe 123"])
    for pattern, replacement in masks:
        try:
            pc.replace_substring_regex(probe, pattern=pattern, replacement=replacement)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise LogDataError(f"mask {pattern!r} is not RE2-compatible: {exc}") from None
