"""``python -m logdata sequences --keys-*``: DeepLog-format key files in place of raw logs (issue 21)."""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import pandas as pd
import pytest

from logdata.cli import main as logdata_main
from logdata.keyseq.key_files import parse_key_line
from logdata.keyseq.vocab import KeyVocab

TRAIN = ["5 5 22 11 9 11 9", "5 22 5 11 9", "", "5 5 11 9 26", "5 22 11 9 11 9 26 26",
         "5 5 22 oops 9", "4 22 5 11 9 11", "5 5 22 11 9 11 9 26", "5 22 11 26 26",
         "5 5 11 9", "5 22 5 5 11 9 11 9 26", ",7 7"]
NORMAL = ["blk_1,5 5 22 11 9 26", "blk_2,5 22 11 9", "blk_3, 5 5 22 11 9 11 9"]
ABNORMAL = ["blk_7,5 5 22 11 9 18 18", "blk_8,5 22 3 3", "blk_9,"]


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def key_files(folder: Path) -> dict[str, Path]:
    return {"train": write_lines(folder / "hdfs_train", TRAIN),
            "normal": write_lines(folder / "hdfs_test_normal", NORMAL),
            "abnormal": write_lines(folder / "hdfs_test_abnormal", ABNORMAL)}


def import_args(files: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return ["sequences", "--keys-train", str(files["train"]), "--keys-test-normal",
            str(files["normal"]), "--keys-test-abnormal", str(files["abnormal"]),
            "--data-source", "deeplog_hdfs", "--out", str(out), *extra]


@pytest.mark.parametrize(("line", "expected"), [
    ("5 5 22", (None, ["5", "5", "22"])),
    ("  007 1\t2  ", (None, ["7", "1", "2"])),
    ("blk_-160899,5 5", ("blk_-160899", ["5", "5"])),
    ("id 1 , 3", ("id 1", ["3"])),
])
def test_a_line_is_keys_with_an_optional_id(line: str, expected: tuple) -> None:
    assert parse_key_line(line) == expected


@pytest.mark.parametrize("line", ["5 x 2", "5 -1", "5 2.0", ",5 5", "blk_1,", "blk_1,  ", "a,b,3"])
def test_a_malformed_line_is_refused_with_its_reason(line: str) -> None:
    with pytest.raises(ValueError):
        parse_key_line(line)


def test_import_writes_the_sequence_outputs_and_skips_malformed_lines(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    files, out = key_files(tmp_path), tmp_path / "out"
    with caplog.at_level(logging.WARNING):
        assert logdata_main(import_args(files, out, "--val-ratio", "0.2", "--seed", "3")) == 0
    # the two bad training lines (11 and 12 of the file, line 3 blank) and blk_9 are named
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("hdfs_train: skipped 2 malformed lines (6, 12" in w for w in warnings), warnings
    assert any("hdfs_test_abnormal: skipped 1 malformed line (3" in w for w in warnings), warnings
    meta = json.loads((out / "meta.json").read_text())
    assert meta["key_files"]["keys_train"]["malformed"] == 2
    assert meta["key_files"]["keys_train"]["blank"] == 1
    assert meta["key_files"]["keys_train"]["sequences"] == 9
    assert meta["key_files"]["keys_test_abnormal"]["malformed_lines"] == [3]
    assert meta["params"]["data_source"] == "deeplog_hdfs"
    assert meta["params"]["protocol"] == "key_files"
    frames = {name: pd.read_parquet(out / f"{name}.parquet") for name in ("train", "val", "test")}
    assert len(frames["train"]) + len(frames["val"]) == 9 and len(frames["val"]) == 2
    assert set(frames["train"]["label"]) | set(frames["val"]["label"]) == {"normal"}
    test = frames["test"].set_index("sequence_id")
    assert sorted(test.index) == ["blk_1", "blk_2", "blk_3", "blk_7", "blk_8"]
    assert test.loc["blk_8", "label"] == "abnormal" and test.loc["blk_2", "label"] == "normal"
    assert list(test.loc["blk_3", "keys"]) == ["5", "5", "22", "11", "9", "11", "9"]
    # the vocabulary is the training file's keys: 18 and 3 (abnormal test only) are unknown
    vocab = KeyVocab.load(out / "vocab.json")
    train_keys = {k for frame in (frames["train"], frames["val"]) for keys in frame["keys"] for k in keys}
    assert set(vocab.keys) == train_keys == {"4", "5", "9", "11", "22", "26"}
    assert meta["counts"]["test"]["unknown_keys"] == 4
    assert list(test.loc["blk_8", "key_ids"])[2] == vocab.id_of("<unk>")
    assert (out / "rl_train.parquet").is_file() and (out / "rl_test.parquet").is_file()
    for name, path in meta["files"].items():
        assert (out / name).is_file(), path


def test_the_split_is_seeded(tmp_path: Path) -> None:
    files = key_files(tmp_path)
    vals = []
    for run, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        assert logdata_main(import_args(files, tmp_path / run, "--seed", seed, "--val-ratio", "0.3")) == 0
        vals.append(sorted(pd.read_parquet(tmp_path / run / "val.parquet")["sequence_id"]))
    assert vals[0] == vals[1] and vals[0] != vals[2]


def test_compressed_files_and_ids_shared_across_files(tmp_path: Path) -> None:
    files = key_files(tmp_path)
    with gzip.open(tmp_path / "train.gz", "wt", encoding="utf-8") as fh:
        fh.write("blk_1,5 5 22 11 9\nblk_2,5 22 11 9 26\n")
    files["train"] = tmp_path / "train.gz"
    assert logdata_main(import_args(files, tmp_path / "out", "--val-ratio", "0")) == 0
    ids = {name: set(pd.read_parquet(tmp_path / "out" / f"{name}.parquet")["sequence_id"])
           for name in ("train", "test")}
    assert ids["train"] == {"train:blk_1", "train:blk_2"}
    assert {"test_normal:blk_1", "test_normal:blk_2", "blk_3"} <= ids["test"]


@pytest.mark.parametrize(("change", "message"), [
    (lambda a: a[:2] + a[4:], "needs --keys-test-normal"),
    (lambda a: [x for x in a if x not in ("--data-source", "deeplog_hdfs")], "needs --data-source"),
    (lambda a: [*a, "--input", "structured.parquet"], "either --input"),
    (lambda a: [*a, "--window", "time"], "--window only apply to --input"),
])
def test_bad_flag_combinations_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                   change, message: str) -> None:
    args = change(import_args(key_files(tmp_path), tmp_path / "out"))
    assert logdata_main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("lines", "message"), [
    (["x y", "", "1 a"], "no valid sequence (2 malformed, 1 blank lines)"),
    (["b1,5 5", "b2,5 9", "b1,5 22"], "id 'b1' on lines 1 and 3"),
])
def test_unusable_files_are_refused_naming_the_file(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                    lines: list[str], message: str) -> None:
    files = key_files(tmp_path)
    files["normal"] = write_lines(tmp_path / "bad_normal", lines)
    assert logdata_main(import_args(files, tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert "bad_normal" in err and message in err, err
    assert not (tmp_path / "out").exists()


def test_imported_sequences_train_and_detect_as_from_raw_logs(tmp_path: Path) -> None:
    # the track downstream of `sequences` runs unchanged on an import: pretrain, then top-K detection
    from logdata.io import sha256_file
    from validation.keyseq_detect import detect
    from verl_recipes.local.keyseq.model import model_vocab
    from verl_recipes.local.keyseq.pretrain import PretrainConfig, pretrain

    data = tmp_path / "seq"
    assert logdata_main(import_args(key_files(tmp_path), data)) == 0
    pretrain(data, tmp_path / "model", PretrainConfig(arch="gpt_neo_tiny", epochs=1, max_steps=2,
                                                      batch_size=4, device="cpu", context=64),
             progress=False)
    assert model_vocab(tmp_path / "model")["sha256"] == sha256_file(data / "vocab.json")
    metrics = detect(tmp_path / "model", data / "test.parquet", tmp_path / "detect", k=2,
                     progress=False)
    scores = pd.read_parquet(tmp_path / "detect" / "scores.parquet")
    assert sorted(scores["sequence_id"]) == ["blk_1", "blk_2", "blk_3", "blk_7", "blk_8"]
    assert metrics["keyseq"]["sequences"] == 5 and metrics["keyseq"]["window_kind"] == "block"
    assert metrics["keyseq"]["data_source"] == "deeplog_hdfs"
