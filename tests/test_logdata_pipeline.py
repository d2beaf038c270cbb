"""The data stage end to end: prepare on real and synthetic logs, VeRL loading, determinism."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from logdata.errors import LogDataError
from logdata.parse import parse_file
from logdata.schema import validate_rl_frame
from logdata.synthetic import LABELS_FILE, bgl_templates, generate_logs
from logdata.templates.build import BuildParams, build_datasets, sample_train
from logdata.templates.patch import apply_patch

OUTPUTS = ("structured.parquet", "templates.csv", "train.parquet", "val.parquet",
           "test.parquet", "sessions_test.parquet", "sessions_templates.parquet", "meta.json")
SPLITS = ("train", "val", "test")


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "logdata", *args, "--no-progress"], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def bgl_out(shared_data: Path, repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = shared_data / "loghub_2k" / "BGL" / "BGL_2k.log"
    if not src.is_file():
        pytest.skip(f"{src} is absent")
    out = tmp_path_factory.mktemp("bgl")
    proc = _cli("prepare", "--dataset", "bgl", "--input", str(src), "--out", str(out),
                cwd=repo_root)
    assert proc.returncode == 0, proc.stderr
    assert "prepared bgl" in proc.stdout
    return out


@pytest.fixture(scope="module")
def synthetic_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_logs(tmp_path_factory.mktemp("syn") / "bgl.log", 20_000, "bgl",
                         anomaly_rate=0.1, seed=3)


def _templates_per_split(out: Path) -> dict[str, set[str]]:
    return {s: {e["log"] for e in pd.read_parquet(out / f"{s}.parquet")["extra_info"]}
            for s in SPLITS}


def test_prepare_bgl_writes_every_file(bgl_out: Path) -> None:
    for name in OUTPUTS:
        assert (bgl_out / name).is_file(), name
    assert not [p for p in bgl_out.iterdir() if p.name.startswith(".")]  # no temp files left
    structured = pd.read_parquet(bgl_out / "structured.parquet")
    assert len(structured) == 2000
    assert (structured["label"] == "abnormal").sum() == 143
    assert {"line_no", "label", "alert", "timestamp", "node", "component", "level", "content",
            "event_id", "event_template"} <= set(structured.columns)
    assert structured.loc[structured["label"] == "abnormal", "alert"].notna().all()
    assert structured.loc[structured["label"] == "normal", "alert"].isna().all()
    assert structured["timestamp"].dtype == "float64"


def test_no_template_in_two_splits(bgl_out: Path) -> None:
    per = _templates_per_split(bgl_out)
    assert all(per.values())
    assert not (per["train"] & per["val"] or per["train"] & per["test"] or
                per["val"] & per["test"])


def test_splits_are_chronological(bgl_out: Path) -> None:
    first = {s: [e["first_line"] for e in pd.read_parquet(bgl_out / f"{s}.parquet")["extra_info"]]
             for s in SPLITS}
    assert max(first["train"]) < min(first["val"]) <= max(first["val"]) < min(first["test"])


def test_rl_parquet_matches_the_schema(bgl_out: Path) -> None:
    for split in SPLITS:
        df = pd.read_parquet(bgl_out / f"{split}.parquet")
        assert list(df.columns) == ["data_source", "prompt", "ability", "reward_model",
                                    "extra_info"]
        validate_rl_frame(df)
        row = df.iloc[0]
        assert row["data_source"] == "bgl" and row["ability"] == "log_anomaly"
        assert [m["role"] for m in row["prompt"]] == ["system", "user"]
        assert row["extra_info"]["log"] in row["prompt"][1]["content"]
        assert "<answer>" in row["prompt"][0]["content"]


def test_meta_and_sessions(bgl_out: Path, shared_data: Path) -> None:
    meta = json.loads((bgl_out / "meta.json").read_text())
    assert meta["rows"] == {s: len(pd.read_parquet(bgl_out / f"{s}.parquet")) for s in SPLITS}
    assert len(meta["params_sha256"]) == 64
    assert meta["parse"]["kept"] == 2000
    import hashlib

    digest = hashlib.sha256((shared_data / "loghub_2k/BGL/BGL_2k.log").read_bytes()).hexdigest()
    assert meta["sources"]["input"]["sha256"] == digest
    sessions = pd.read_parquet(bgl_out / "sessions_test.parquet")
    assert list(sessions.columns[:3]) == ["session_id", "templates", "label"]
    assert sessions["n_lines"].tolist() == [100] * 4  # last 400 lines, exactly 100 per window
    structured = pd.read_parquet(bgl_out / "structured.parquet").iloc[1600:]
    expected = [("abnormal" if (structured["label"].iloc[i:i + 100] == "abnormal").any()
                 else "normal") for i in range(0, 400, 100)]
    assert sessions["label"].tolist() == expected
    assert list(sessions["templates"].iloc[0]) == structured["event_template"].iloc[:100].tolist()
    # every template of every test session has exactly one row to predict on
    session_rl = pd.read_parquet(bgl_out / "sessions_templates.parquet")
    validate_rl_frame(session_rl)
    logs = [info["log"] for info in session_rl["extra_info"]]
    assert sorted(logs) == sorted({t for ts in sessions["templates"] for t in ts})
    assert meta["sessions_test"]["unique_templates"] == len(logs)


def test_verl_rlhf_dataset_loads_train(bgl_out: Path, tiny_chat_model: Path,
                                       tmp_path: Path) -> None:
    from omegaconf import OmegaConf
    from transformers import AutoTokenizer
    from verl.utils.dataset.rl_dataset import RLHFDataset, collate_fn

    tokenizer = AutoTokenizer.from_pretrained(tiny_chat_model)
    config = OmegaConf.create({"prompt_key": "prompt", "max_prompt_length": 8192,
                               "filter_overlong_prompts": True, "cache_dir": str(tmp_path),
                               "filter_overlong_prompts_workers": 1})
    dataset = RLHFDataset(str(bgl_out / "train.parquet"), tokenizer, config)
    assert len(dataset) == len(pd.read_parquet(bgl_out / "train.parquet"))
    batch = collate_fn([dataset[i] for i in range(4)])
    assert len(batch["raw_prompt"]) == 4
    assert batch["raw_prompt"][0][1]["role"] == "user"
    assert batch["data_source"][0] == "bgl"
    text = tokenizer.apply_chat_template(list(batch["raw_prompt"][0]), tokenize=False,
                                         add_generation_prompt=True)
    assert batch["raw_prompt"][0][1]["content"] in text


def test_patch_rectifies_and_reports(bgl_out: Path, shared_data: Path, tmp_path: Path) -> None:
    patched = tmp_path / "structured.parquet"
    report = apply_patch(bgl_out / "structured.parquet",
                         shared_data / "label_patches" / "anomaly_patch.json", patched)
    df = pd.read_parquet(patched)
    changed = df["label"] != df["label_original"]
    assert changed.sum() == sum(report.lines.values()) > 0
    assert report.lines["normal->abnormal"] == int(
        ((df["label_original"] == "normal") & (df["label"] == "abnormal")).sum())
    assert (df["label_original"] == "abnormal").sum() == 143
    again = apply_patch(patched, shared_data / "label_patches" / "anomaly_patch.json")
    assert again.to_json() == report.to_json()


def test_synthetic_prepare_and_split_determinism(synthetic_log: Path, tmp_path: Path) -> None:
    parse_file(synthetic_log, "synthetic", tmp_path, show_progress=False)
    runs = []
    for seed in (7, 7, 8):
        params = BuildParams(dataset="synthetic", seed=seed, train_size=12, anomaly_ratio=0.25)
        build_datasets(tmp_path, params)
        runs.append(pd.read_parquet(tmp_path / "train.parquet")["extra_info"].tolist())
    assert runs[0] == runs[1]
    assert [e["log"] for e in runs[0]] != [e["log"] for e in runs[2]]
    train = pd.read_parquet(tmp_path / "train.parquet")
    assert len(train) == 12
    assert (train["reward_model"].map(lambda r: r["ground_truth"]) == "abnormal").sum() == 3
    meta = json.loads((tmp_path / "meta.json").read_text())
    mined = pd.read_csv(tmp_path / "templates.csv")["event_template"].tolist()
    known = bgl_templates()
    # Drain recovers the generator's templates exactly (no two merged), a few hundred of them
    assert set(mined) <= set(known)
    assert meta["templates"]["total"] == len(mined) > 300
    assert meta["templates"]["abnormal"] == sum(known[t] == "abnormal" for t in mined) > 0
    assert all(meta["templates"]["abnormal_per_split"][s] > 0 for s in SPLITS)
    # later splits hold units never seen in training: new templates with familiar wording
    units = {s: {e["log"].split()[0] for e in pd.read_parquet(tmp_path / f"{s}.parquet")["extra_info"]}
             for s in SPLITS}
    assert units["test"] - units["train"]


def test_train_sampling_with_too_few_anomalies(caplog: pytest.LogCaptureFixture) -> None:
    df = pd.DataFrame({"label": ["abnormal"] * 2 + ["normal"] * 50})
    picked = sample_train(df, size=20, ratio=0.5, seed=0)
    assert len(picked) == 20 and (picked["label"] == "abnormal").sum() == 2
    assert "wanted 20 rows with 10 abnormal" in caplog.text


def test_synthetic_generator_is_seeded(tmp_path: Path) -> None:
    a = generate_logs(tmp_path / "a.log", 500, seed=1).read_bytes()
    b = generate_logs(tmp_path / "b.log", 500, seed=1).read_bytes()
    c = generate_logs(tmp_path / "c.log", 500, seed=2).read_bytes()
    assert a == b != c
    assert a.count(b"\n") == 500


def test_hdfs_prepare_labels_blocks(tmp_path: Path, repo_root: Path) -> None:
    log = generate_logs(tmp_path / "hdfs" / "hdfs.log", 6000, "hdfs", anomaly_rate=0.2, seed=5)
    labels = log.parent / LABELS_FILE
    out = tmp_path / "out"
    proc = _cli("prepare", "--dataset", "hdfs", "--input", str(log), "--labels", str(labels),
                "--out", str(out), cwd=repo_root)
    assert proc.returncode == 0, proc.stderr
    structured = pd.read_parquet(out / "structured.parquet")
    assert pq.read_schema(out / "structured.parquet").field("block_ids").type == pa.list_(pa.string())
    truth = pd.read_csv(labels).set_index("BlockId")["Label"]
    expected = structured["block_ids"].map(lambda ids: any(truth[b] == "Anomaly" for b in ids))
    assert ((structured["label"] == "abnormal") == expected).all()
    assert expected.any() and not expected.all()
    sessions = pd.read_parquet(out / "sessions_test.parquet")
    assert sessions["session_id"].str.startswith("blk_").all()
    by_block = {b: truth[b] for b in sessions["session_id"]}
    assert ((sessions["label"] == "abnormal") ==
            sessions["session_id"].map(lambda b: by_block[b] == "Anomaly")).all()


def test_template_ids_are_reused_across_files(synthetic_log: Path, tmp_path: Path) -> None:
    first = parse_file(synthetic_log, "synthetic", tmp_path / "a", show_progress=False)
    other = generate_logs(tmp_path / "other.log", 3000, seed=11)
    parse_file(other, "synthetic", tmp_path / "b", templates_in=first.templates_json,
               show_progress=False)
    a = pd.read_parquet(tmp_path / "a" / "structured.parquet").drop_duplicates("event_template")
    b = pd.read_parquet(tmp_path / "b" / "structured.parquet").drop_duplicates("event_template")
    merged = b.merge(a, on="event_template", suffixes=("_b", "_a"))
    assert len(merged) > 10
    assert (merged["event_id_a"] == merged["event_id_b"]).all()


def test_schema_rejects_bad_rows(bgl_out: Path) -> None:
    df = pd.read_parquet(bgl_out / "val.parquet")
    validate_rl_frame(df)
    bad_truth = df.copy()
    bad_truth.at[0, "reward_model"] = {"style": "rule", "ground_truth": "Abnormal"}
    bad_ability = df.copy()
    bad_ability.at[1, "ability"] = "math"
    bad_prompt = df.copy()
    bad_prompt.at[0, "prompt"] = [{"role": "system", "content": "x"}]
    for frame, needle in ((bad_truth, "ground_truth"), (bad_ability, "ability"),
                          (bad_prompt, "user"), (df.drop(columns=["extra_info"]), "extra_info")):
        with pytest.raises(LogDataError, match=needle):
            validate_rl_frame(frame)


def test_structured_csv_input_keeps_loghub_templates(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "loghub_2k" / "BGL" / "BGL_2k.log_structured.csv"
    if not src.is_file():
        pytest.skip(f"{src} is absent")
    result = parse_file(src, "bgl", tmp_path / "kept", show_progress=False)
    df = pd.read_parquet(result.structured)
    truth = pd.read_csv(src)
    assert len(df) == 2000 and (df["label"] == "abnormal").sum() == 143
    assert result.n_templates == truth["EventTemplate"].nunique()
    assert df["event_template"].tolist() == truth["EventTemplate"].tolist()
    assert df["timestamp"].tolist() == truth["Timestamp"].astype(float).tolist()
    mined = parse_file(src, "bgl", tmp_path / "mined", use_csv_templates=False,
                       show_progress=False)
    assert mined.n_templates != result.n_templates


def test_time_window_sessions(synthetic_log: Path, tmp_path: Path) -> None:
    parse_file(synthetic_log, "synthetic", tmp_path, show_progress=False)
    params = BuildParams(dataset="synthetic", window="time", window_size=60.0, window_step=30.0)
    meta = build_datasets(tmp_path, params)
    sessions = pd.read_parquet(tmp_path / "sessions_test.parquet")
    structured = pd.read_parquet(tmp_path / "structured.parquet")
    assert len(sessions) == meta["sessions_test"]["sessions"] > 2
    for row in sessions.head(5).itertuples():
        lines = structured[structured["line_no"] >= row.start_line].head(row.n_lines)
        assert lines["timestamp"].max() - lines["timestamp"].min() < 60.0
        assert row.label == ("abnormal" if (lines["label"] == "abnormal").any() else "normal")
    starts = structured.set_index("line_no").loc[sessions["start_line"], "timestamp"].to_numpy()
    assert (starts[1:] >= starts[:-1]).all()
