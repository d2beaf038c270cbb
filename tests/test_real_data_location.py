"""Where real-data tests find their logs: LOGRL_TEST_DATA first, else ../shared/data (issue 11)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import conftest
import pytest

REPO = Path(__file__).resolve().parents[1]
CSV = Path("loghub_2k") / "BGL" / "BGL_2k.log_structured.csv"
TEST = "tests/test_logdata_pipeline.py::test_structured_csv_input_keeps_loghub_templates"


def test_env_variable_takes_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOGRL_TEST_DATA", str(tmp_path))
    assert conftest.real_data_dir() == tmp_path
    monkeypatch.setenv("LOGRL_TEST_DATA", "")  # empty means unset
    assert conftest.real_data_dir() == REPO.parent / "shared" / "data"
    monkeypatch.delenv("LOGRL_TEST_DATA")
    assert conftest.real_data_dir() == REPO.parent / "shared" / "data"


def _run(env_value: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "LOGRL_TEST_DATA": env_value}
    return subprocess.run([sys.executable, "-m", "pytest", TEST, "-q", "-rs", "-p",
                           "no:cacheprovider"], capture_output=True, text=True, cwd=REPO,
                          env=env, timeout=300)


def test_real_data_tests_read_the_env_folder(tmp_path: Path) -> None:
    """A folder with the same layout is used; a missing one skips, naming the variable."""
    result = _run(str(tmp_path / "absent"))
    assert result.returncode == 0, result.stdout[-2000:]
    assert "1 skipped" in result.stdout and "LOGRL_TEST_DATA" in result.stdout

    source = Path(os.environ.get("LOGRL_TEST_DATA") or REPO.parent / "shared" / "data") / CSV
    if not source.is_file():
        pytest.skip("no loghub BGL 2k CSV to build a LOGRL_TEST_DATA folder from")
    (tmp_path / "mine" / CSV).parent.mkdir(parents=True)
    shutil.copy(source, tmp_path / "mine" / CSV)
    result = _run(str(tmp_path / "mine"))
    assert result.returncode == 0 and "1 passed" in result.stdout, result.stdout[-2000:]
