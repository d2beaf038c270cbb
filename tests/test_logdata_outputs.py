"""The data stage never leaves a wrong dataset behind.

Staged outputs (a failed, interrupted or refused run leaves the previous complete folder),
``meta.json`` checksums that readers verify, HDFS label matching, and compressed inputs. Each
reproduction from the issue is one test here.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import json
import lzma
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import zstandard

from logdata import cli
from logdata.synthetic import LABELS_FILE, generate_logs

COMPRESSORS = {".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress,
               ".zst": lambda data: zstandard.ZstdCompressor().compress(data)}


def _cli(repo_root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "logdata", *args], cwd=repo_root,
                          capture_output=True, text=True, timeout=300)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _snapshot(folder: Path) -> dict[str, str]:
    return {p.name: _sha(p) for p in sorted(folder.iterdir())} if folder.exists() else {}


def _prepare_args(src: Path, out: Path, *extra: str) -> list[str]:
    return ["prepare", "--dataset", "synthetic", "--input", str(src), "--out", str(out),
            "--no-progress", *extra]


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("logs")
    return {"a": generate_logs(root / "a.log", 3000, seed=1),
            "b": generate_logs(root / "b.log", 2500, seed=2)}


@pytest.fixture()
def prepared(logs: dict[str, Path], tmp_path: Path) -> Path:
    out = tmp_path / "data"
    assert cli.main(_prepare_args(logs["a"], out)) == 0
    (out / "notes.txt").write_text("a user's own file\n")
    return out


# -- staging ------------------------------------------------------------------------------------
@pytest.mark.parametrize("failure", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_failed_or_interrupted_prepare_leaves_the_previous_folder(
        logs: dict[str, Path], prepared: Path, monkeypatch: pytest.MonkeyPatch,
        failure: BaseException) -> None:
    # reproduction: the new structured.parquet landed beside the old meta.json and splits
    before = _snapshot(prepared)

    def fail(*args: object, **kwargs: object) -> None:
        raise failure

    monkeypatch.setattr("logdata.templates.prepare.build_datasets", fail)
    status = cli.main(_prepare_args(logs["b"], prepared, "--overwrite"))
    assert status in (1, 130)
    assert _snapshot(prepared) == before
    assert not [p for p in prepared.parent.iterdir() if ".staging-" in p.name]


def test_window_block_on_bgl_writes_nothing(repo_root: Path, logs: dict[str, Path],
                                            tmp_path: Path) -> None:
    # reproduction: exit 2 after writing five parquet files
    out = tmp_path / "bgl"
    proc = _cli(repo_root, *_prepare_args(logs["a"], out, "--window", "block"))
    assert proc.returncode == 2 and "needs block ids" in proc.stderr
    assert _snapshot(out) == {}


def test_existing_output_is_refused_without_overwrite(repo_root: Path, logs: dict[str, Path],
                                                      prepared: Path) -> None:
    before = _snapshot(prepared)
    proc = _cli(repo_root, *_prepare_args(logs["b"], prepared))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: --out {prepared} already "
                                                           "holds output")
    assert "--overwrite" in proc.stderr and _snapshot(prepared) == before


def test_overwrite_replaces_every_output_and_keeps_other_files(logs: dict[str, Path],
                                                               prepared: Path) -> None:
    # parse into a prepared folder: the old splits must go with the old structured.parquet
    assert cli.main(["parse", "--dataset", "synthetic", "--input", str(logs["b"]), "--out",
                     str(prepared), "--no-progress", "--overwrite"]) == 0
    assert {p.name for p in prepared.iterdir()} == {
        "structured.parquet", "templates.csv", "templates.json", "meta.json", "notes.txt"}
    meta = json.loads((prepared / "meta.json").read_text())
    assert meta["kind"] == "parse" and meta["sources"]["input"]["sha256"] == _sha(logs["b"])


def test_meta_lists_the_sha256_of_every_file(prepared: Path) -> None:
    meta = json.loads((prepared / "meta.json").read_text())
    on_disk = {name: sha for name, sha in _snapshot(prepared).items()
               if name not in ("meta.json", "notes.txt")}
    assert meta["files"] == on_disk and len(on_disk) == 8


def test_parse_then_build_uses_the_stored_format_and_checks_the_input(
        repo_root: Path, logs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "two_steps"
    assert cli.main(["parse", "--dataset", "synthetic", "--input", str(logs["a"]), "--out",
                     str(out), "--no-progress"]) == 0
    assert cli.main(["build", "--out", str(out)]) == 0  # no --dataset: meta.json has the format
    meta = json.loads((out / "meta.json").read_text())
    assert meta["dataset"] == "synthetic" and meta["kind"] == "build"
    assert set(meta["files"]) == {name for name in _snapshot(out) if name != "meta.json"}
    assert meta["files"]["structured.parquet"] == _sha(out / "structured.parquet")
    # a structured.parquet changed after parse is refused with one line
    table = pq.read_table(out / "structured.parquet")
    pq.write_table(table.slice(0, 100), out / "structured.parquet")
    proc = _cli(repo_root, "build", "--out", str(out), "--overwrite")
    assert proc.returncode == 2
    assert re.fullmatch(r"error: \S+structured\.parquet does not match \S+meta\.json .*\n",
                        proc.stderr.splitlines(keepends=True)[-1])


# -- HDFS labels ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hdfs_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_logs(tmp_path_factory.mktemp("hdfs") / "hdfs.log", 3000, "hdfs",
                         anomaly_rate=0.1, seed=4)


def test_hdfs_match_is_reported(hdfs_log: Path, tmp_path: Path,
                                capsys: pytest.CaptureFixture) -> None:
    labels = pd.read_csv(hdfs_log.parent / LABELS_FILE)
    # a quarter of the log's blocks go unlabelled, and two unknown blocks are added
    kept = labels.iloc[len(labels) // 4:]
    extra = pd.DataFrame({"BlockId": ["blk_1", "blk_2"], "Label": ["Anomaly", "Normal"]})
    partial = tmp_path / "partial.csv"
    pd.concat([kept, extra]).to_csv(partial, index=False)
    out = tmp_path / "hdfs"
    assert cli.main(["prepare", "--dataset", "hdfs", "--input", str(hdfs_log), "--labels",
                     str(partial), "--out", str(out), "--no-progress"]) == 0
    seen = set(re.findall(r"blk_-?\d+", hdfs_log.read_text()))
    expected = {
        "blocks_in_labels": len(kept) + 2,
        "abnormal_blocks_in_labels": int((kept["Label"] == "Anomaly").sum()) + 1,
        "blocks_in_log": len(seen),
        "blocks_matched": len(seen & set(kept["BlockId"])),
        "abnormal_blocks_matched": len(seen & set(kept.loc[kept["Label"] == "Anomaly",
                                                           "BlockId"])),
    }
    assert json.loads((out / "meta.json").read_text())["labels"] == expected
    printed = capsys.readouterr().out
    assert (f"matched {expected['blocks_matched']:,} "
            f"({expected['abnormal_blocks_matched']:,} abnormal)") in printed


def test_hdfs_labels_matching_nothing_are_an_error(repo_root: Path, hdfs_log: Path,
                                                   tmp_path: Path) -> None:
    # reproduction: a labels file that matches no block id gave an all-normal dataset, exit 0
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("BlockId,Label\nblk_11,Anomaly\nblk_12,Normal\n")
    args = ["prepare", "--dataset", "hdfs", "--input", str(hdfs_log), "--labels", str(wrong),
            "--out", str(tmp_path / "out"), "--no-progress"]
    proc = _cli(repo_root, *args)
    assert proc.returncode == 2 and "match none of the" in proc.stderr
    assert "--allow-unlabelled" in proc.stderr and not (tmp_path / "out").exists()
    proc = _cli(repo_root, *args, "--allow-unlabelled")
    assert proc.returncode == 0, proc.stderr
    assert "every line is labelled normal (--allow-unlabelled)" in proc.stderr
    structured = pq.read_table(tmp_path / "out" / "structured.parquet", columns=["label"])
    assert set(structured["label"].to_pylist()) == {"normal"}


# -- compressed input ----------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", sorted(COMPRESSORS))
def test_compressed_input_reads_as_the_plain_file(logs: dict[str, Path], tmp_path: Path,
                                                  suffix: str) -> None:
    # reproduction: .gz input was reported as "undecodable … wrong format?"
    packed = tmp_path / f"a.log{suffix}"
    packed.write_bytes(COMPRESSORS[suffix](logs["a"].read_bytes()))
    plain_out, packed_out = tmp_path / "plain", tmp_path / "packed"
    for src, out in ((logs["a"], plain_out), (packed, packed_out)):
        assert cli.main(["parse", "--dataset", "synthetic", "--input", str(src), "--out",
                         str(out), "--no-progress"]) == 0
    assert pq.read_table(plain_out / "structured.parquet").equals(
        pq.read_table(packed_out / "structured.parquet"))
    meta = json.loads((packed_out / "meta.json").read_text())
    assert meta["sources"]["input"]["sha256"] == _sha(packed)  # the file as stored


@pytest.mark.parametrize("suffix", sorted(COMPRESSORS))
def test_truncated_archive_is_one_line(repo_root: Path, logs: dict[str, Path], tmp_path: Path,
                                       suffix: str) -> None:
    data = COMPRESSORS[suffix](logs["a"].read_bytes() * 3)
    cut = tmp_path / f"cut.log{suffix}"
    cut.write_bytes(data[: len(data) * 2 // 3])
    proc = _cli(repo_root, "parse", "--dataset", "synthetic", "--input", str(cut), "--out",
                str(tmp_path / "out"), "--no-progress")
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert re.fullmatch(r"error: \S+ is a truncated or corrupt \w+ archive \(.+\); stopped "
                        r"after [\d,]+ lines", last), last
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()


def test_rationales_written_into_a_dataset_are_recorded(logs: dict[str, Path],
                                                        prepared: Path) -> None:
    # rationales --merge-into rewrites train.parquet after prepare: the meta must follow, and the
    # SFT file must go with the rest when the folder is rebuilt
    sft = prepared / "sft_train.parquet"
    assert cli.main(["rationales", "--teacher", "template", "--input",
                     str(prepared / "train.parquet"), "--out", str(sft), "--merge-into",
                     str(prepared / "train.parquet"), "--no-progress"]) == 0
    meta = json.loads((prepared / "meta.json").read_text())
    assert meta["files"]["train.parquet"] == _sha(prepared / "train.parquet")
    assert meta["files"]["sft_train.parquet"] == _sha(sft)
    assert set(meta["amended"]) == {"train.parquet", "sft_train.parquet"}
    assert cli.main(_prepare_args(logs["b"], prepared, "--overwrite")) == 0
    assert not sft.exists() and (prepared / "notes.txt").exists()
