"""Format files: logparser's log_format, masks and Drain settings, read by one loader.

Covers the loader's rules and errors, the built-in datasets as shipped format files, Drain's
meaning of ``depth``, and grouping accuracy against Drain's published figures on loghub 2k.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from logdata.drain import Drain, TemplateMiner, grouping_accuracy
from logdata.errors import LogDataError
from logdata.formats import (
    BUILTIN_DIR,
    FORMATS,
    LOGHUB_DIR,
    line_regex,
    load_format_file,
    parse_spec,
)
from logdata.parse import miner_settings
from logdata.readers import ReadStats, iter_raw, split_fields
from logdata.synthetic import generate_logs

#: Drain's published grouping accuracy on loghub 2k (Zhu et al., ICSE-SEIP 2019, Table; logparser).
DRAIN_PUBLISHED: dict[str, float] = {
    "HDFS": 0.9975, "Hadoop": 0.9475, "Spark": 0.92, "Zookeeper": 0.9665, "BGL": 0.9625,
    "HPC": 0.887, "Thunderbird": 0.955, "Windows": 0.997, "Linux": 0.69, "Android": 0.911,
    "HealthApp": 0.78, "Apache": 1.0, "Proxifier": 0.5265, "OpenSSH": 0.7875,
    "OpenStack": 0.7325, "Mac": 0.7865,
}
OPENSSH_LINES = [
    "Dec 10 06:55:46 LabSZ sshd[24200]: reverse mapping checking getaddrinfo for "
    "ns.example.com [173.234.31.186] failed - POSSIBLE BREAK-IN ATTEMPT!",
    "Dec 10 06:55:46 LabSZ sshd[24200]: Invalid user webmaster from 173.234.31.186",
]


def _cli(repo_root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "logdata", *args], cwd=repo_root,
                          capture_output=True, text=True, timeout=300)


def _spec_error(spec: dict) -> str:
    with pytest.raises(LogDataError) as caught:
        parse_spec(spec, "f.yaml")
    return str(caught.value)


# -- the log_format rule -----------------------------------------------------------------------
def test_line_regex_follows_logparser_rules() -> None:
    # spaces → \s+, fields lazy, literal regex kept, unnamed groups made non-capturing
    assert line_regex(r"<Date> <Time> <Component>(\[<PID>\])?: <Content>") == (
        r"^(?P<Date>.*?)\s+(?P<Time>.*?)\s+(?P<Component>.*?)(?:\[(?P<PID>.*?)\])?:"
        r"(?:\s+(?P<Content>.*))?$")
    assert line_regex(r"<Time>\|<Content>") == r"^(?P<Time>.*?)\|(?P<Content>.*)$"
    assert line_regex(r"<Content> \[<Tag>\]") == r"^(?P<Content>.*?)\s+\[(?P<Tag>.*?)\]$"


def test_openssh_fields_as_logparser_splits_them() -> None:
    fmt = load_format_file(LOGHUB_DIR / "OpenSSH.yaml")
    fields, keep, skipped = split_fields(
        pa.array([*OPENSSH_LINES, "Dec 10 06:55:46 LabSZ cron[1]: not an sshd line"]), fmt)
    assert keep.tolist() == [True, True, False] and skipped["unparsable"] == 1
    assert fields["Pid"].to_pylist() == ["24200", "24200"]
    assert fields["Content"].to_pylist()[1] == "Invalid user webmaster from 173.234.31.186"
    assert fields["Component"].to_pylist() == ["LabSZ", "LabSZ"]


@pytest.mark.parametrize(("spec", "needle"), [
    ({"masks": []}, "'log_format' is required"),
    ({"log_format": "<Date> <Time>"}, "'log_format' must contain <Content>"),
    ({"log_format": "<Date> <Date> <Content>"}, "repeats field"),
    ({"log_format": "<Content>", "simlarity": 0.5}, "'simlarity' is not a format-file key"),
    ({"log_format": "<Content>", "similarity": 1.5}, "'similarity' must be a number"),
    ({"log_format": "<Content>", "depth": 1}, "'depth' must be an integer"),
    ({"log_format": "<Content>", "masks": ["(unclosed"]}, "'masks[0]' is not a valid regex"),
    ({"log_format": "<Content>", "masks": "x"}, "'masks' must be a list"),
    ({"log_format": "<L> <Content>", "label": {"field": "Lbl"}}, "'label.field' names field"),
    ({"log_format": "<L> <Content>", "label": "L"}, "'label' must be"),
    ({"log_format": "<T> <Content>", "timestamp": {"fields": ["X"]}}, "'timestamp.fields'"),
    ({"log_format": "<T> <Content>", "window": {"kind": "sliding"}}, "'window.kind'"),
    ({"log_format": "<T> <Content>", "patterns": {"T": "(?<=a)b"}}, "'patterns.T'"),
    ({"log_format": "<T> <Content>", "name": "a b"}, "'name'"),
])
def test_bad_format_spec_names_the_key(spec: dict, needle: str) -> None:
    message = _spec_error(spec)
    assert message.startswith("format file f.yaml: key ") and needle in message, message
    assert "\n" not in message


def test_bad_format_file_is_one_line_cli_error(repo_root: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nlog_format: '<Date> <Content>'\nsimilarity: high\n")
    log = tmp_path / "x.log"
    log.write_text("d1 hello\n")
    proc = _cli(repo_root, "parse", "--format-file", str(bad), "--input", str(log), "--out",
                str(tmp_path / "out"))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error: format file {bad}: key 'similarity' must be a number [0.0, 1.0], got 'high'"]
    unreadable = tmp_path / "bad.json"
    unreadable.write_text("{not json")
    proc = _cli(repo_root, "parse", "--format-file", str(unreadable), "--input", str(log),
                "--out", str(tmp_path / "out"))
    assert proc.returncode == 2 and proc.stderr.startswith(f"error: format file {unreadable} is "
                                                           "not valid JSON")


def test_dataset_and_format_file_are_exclusive(repo_root: Path, tmp_path: Path) -> None:
    proc = _cli(repo_root, "parse", "--dataset", "bgl", "--format-file", "x.yaml", "--input",
                "x", "--out", str(tmp_path))
    assert proc.returncode == 2 and "not allowed with argument" in proc.stderr


# -- built-ins are format files ----------------------------------------------------------------
def test_builtin_datasets_are_the_shipped_files() -> None:
    shipped = {p.stem for p in BUILTIN_DIR.glob("*.yaml")}
    assert shipped == set(FORMATS) == {"bgl", "hdfs", "spirit", "synthetic", "thunderbird"}
    for name in shipped:
        assert load_format_file(BUILTIN_DIR / f"{name}.yaml") == FORMATS[name]


def test_builtin_through_format_file_gives_the_same_dataset(repo_root: Path,
                                                            tmp_path: Path) -> None:
    log = generate_logs(tmp_path / "bgl.log", 2000, seed=3)
    spec = tmp_path / "mybgl.json"  # JSON works as well as YAML
    builtin = FORMATS["bgl"].to_json()
    spec.write_text(json.dumps(builtin))
    outs = {}
    for how in (("--dataset", "bgl"), ("--format-file", str(spec))):
        out = tmp_path / how[0].strip("-")
        proc = _cli(repo_root, "prepare", *how, "--input", str(log), "--out", str(out),
                    "--no-progress")
        assert proc.returncode == 0, proc.stderr
        outs[how[0]] = out
    for name in ("structured.parquet", "train.parquet", "sessions_test.parquet"):
        assert pq.read_table(outs["--dataset"] / name).equals(
            pq.read_table(outs["--format-file"] / name)), name
    meta = json.loads((outs["--format-file"] / "meta.json").read_text())
    assert meta["dataset"] == "bgl" and meta["format"] == builtin


def test_python_only_mask_runs_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    # Drain3's numeric mask uses look-around, which RE2 rejects
    fmt = parse_spec({"log_format": "<Content>",
                      "masks": [r"((?<=[^A-Za-z0-9])|^)(\d+)((?=[^A-Za-z0-9])|$)"]})
    miner = TemplateMiner(miner_settings(fmt))
    ids = miner.add_batch(pa.array(["took 12 ms", "took 345 ms", "v2 up"]))
    assert ids[0] == ids[1] != ids[2]
    assert [miner.template(i) for i in ids] == ["took <*> ms", "took <*> ms", "v2 up"]
    assert "runs with Python's re" in caplog.text


# -- Drain's depth -------------------------------------------------------------------------------
def test_depth_means_what_it_means_in_drain() -> None:
    # Drain's depth counts root, length layer and leaf: depth 4 routes by the first token only,
    # so lines differing in their second token meet in one leaf and merge (similarity 2/3).
    lines = ["alpha beta done", "alpha gamma done"]
    for depth, clusters in ((4, 1), (5, 2), (3, 1)):
        drain = Drain(depth=depth, similarity=0.5)
        assert len({drain.add(line.split()) for line in lines}) == clusters, depth


# -- the standard benchmark --------------------------------------------------------------------
def _accuracy(system: str, data: Path) -> float:
    fmt = load_format_file(LOGHUB_DIR / f"{system}.yaml")
    table = pa.concat_tables(list(iter_raw(data / f"{system}_2k.log", fmt, ReadStats())))
    miner = TemplateMiner(miner_settings(fmt))
    predicted = miner.add_batch(table["content"])
    truth = pd.read_csv(data / f"{system}_2k.log_structured.csv").set_index("LineId")
    return grouping_accuracy(truth.loc[table["line_no"].to_numpy(), "EventId"].tolist(),
                             predicted)


def test_grouping_accuracy_matches_drain_on_loghub(shared_data: Path) -> None:
    root = shared_data / "loghub_2k"
    systems = sorted(p.name for p in root.iterdir()
                     if p.is_dir() and (p / f"{p.name}_2k.log_structured.csv").exists())
    if not systems:
        pytest.skip("no loghub 2k structured CSVs")
    ours = {s: _accuracy(s, root / s) for s in systems}
    for system, value in ours.items():
        assert value >= DRAIN_PUBLISHED[system] - 0.02, (system, value)
    published_mean = sum(DRAIN_PUBLISHED[s] for s in systems) / len(systems)
    assert sum(ours.values()) / len(ours) >= published_mean - 1e-9


def test_openssh_prepare_from_format_file(repo_root: Path, shared_data: Path,
                                          tmp_path: Path) -> None:
    src = shared_data / "loghub_2k" / "OpenSSH" / "OpenSSH_2k.log"
    if not src.exists():
        pytest.skip("no OpenSSH 2k sample")
    out = tmp_path / "openssh"
    proc = _cli(repo_root, "prepare", "--format-file", str(LOGHUB_DIR / "OpenSSH.yaml"),
                "--input", str(src), "--out", str(out), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "format openssh has no label rule: every line is labelled normal" in proc.stderr
    assert "holds only normal rows" in proc.stderr
    expected = {"structured.parquet", "templates.csv", "templates.json", "train.parquet",
                "val.parquet", "test.parquet", "sessions_test.parquet",
                "sessions_templates.parquet", "meta.json"}
    assert {p.name for p in out.iterdir()} == expected
    structured = pq.read_table(out / "structured.parquet").to_pandas()
    assert len(structured) == 2000 and set(structured["label"]) == {"normal"}
    assert structured["component"].iloc[0] == "LabSZ"
    meta = json.loads((out / "meta.json").read_text())
    assert meta["dataset"] == "openssh" and meta["params"]["dataset"] == "openssh"
    assert set(meta["files"]) == expected - {"meta.json"}
    train = pq.read_table(out / "train.parquet").to_pandas()
    assert set(train["data_source"]) == {"openssh"}
