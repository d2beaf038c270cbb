"""Shared pytest fixtures: offline tiny models and the real-data location.

Real-data tests read logs from the folder named by the environment variable ``LOGRL_TEST_DATA``
when it is set (and not empty), else from ``../shared/data`` beside the repository; both have the
same layout (``loghub_2k/BGL/BGL_2k.log``, ``label_patches/anomaly_patch.json`` …). The tests skip
when the folder is absent.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
TEST_DATA_ENV = "LOGRL_TEST_DATA"


def real_data_dir() -> Path:
    """The real-data folder: ``$LOGRL_TEST_DATA`` when set and not empty, else ``../shared/data``."""
    value = os.environ.get(TEST_DATA_ENV, "").strip()
    return Path(value).expanduser() if value else SHARED_DATA


def load_script(name: str) -> ModuleType:
    """Import ``scripts/<name>.py`` (scripts/ is not a package)."""
    path = REPO_ROOT / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"scripts_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the script loads
    spec.loader.exec_module(module)
    return module


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests marked ``gpu`` when no CUDA device is visible."""
    import torch

    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real-data folder (:func:`real_data_dir`); tests that use it skip when it is absent."""
    folder = real_data_dir()
    if not folder.is_dir():
        where = f"{TEST_DATA_ENV}={folder}" if os.environ.get(TEST_DATA_ENV, "").strip() else (
            f"{folder} (set {TEST_DATA_ENV} to a folder with the same layout)")
        pytest.skip(f"real test data absent: {where}")
    return folder


@pytest.fixture(scope="session")
def real_keyseq_smoke_work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One work folder for ``benchmarks/real_keyseq.py --profile smoke`` in this session.

    The real-keyseq smoke and the real-stream smoke share it, so the LogGPT model the stream is
    served with is pretrained once (each benchmark skips the stages whose outputs verify).
    """
    return tmp_path_factory.mktemp("real_keyseq_smoke")


@pytest.fixture(scope="session")
def tiny_model_builder() -> ModuleType:
    """The ``scripts/build_tiny_model.py`` module."""
    return load_script("build_tiny_model")


@pytest.fixture(scope="session")
def tiny_chat_model(tmp_path_factory: pytest.TempPathFactory, tiny_model_builder: ModuleType) -> Path:
    """A tiny Qwen2 chat model with a BPE tokenizer and ChatML template, built offline."""
    out = tmp_path_factory.mktemp("tiny_chat_model")
    return tiny_model_builder.build_tiny_causal_lm(out, arch="qwen2", vocab_size=512, seed=0)


@pytest.fixture(scope="session")
def tiny_scorer_model(tmp_path_factory: pytest.TempPathFactory, tiny_model_builder: ModuleType) -> Path:
    """A tiny GPT-2 used as the perplexity scorer in reward tests."""
    out = tmp_path_factory.mktemp("tiny_scorer_model")
    return tiny_model_builder.build_tiny_causal_lm(
        out, arch="gpt2", vocab_size=384, hidden_size=32, num_layers=2, num_heads=2, seed=1,
        max_positions=1024,
    )


@pytest.fixture(scope="session")
def keyseq_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny key-sequence folder (five keys in a cycle, all normal) from ``logdata sequences``."""
    import pandas as pd

    from logdata.keyseq.sequences import SequenceConfig, build_sequence_datasets

    out = tmp_path_factory.mktemp("keyseq_data")
    n = 200
    frame = pd.DataFrame({"line_no": range(n), "timestamp": [i * 10.0 for i in range(n)],
                          "event_id": [f"E{i % 5}" for i in range(n)], "label": ["normal"] * n})
    build_sequence_datasets(frame, out, SequenceConfig(data_source="bgl", context=5, n_train=20,
                                                       long_sequences="chunk"))
    return out


# -- the real-time service (serving/): a real redis-server and one small trained case ------------
@pytest.fixture(scope="session")
def redis_binary() -> str:
    """The ``redis-server`` (>= 7) binary. ``make test`` installs it (``scripts/install_redis.sh``);
    outside CI a missing server skips the test, in CI it fails."""
    from logdata.errors import LogDataError
    from serving.redis_server import find_redis_server

    try:
        return find_redis_server()
    except LogDataError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(exc))


@pytest.fixture
def redis_server(tmp_path: Path, redis_binary: str):
    """A real ``redis-server`` on a free port of 127.0.0.1, stopped after the test."""
    from serving.redis_server import RedisServer

    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


def run_python(*args: object) -> None:
    """Run ``python ARGS`` in the repository root; fail the test with its stderr on an error."""
    import subprocess

    done = subprocess.run([sys.executable, *map(str, args)], cwd=REPO_ROOT, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr[-3000:]


class ServingCli:
    """Runs ``python -m serving`` commands of the repository as subprocesses."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def command(self, *args: object) -> list[str]:
        return [sys.executable, "-m", "serving", *map(str, args)]

    def worker(self, url: str, case: object, *extra: object, log: Path | None = None):
        """Start a key-sequence ``detect`` worker on ``case`` (see :func:`stream_case`)."""
        import subprocess

        args = self.command("detect", "--redis", url, "--parsed", case.parsed, "--model", case.model,
                            "--sequences", case.sequences, "--k", case.k, "--threads", 1, *extra)
        out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 - closed with the process
        return subprocess.Popen(args, cwd=self.root, stdout=out, stderr=subprocess.STDOUT)

    def run(self, *args: object, timeout: float = 120):
        import subprocess

        return subprocess.run(self.command(*args), cwd=self.root, capture_output=True, text=True,
                              timeout=timeout)


@pytest.fixture(scope="session")
def serving_cli() -> ServingCli:
    """``python -m serving`` as subprocesses."""
    return ServingCli(REPO_ROOT)


@pytest.fixture(scope="session")
def stream_case(tmp_path_factory: pytest.TempPathFactory):
    """A synthetic HDFS-like log, parsed, cut into block sequences, a LogGPT-size model trained on
    them, and the offline detector's scores (``validation/keyseq_detect.py``, K=2)."""
    from types import SimpleNamespace

    from logdata.synthetic import generate_logs

    root = tmp_path_factory.mktemp("stream_case")
    log = generate_logs(root / "hdfs.log", 3000, fmt="hdfs", anomaly_rate=0.1, seed=1)
    run = run_python
    run("-m", "logdata", "parse", "--dataset", "hdfs", "--input", log, "--labels",
        root / "anomaly_label.csv", "--out", root / "parsed", "--no-progress")
    run("-m", "logdata", "sequences", "--input", root / "parsed" / "structured.parquet", "--out",
        root / "seq", "--window", "block", "--n-train", "100", "--context", "64")
    run("-m", "verl_recipes.local.keyseq.pretrain", "--input", root / "seq", "--out", root / "model",
        "--arch", "loggpt", "--epochs", "3", "--lr", "3e-3", "--batch-size", "8", "--threads", "1",
        "--seed", "0", "--no-progress")
    run(REPO_ROOT / "validation" / "keyseq_detect.py", "--model", root / "model", "--input",
        root / "seq" / "test.parquet", "--out", root / "offline", "--k", "2", "--no-progress")
    return SimpleNamespace(root=root, log=log, parsed=root / "parsed", sequences=root / "seq",
                           model=root / "model", offline=root / "offline" / "scores.parquet", k=2)
