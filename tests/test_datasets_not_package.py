"""``datasets/`` is a data folder: it must never shadow Hugging Face ``datasets``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_datasets_folder_has_no_init(repo_root: Path) -> None:
    assert not (repo_root / "datasets" / "__init__.py").exists()


def test_import_datasets_gives_hugging_face(repo_root: Path) -> None:
    code = ("import datasets, sys; print(datasets.__file__); "
            "sys.exit(0 if hasattr(datasets, 'load_dataset') else 3)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=repo_root, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    path = Path(proc.stdout.strip())
    assert "site-packages" in path.parts
    assert repo_root / "datasets" not in path.parents
