"""Malformed input through the CLI: one-line error, non-zero exit, never a traceback."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from logdata.synthetic import generate_logs


def _cli(repo_root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "logdata", *args], cwd=repo_root,
                          capture_output=True, text=True, timeout=300)


def _assert_clean_failure(proc: subprocess.CompletedProcess, needle: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def good_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_logs(tmp_path_factory.mktemp("good") / "bgl.log", 3000, seed=0)


def _prepare(repo_root: Path, src: Path, out: Path, dataset: str = "bgl",
             *extra: str) -> subprocess.CompletedProcess:
    return _cli(repo_root, "prepare", "--dataset", dataset, "--input", str(src), "--out",
                str(out), "--no-progress", *extra)


def test_random_bytes(repo_root: Path, tmp_path: Path) -> None:
    src = tmp_path / "garbage.log"
    src.write_bytes(random.Random(0).randbytes(20_000))
    _assert_clean_failure(_prepare(repo_root, src, tmp_path / "out"), "no usable line")
    assert not (tmp_path / "out" / "structured.parquet").exists()


def test_empty_file(repo_root: Path, tmp_path: Path) -> None:
    src = tmp_path / "empty.log"
    src.write_bytes(b"")
    _assert_clean_failure(_prepare(repo_root, src, tmp_path / "out"), "empty")


def test_blank_only_file(repo_root: Path, tmp_path: Path) -> None:
    src = tmp_path / "blank.log"
    src.write_text("\n \n\t\n")
    _assert_clean_failure(_prepare(repo_root, src, tmp_path / "out"), "blank 3")


def test_missing_file(repo_root: Path, tmp_path: Path) -> None:
    _assert_clean_failure(_prepare(repo_root, tmp_path / "nope.log", tmp_path / "out"),
                          "does not exist")


def test_csv_with_wrong_columns(repo_root: Path, tmp_path: Path) -> None:
    src = tmp_path / "wrong_structured.csv"
    src.write_text("a,b,c\n1,2,3\n4,5,6\n")
    _assert_clean_failure(_prepare(repo_root, src, tmp_path / "out"), "lacks column")


def test_csv_of_random_bytes(repo_root: Path, tmp_path: Path) -> None:
    src = tmp_path / "garbage.csv"
    src.write_bytes(random.Random(1).randbytes(5_000))
    _assert_clean_failure(_prepare(repo_root, src, tmp_path / "out"), "CSV")


def test_wrong_dataset_for_the_file(repo_root: Path, good_log: Path, tmp_path: Path) -> None:
    _assert_clean_failure(_prepare(repo_root, good_log, tmp_path / "out", "hdfs"),
                          "wrong format")


def test_bad_hdfs_labels(repo_root: Path, tmp_path: Path) -> None:
    log = generate_logs(tmp_path / "h" / "hdfs.log", 200, "hdfs", seed=0)
    labels = tmp_path / "labels.csv"
    labels.write_text("Block,Verdict\nblk_1,Normal\n")
    _assert_clean_failure(_prepare(repo_root, log, tmp_path / "out", "hdfs", "--labels",
                                   str(labels)), "lacks column")


def test_bad_patch_file(repo_root: Path, good_log: Path, tmp_path: Path) -> None:
    patch = tmp_path / "patch.json"
    patch.write_text(json.dumps([{"input": "x", "label": "normal", "rectified": "weird"}]))
    _assert_clean_failure(_prepare(repo_root, good_log, tmp_path / "out", "bgl", "--patch",
                                   str(patch)), "labels must be normal/abnormal")


def test_bad_lines_are_counted_and_skipped(repo_root: Path, good_log: Path,
                                           tmp_path: Path) -> None:
    lines = good_log.read_bytes().splitlines(keepends=True)[:1000]
    bad = [b"\xff\xfe broken bytes \xc3(\n", b"\n", b"   \n", b"- 1117838570 2005.06.03\n",
           b"this line has many words but is not a bgl line at all ok\n"]
    # ... and a truncated last line without newline
    damaged = [*lines[:100], *bad, *lines[100:], lines[-1][:30]]
    src = tmp_path / "damaged.log"
    src.write_bytes(b"".join(damaged))
    out = tmp_path / "out"
    proc = _prepare(repo_root, src, out, "synthetic")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    meta = json.loads((out / "meta.json").read_text())
    assert meta["parse"]["skipped"] == {"undecodable": 1, "blank": 2, "truncated": 2,
                                        "unparsable": 1}
    assert meta["parse"]["kept"] == 1000
    assert meta["parse"]["lines"] == len(damaged)
    assert "skipped 1 undecodable" in proc.stderr


def test_unknown_subcommand_usage(repo_root: Path) -> None:
    proc = _cli(repo_root, "frobnicate")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_every_registered_command_registers() -> None:
    import argparse
    import importlib

    from logdata.cli import COMMANDS

    for name, module in COMMANDS.items():
        parser = argparse.ArgumentParser()
        sub = parser.add_subparsers()
        importlib.import_module(module).register(sub)
        assert name in sub.choices, f"{module}.register did not add {name!r}"


def test_main_turns_logdata_error_into_exit_2(tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    from logdata.cli import main

    code = main(["build", "--dataset", "bgl", "--out", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "run parse first" in err[0]
