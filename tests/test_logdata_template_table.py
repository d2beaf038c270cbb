"""``prepare --templates``: a labelled template table of any system → the VeRL parquet."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from logdata.staging import verify_file

SPLITS = ("train", "val", "test")


def _cli(*args: object, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "logdata", "prepare", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def _table(n_normal: int = 50, n_abnormal: int = 10) -> pd.DataFrame:
    """A made-up system: the label column first, an unrelated column, the template last."""
    rows = [(0, f"n{i}", f"worker <*> finished task {i} in <*> ms") for i in range(n_normal)]
    rows += [(1, f"a{i}", f"disk <*> failed with error {i}") for i in range(n_abnormal)]
    return pd.DataFrame(rows, columns=["Label", "Id", "LogTemplate"])


def _rows(out: Path) -> dict[str, pd.DataFrame]:
    return {s: pd.read_parquet(out / f"{s}.parquet") for s in SPLITS}


def _labelled(frame: pd.DataFrame) -> dict[str, str]:
    return {e["log"]: r["ground_truth"] for e, r in zip(frame["extra_info"], frame["reward_model"],
                                                         strict=True)}


def test_reordered_columns_and_01_labels(tmp_path: Path, repo_root: Path) -> None:
    table = _table()
    src = tmp_path / "system.csv"
    table.to_csv(src, index=False)
    out = tmp_path / "out"
    proc = _cli("--templates", src, "--name", "mysys", "--out", out, "--template-column",
                "LogTemplate", "--seed", "3", cwd=repo_root)
    assert proc.returncode == 0, proc.stderr
    rows = _rows(out)
    seen: dict[str, str] = {}
    for split, frame in rows.items():
        assert set(frame["data_source"]) == {"mysys"}
        assert {e["split"] for e in frame["extra_info"]} == {split}
        labelled = _labelled(frame)
        assert not set(labelled) & set(seen), "a template in two splits"
        seen.update(labelled)
        assert frame["prompt"].map(lambda p: p[-1]["content"]).tolist() == [
            f"Log: {e['log']}" for e in frame["extra_info"]]
    expected = {t: ("abnormal" if y == 1 else "normal") for y, _, t in table.itertuples(index=False)}
    assert seen == expected  # every template exactly once, 1 → abnormal, 0 → normal
    # stratified 0.6/0.2/0.2: 10 abnormal → 6/2/2, 50 normal → 30/10/10
    counts = {s: (len(f), sum(v == "abnormal" for v in _labelled(f).values())) for s, f in rows.items()}
    assert counts == {"train": (36, 6), "val": (12, 2), "test": (12, 2)}
    meta = json.loads((out / "meta.json").read_text())
    assert meta["templates"]["abnormal_per_split"] == {"train": 6, "val": 2, "test": 2}
    for split in SPLITS:
        assert verify_file(out / f"{split}.parquet")  # listed in meta.json with its sha256


def test_found_by_name_in_either_order_and_other_formats(tmp_path: Path, repo_root: Path) -> None:
    table = _table(20, 5)
    outputs = {}
    for name, write in {"t.parquet": lambda f, p: f.to_parquet(p),
                        "t.json": lambda f, p: f.to_json(p, orient="records"),
                        "t.tsv": lambda f, p: f.to_csv(p, sep="\t", index=False)}.items():
        frame = table.rename(columns={"LogTemplate": "template"})[["template", "Id", "Label"]] \
            if name != "t.tsv" else table.rename(columns={"LogTemplate": "EventTemplate"})
        src = tmp_path / name
        write(frame, src)
        out = tmp_path / name.replace(".", "_")
        proc = _cli("--templates", src, "--name", "sys", "--out", out, cwd=repo_root)
        assert proc.returncode == 0, proc.stderr
        outputs[name] = {s: sorted(_labelled(f).items()) for s, f in _rows(out).items()}
    # the same table in three files and two column orders: the same seeded split
    assert outputs["t.parquet"] == outputs["t.json"] == outputs["t.tsv"]


def test_seed_changes_the_split_and_repeats_it(tmp_path: Path, repo_root: Path) -> None:
    src = tmp_path / "t.csv"
    _table(80, 20).rename(columns={"LogTemplate": "template"}).to_csv(src, index=False)
    splits = {}
    for run, seed in (("a", 0), ("b", 0), ("c", 1)):
        out = tmp_path / run
        assert _cli("--templates", src, "--name", "s", "--out", out, "--seed", seed,
                    cwd=repo_root).returncode == 0
        splits[run] = {s: set(_labelled(f)) for s, f in _rows(out).items()}
    assert splits["a"] == splits["b"]
    assert splits["a"]["test"] != splits["c"]["test"]


def test_patch_and_pinned_templates(tmp_path: Path, repo_root: Path) -> None:
    table = _table(30, 5).rename(columns={"LogTemplate": "template"})
    src = tmp_path / "t.csv"
    table.to_csv(src, index=False)
    patch = tmp_path / "patch.json"
    patch.write_text(json.dumps([
        {"instruction": "", "input": "worker <*>  finished task 3 in <*> ms", "label": "normal",
         "rectified": "abnormal"},
        {"instruction": "", "input": "not in the table", "label": "normal", "rectified": "abnormal"},
    ]))
    pinned = [f"worker <*> finished task {i} in <*> ms" for i in range(12)]
    pin = tmp_path / "pin.json"
    pin.write_text(json.dumps([{"input": t, "reasoning": "…"} for t in pinned]))
    out = tmp_path / "out"
    proc = _cli("--templates", src, "--name", "s", "--out", out, "--patch", patch, "--pin-train",
                pin, cwd=repo_root)
    assert proc.returncode == 0, proc.stderr
    rows = _rows(out)
    train = _labelled(rows["train"])
    assert set(pinned) <= set(train)  # 12 pinned > the normal train share (18 of 30): all in train
    assert train["worker <*> finished task 3 in <*> ms"] == "abnormal"
    infos = {e["log"]: e for f in rows.values() for e in f["extra_info"]}
    assert infos["worker <*> finished task 3 in <*> ms"]["label_original"] == "normal"
    meta = json.loads((out / "meta.json").read_text())
    assert meta["patch"]["matched_templates"] == 1
    assert meta["patch"]["templates_changed"] == {"normal->abnormal": 1, "abnormal->normal": 0}
    assert meta["pin_train"]["matched_templates"] == 12
    assert sum(len(f) for f in rows.values()) == 35


@pytest.mark.parametrize(("cells", "extra", "message"), [
    ({"template": ["a", "b"], "label": ["normal", "maybe"]}, (), "label 'maybe' in row 2"),
    ({"template": ["a", "a"], "label": [0, 1]}, (), "appear with both labels"),
    ({"text2": ["a"], "label": [0]}, (), "no template column"),
    ({"template": ["a", " "], "label": [0, 1]}, (), "row 2 has an empty template"),
    ({"template": ["a"], "label": [0]}, ("--dataset", "bgl"), "drop --dataset"),
])
def test_bad_tables_fail_in_one_line(tmp_path: Path, repo_root: Path, cells: dict,
                                     extra: tuple, message: str) -> None:
    src = tmp_path / "t.csv"
    pd.DataFrame(cells).to_csv(src, index=False)
    out = tmp_path / "out"
    proc = _cli("--templates", src, "--name", "s", "--out", out, *extra, cwd=repo_root)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert not out.exists()


def test_needs_a_name_and_refuses_a_raw_log_mix(tmp_path: Path, repo_root: Path) -> None:
    src = tmp_path / "t.csv"
    _table(5, 1).to_csv(src, index=False)
    no_name = _cli("--templates", src, "--out", tmp_path / "o", cwd=repo_root)
    assert no_name.returncode == 2 and "--name" in no_name.stderr
    neither = _cli("--out", tmp_path / "o", cwd=repo_root)
    assert neither.returncode == 2 and "--templates" in neither.stderr


def test_bgl_expert_labels_with_patch_and_rlog_pinned(shared_data: Path, repo_root: Path,
                                                      tmp_path: Path) -> None:
    table = shared_data / "template_labels" / "BGL_templates.csv"
    rationales = shared_data / "rationales" / "AnomalyDetection_with_reason.json"
    if not table.is_file() or not rationales.is_file():
        pytest.skip("BGL template labels or R-Log rationales absent")
    out = tmp_path / "bgl"
    proc = _cli("--templates", table, "--name", "bgl", "--out", out, "--patch",
                shared_data / "label_patches" / "anomaly_patch.json", "--pin-train", rationales,
                cwd=repo_root)
    assert proc.returncode == 0, proc.stderr
    meta = json.loads((out / "meta.json").read_text())
    assert meta["templates"]["total"] == 1766
    assert meta["templates"]["abnormal"] == 111  # 44 expert labels + RationAnomaly's 71 matches
    assert meta["pin_train"]["matched_templates"] == 194
    covered = {" ".join(r["input"].split()) for r in json.loads(rationales.read_text())}
    rows = _rows(out)
    assert not covered & set(_labelled(rows["test"])), "an R-Log rationale covers a test template"
    assert not covered & set(_labelled(rows["val"]))
