"""The documentation: a short README whose commands all run somewhere, links and paths that exist."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
# repository folders whose files docs name (datasets/ holds users' data, never committed)
TOP_DIRS = ("logdata", "reward", "verl_recipes", "validation", "scripts", "benchmarks", "tests",
            "serving")
PATH_RE = re.compile(r"`((?:" + "|".join(TOP_DIRS) + r")/[\w./-]+\.(?:py|sh|yaml|md|json|toml|txt))`")
LINK_RE = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")

# Every command README.md shows, and where it is run: (file, text the file holds).
COMMANDS_RUN = {
    "make demo": ("Makefile", "demo: install"),
    "make test": (".ci/run", "make test"),
    "make e2e": ("tests/test_e2e.py", "scripts/e2e.sh"),
    "python -m logdata prepare": ("scripts/demo.sh", "-m logdata prepare"),
    "python -m logdata rationales": ("scripts/demo.sh", "-m logdata rationales"),
    "bash model_train.sh sft_lora": ("scripts/e2e.sh", 'model_train.sh" sft_lora'),
    "bash model_train.sh rationanomaly_grpo": ("scripts/e2e.sh", 'model_train.sh" rationanomaly_grpo'),
    "bash model_export.sh": ("scripts/e2e.sh", 'model_export.sh"'),
    "python validation/model_predict.py": ("scripts/demo.sh", "validation/model_predict.py"),
    "python validation/model_evaluate.py": ("scripts/demo.sh", "validation/model_evaluate.py"),
    "python -m logdata parse": ("tests/test_keyseq_detect.py", '"-m", "logdata", "parse"'),
    "python -m logdata sequences": ("tests/test_keyseq_detect.py", '"-m", "logdata", "sequences"'),
    "python -m verl_recipes.local.keyseq.pretrain": ("tests/test_keyseq_detect.py",
                                                     '"-m", "verl_recipes.local.keyseq.pretrain"'),
    "python validation/keyseq_detect.py": ("tests/test_keyseq_detect.py", '"keyseq_detect.py"'),
    "make stream-demo": ("Makefile", "stream-demo: install"),
    "make real-model": ("Makefile", "test: install redis real-model"),
    # the smoke profile of the same script, through verl's main_ppo with the real model
    "make real-bench": ("tests/test_real_templates_bench.py", '"real_templates.py"'),
    "make real-keyseq": ("tests/test_real_keyseq_bench.py", '"real_keyseq.py"'),
    "make real-stream": ("tests/test_real_stream_bench.py", '"real_stream.py"'),
    "python -m serving redis": ("scripts/stream_demo.sh", '-m serving redis start'),
    "python -m serving detect": ("scripts/stream_demo.sh", '-m serving detect'),
    "python -m serving replay": ("scripts/stream_demo.sh", '-m serving replay'),
    "python -m serving status": ("scripts/stream_demo.sh", '-m serving status'),
    "python -m serving alerts": ("scripts/stream_demo.sh", '-m serving alerts'),
}
COMMAND_RE = re.compile(
    r"(make [\w-]+|python -m [\w.]+(?: (?!-)\w+)?|python [\w/]+\.py|bash [\w.]+\.sh(?: (?!-)\w+)?)"
)


def _markdown_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.md"],
                            cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    return [REPO / name for name in listed if (REPO / name).is_file()]


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower-case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return {_slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, flags=re.M)}


def _code_blocks(text: str) -> list[str]:
    return re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)


def test_readme_is_a_five_minute_read() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) < 200, len(lines)


def test_every_readme_command_is_run_by_a_test_or_the_demo() -> None:
    shown = set()
    for block in _code_blocks(README.read_text(encoding="utf-8")):
        for line in block.splitlines():
            code = line.split("#", 1)[0]
            shown.update(m.group(1) for m in COMMAND_RE.finditer(code))
    assert shown, "no command found in README.md"
    assert shown <= set(COMMANDS_RUN), sorted(shown - set(COMMANDS_RUN))
    for command in shown:
        where, text = COMMANDS_RUN[command]
        assert text in (REPO / where).read_text(encoding="utf-8"), (command, where)


@pytest.mark.parametrize("doc", _markdown_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_links_and_paths_in_docs_exist(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    for target in LINK_RE.findall(prose):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto
        path, _, anchor = target.partition("#")
        resolved = (doc.parent / path).resolve() if path else doc
        assert resolved.exists(), f"{doc.name}: link to missing {target}"
        if anchor and resolved.suffix == ".md":
            assert anchor in _anchors(resolved), f"{doc.name}: no heading for #{anchor} in {resolved.name}"
    for path in PATH_RE.findall(prose):
        if "<" in path or "*" in path:
            continue
        assert (REPO / path).exists(), f"{doc.name}: `{path}` is not in the repository"
    if not (REPO / "DESIGN.md").exists():
        assert "DESIGN.md" not in text, f"{doc.name} cites DESIGN.md, which is not in the repository"
