"""One flag vocabulary for every CLI: help text and defaults, vocabulary names, aliases, errors.

The CLIs are driven through their own ``main`` (so a parser built inline is covered too); the
parser each one builds is caught at its ``parse_known_args`` call.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import re
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]

LOGDATA_COMMANDS = ("prepare", "parse", "patch", "build", "synthetic", "sequences", "rationales")
EXPORT_COMMANDS = ("local", "merge-lora", "find-verl", "verify")

#: CLI id → (module name or repository path of a script, argv naming its subcommand).
CLIS: dict[str, tuple[str, list[str]]] = {
    "logdata": ("logdata.cli", []),
    **{f"logdata {c}": ("logdata.cli", [c]) for c in LOGDATA_COMMANDS},
    "model_predict": ("validation.model_predict", []),
    "model_evaluate": ("validation.model_evaluate", []),
    "keyseq_detect": ("validation.keyseq_detect", []),
    "verl_recipes.local": ("verl_recipes.local.__main__", []),
    **{f"export {c}": ("verl_recipes.local.export", [c]) for c in EXPORT_COMMANDS},
    "keyseq_pretrain": ("verl_recipes.local.keyseq.pretrain", []),
    "keyseq_rl": ("verl_recipes.local.keyseq.rl", []),
    "logneo_ablation": ("scripts/logneo_ablation.py", []),
    "bench_logneo": ("benchmarks/bench_logneo.py", []),
    "build_tiny_model": ("scripts/build_tiny_model.py", []),
    "e2e_report": ("scripts/e2e_report.py", []),
    "watch_training": ("scripts/watch_training.py", []),
    "bench_keyseq": ("benchmarks/bench_keyseq.py", []),
    "bench_parse": ("benchmarks/bench_parse.py", []),
    "bench_reward": ("benchmarks/bench_reward.py", []),
    "bench_stream": ("benchmarks/bench_stream.py", []),
    "fuzz_reward": ("benchmarks/fuzz_reward.py", []),
}


def _module(name: str) -> ModuleType:
    """Import a package module, or load a script of the repository by its path."""
    if not name.endswith(".py"):
        return importlib.import_module(name)
    key = "cli_flags_" + name.replace("/", "_").removesuffix(".py")
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, REPO / name)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


def _call_main(main: Callable[..., Any], argv: list[str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """Run ``main`` with ``argv`` (as its argument, or as ``sys.argv`` when it takes none)."""
    monkeypatch.setattr(sys, "argv", ["prog", *argv])
    if inspect.signature(main).parameters:
        return main(argv)
    return main()


class _Caught(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        super().__init__("parser caught")
        self.parser = parser


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[name]
    raise AssertionError(f"{parser.prog} has no subcommand {name}")


def _parser(cli: str, monkeypatch: pytest.MonkeyPatch) -> argparse.ArgumentParser:
    """The parser ``cli``'s main builds (its subcommand's parser for a subcommand)."""
    name, sub = CLIS[cli]
    main = _module(name).main

    def catch(self: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> Any:
        raise _Caught(self)

    with monkeypatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "parse_known_args", catch)
        with pytest.raises(_Caught) as caught:
            _call_main(main, [*sub, "--help"], patch)
    parser = caught.value.parser
    for name in sub:
        parser = _subparser(parser, name)
    return parser


def _parse(cli: str, argv: list[str], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Parse ``argv`` with ``cli``'s parser; the namespace as a dict (``func`` left out)."""
    parser = _parser(cli, monkeypatch)
    values = vars(parser.parse_args(argv))
    values.pop("func", None)
    return values


def _documented(action: argparse.Action) -> bool:
    return not isinstance(action, argparse._HelpAction | argparse._SubParsersAction |
                          argparse._VersionAction)


# -- every CLI: --help works, every option has help text and shows its default -------------
@pytest.mark.parametrize("cli", sorted(CLIS))
def test_help_documents_every_option(cli: str, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    name, sub = CLIS[cli]
    with pytest.raises(SystemExit) as exc:
        _call_main(_module(name).main, [*sub, "--help"], monkeypatch)
    assert exc.value.code == 0
    assert "usage:" in capsys.readouterr().out
    parser = _parser(cli, monkeypatch)
    formatter = parser._get_formatter()
    missing_help, missing_default = [], []
    for action in filter(_documented, parser._actions):
        if action.help == argparse.SUPPRESS:
            continue  # an internal flag, not part of the interface
        name = action.option_strings[0] if action.option_strings else action.dest
        if not (action.help or "").strip():
            missing_help.append(name)
            continue
        shown = formatter._expand_help(action)
        if action.option_strings and not action.required and "default" not in shown.lower():
            missing_default.append(name)
    assert not missing_help, f"{cli}: options without help text: {missing_help}"
    assert not missing_default, f"{cli}: options whose help shows no default: {missing_default}"


# -- the vocabulary names exist where the concept exists ----------------------------------
VOCABULARY: dict[str, tuple[str, ...]] = {
    "logdata prepare": ("--input", "--out", "--seed", "--no-progress", "--window",
                        "--window-size", "--window-step"),
    "logdata parse": ("--input", "--out", "--no-progress"),
    "logdata patch": ("--input", "--out", "--no-progress"),
    "logdata build": ("--input", "--out", "--seed", "--no-progress", "--window", "--window-size",
                      "--window-step"),
    "logdata synthetic": ("--out", "--seed", "--no-progress"),
    "logdata sequences": ("--input", "--out", "--overwrite", "--seed", "--no-progress",
                          "--window", "--window-size", "--window-step"),
    "logdata rationales": ("--input", "--out", "--no-progress"),
    "model_predict": ("--input", "--out", "--seed", "--overwrite", "--max-model-len",
                      "--gpu-memory-utilization", "--top-p", "--max-tokens", "--batch-size",
                      "--chunk-size", "--chat-template-kwargs"),
    "model_evaluate": ("--out",),
    "keyseq_detect": ("--input", "--out", "--no-progress"),
    "keyseq_pretrain": ("--input", "--out", "--seed", "--no-progress"),
    "keyseq_rl": ("--input", "--out", "--seed", "--overwrite", "--no-progress", "--batch-size"),
    "logneo_ablation": ("--out", "--overwrite", "--no-progress"),
    "bench_logneo": ("--seed", "--batch-size"),
    "build_tiny_model": ("--out", "--seed"),
    "watch_training": ("--out",),
    "bench_keyseq": ("--seed",),
    "bench_parse": ("--out",),
    "bench_reward": ("--out",),
    "bench_stream": ("--out", "--seed"),
    "fuzz_reward": ("--seed", "--no-progress"),
}


@pytest.mark.parametrize("cli", sorted(VOCABULARY))
def test_vocabulary_names(cli: str, monkeypatch: pytest.MonkeyPatch) -> None:
    parser = _parser(cli, monkeypatch)
    text = parser.format_help()
    absent = [f for f in VOCABULARY[cli] if f not in parser._option_string_actions]
    assert not absent, f"{cli} lacks {absent}"
    assert all(f in text for f in VOCABULARY[cli])
    spelled = [s for a in parser._actions if a.help != argparse.SUPPRESS
               for s in a.option_strings if "_" in s and s in text]
    assert not spelled, f"{cli} --help shows underscore spellings {spelled}"


# -- old spellings and underscore forms parse to the same values --------------------------
ALIASES: list[tuple[str, list[str], list[str], str]] = [
    ("logdata patch", ["--structured", "s.parquet", "--patch", "p.json", "--output", "o.parquet"],
     ["--input", "s.parquet", "--patch", "p.json", "--out", "o.parquet"], "--output"),
    ("logdata rationales", ["--teacher", "template", "--in", "t.parquet", "--out", "s.parquet"],
     ["--teacher", "template", "--input", "t.parquet", "--out", "s.parquet"], "--in"),
    ("logdata sequences", ["--structured", "s.parquet", "--out", "o", "--step", "5",
                           "--window", "count"],
     ["--input", "s.parquet", "--out", "o", "--window-step", "5", "--window", "count"], "--step"),
    ("logdata sequences", ["--input", "s.parquet", "--out", "o", "--window", "fixed"],
     ["--input", "s.parquet", "--out", "o", "--window", "count"], "fixed"),
    ("logdata prepare", ["--dataset", "bgl", "--input", "a.log", "--out", "o", "--window", "fixed",
                         "--window_size", "50", "--train_size", "10"],
     ["--dataset", "bgl", "--input", "a.log", "--out", "o", "--window", "count",
      "--window-size", "50", "--train-size", "10"], "--window_size"),
    ("logdata build", ["--dataset", "bgl", "--out", "o", "--structured", "s.parquet"],
     ["--dataset", "bgl", "--out", "o", "--input", "s.parquet"], "--structured"),
    ("model_predict", ["--data", "t.parquet", "--out", "p.parquet", "--max_model_len", "1024",
                       "--gpu_memory_utilization", "0.5", "--top_p", "0.9", "--max_tokens", "8",
                       "--batch_size", "4", "--chunk_size", "2"],
     ["--input", "t.parquet", "--out", "p.parquet", "--max-model-len", "1024",
      "--gpu-memory-utilization", "0.5", "--top-p", "0.9", "--max-tokens", "8",
      "--batch-size", "4", "--chunk-size", "2"], "--max_model_len"),
    ("keyseq_detect", ["--model", "m", "--data", "t.parquet", "--out", "o", "--batch_size", "4"],
     ["--model", "m", "--input", "t.parquet", "--out", "o", "--batch-size", "4"], "--data"),
    ("keyseq_pretrain", ["--data", "d", "--out", "o", "--batch_size", "4", "--max_steps", "3"],
     ["--input", "d", "--out", "o", "--batch-size", "4", "--max-steps", "3"], "--data"),
    ("keyseq_rl", ["--data", "d", "--out", "o", "--batch_size", "4", "--ce_coef", "0"],
     ["--input", "d", "--out", "o", "--batch-size", "4", "--ce-coef", "0"], "--data"),
    ("model_evaluate", ["--predictions", "p.parquet", "--out", "o", "--unknown_as", "normal"],
     ["--predictions", "p.parquet", "--out", "o", "--unknown-as", "normal"], "--unknown_as"),
    ("build_tiny_model", ["--out", "m", "--vocab_size", "300"],
     ["--out", "m", "--vocab-size", "300"], "--vocab_size"),
    ("watch_training", ["run.log", "--total_steps", "5"], ["run.log", "--total-steps", "5"],
     "--total_steps"),
    ("bench_reward", ["--json", "b.json", "--ref_n", "4"], ["--out", "b.json", "--ref-n", "4"],
     "--json"),
    ("bench_parse", ["--workdir", "w"], ["--out", "w"], "--workdir"),
]


@pytest.mark.parametrize(("cli", "old", "new", "hidden"), ALIASES,
                         ids=[f"{c}:{h}" for c, _, _, h in ALIASES])
def test_old_spellings_parse_alike(cli: str, old: list[str], new: list[str], hidden: str,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    assert _parse(cli, old, monkeypatch) == _parse(cli, new, monkeypatch)
    shown = _parser(cli, monkeypatch).format_help()
    assert not re.search(rf"{re.escape(hidden)}(?![\w-])", shown), f"{hidden} is documented"


# -- a folder where a file is expected: the error names that problem ----------------------
def _logdata(argv: list[str]) -> int:
    from logdata.cli import main

    return main(argv)


def _module_main(name: str) -> Callable[[list[str]], int]:
    return lambda argv: _module(name).main(argv)


DIRECTORY_CASES: list[tuple[str, Callable[[list[str]], int], Callable[[Path], list[str]]]] = [
    ("parse", _logdata, lambda d: ["parse", "--dataset", "bgl", "--input", str(d),
                                   "--out", str(d / "o")]),
    ("build", _logdata, lambda d: ["build", "--dataset", "bgl", "--input", str(d),
                                   "--out", str(d / "o")]),
    ("patch", _logdata, lambda d: ["patch", "--input", str(d), "--patch", str(d)]),
    ("sequences", _logdata, lambda d: ["sequences", "--input", str(d), "--out", str(d / "o")]),
    ("rationales", _logdata, lambda d: ["rationales", "--teacher", "template", "--input", str(d),
                                        "--out", str(d / "s.parquet")]),
    ("model_predict", _module_main("validation.model_predict"),
     lambda d: ["--model", str(d), "--input", str(d), "--out", str(d / "p.parquet")]),
    ("model_evaluate", _module_main("validation.model_evaluate"),
     lambda d: ["--predictions", str(d), "--out", str(d / "e")]),
    ("keyseq_detect", _module_main("validation.keyseq_detect"),
     lambda d: ["--model", str(d), "--input", str(d), "--out", str(d / "o")]),
    ("build_tiny_model", _module_main("scripts/build_tiny_model.py"),
     lambda d: ["--out", str(d / "m"), "--corpus", str(d)]),
]


@pytest.mark.parametrize(("name", "main", "argv"), DIRECTORY_CASES,
                         ids=[c[0] for c in DIRECTORY_CASES])
def test_directory_for_a_file_is_named(name: str, main: Callable[[list[str]], int],
                                       argv: Callable[[Path], list[str]], tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "a_folder"
    folder.mkdir()
    (folder / "config.json").write_text("{}")  # passes for a model folder where one is asked
    assert main(argv(folder)) == 2
    err = capsys.readouterr().err
    assert "is a directory, expected a file" in err and str(folder) in err, err


def test_file_for_a_folder_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from verl_recipes.local.keyseq.pretrain import main

    data = tmp_path / "train.parquet"
    data.write_bytes(b"PAR1")
    assert main(["--input", str(data), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "is a file, expected a folder" in err and str(data) in err, err
