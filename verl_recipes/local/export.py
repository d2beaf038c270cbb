"""Checkpoint export helpers: any training output → one Hugging Face folder that loads anywhere.

* a local-backend output (``outputs/local_grpo`` or its ``final``/``checkpoint-N``): full weights
  are re-saved as safetensors; a LoRA adapter is merged into its base (``peft`` ``merge_and_unload``);
* a verl FSDP checkpoint (PPO/GRPO actor, or ``verl.trainer.sft_trainer``) is first merged by
  ``python -m verl.model_merger merge --backend fsdp`` (``model_export.sh`` does that); when the
  merger leaves ``<target>/lora_adapter``, it is merged here into the base weights saved beside it.

The result keeps the tokenizer and chat template and is checked by loading it with
``AutoModelForCausalLM``; its files get the mode a plain ``open(path, "w")`` gives (the savers
write through 0600 temporary files). The target is never the checkpoint itself, a folder inside
it or one holding it (refused even with ``--overwrite``), and a non-empty target is refused unless
``--overwrite``, which replaces it.

Usage::

    python -m verl_recipes.local.export local SRC DST [--base BASE] [--overwrite]
    python -m verl_recipes.local.export prepare-target SRC DST [--overwrite]  # before the merger
    python -m verl_recipes.local.export merge-lora DST        # after verl.model_merger
    python -m verl_recipes.local.export find-verl CKPT_DIR    # print the actor folder to merge
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from logdata.cliargs import add_command, add_flag, add_overwrite_flag, new_parser
from verl_recipes.local.common import plain_file_modes

ADAPTER_CONFIG = "adapter_config.json"
VERL_SHARD = re.compile(r"model_world_size_(\d+)_rank_0\.pt")


class ExportError(ValueError):
    """The source is not a checkpoint this tool understands."""


def latest_local_model(src: Path) -> Path:
    """Return the model folder inside a local-backend output (``final``, else newest checkpoint).

    Raises:
        ExportError: When ``src`` holds no model.
    """
    if _is_model_dir(src):
        return src
    if _is_model_dir(src / "final"):
        return src / "final"
    steps = sorted(
        (p for p in src.glob("checkpoint-*") if _is_model_dir(p)),
        key=lambda p: int(p.name.split("-")[-1]),
    )
    if not steps:
        raise ExportError(f"{src}: no model (final/ or checkpoint-N/ with weights)")
    return steps[-1]


def _is_model_dir(path: Path) -> bool:
    return path.is_dir() and (
        (path / ADAPTER_CONFIG).is_file()
        or any(path.glob("*.safetensors"))
        or (path / "pytorch_model.bin").is_file()
    )


def find_verl_actor(ckpt: Path) -> Path:
    """Return the folder holding verl FSDP shards: ``ckpt`` itself, ``ckpt/actor`` or the latest step.

    Accepts an experiment folder (``latest_checkpointed_iteration.txt``), a ``global_step_N``
    folder or the ``actor`` folder. PPO/GRPO runs keep the shards in ``global_step_N/actor``;
    ``verl.trainer.sft_trainer`` writes them straight into ``global_step_N`` (no ``actor/``), with
    ``huggingface/`` (config, tokenizer) and ``lora_train_meta.json`` beside them.

    Raises:
        ExportError: When no ``model_world_size_*_rank_0.pt`` is found.
    """
    if any(VERL_SHARD.fullmatch(p.name) for p in ckpt.glob("model_world_size_*_rank_0.pt")):
        return ckpt
    if (ckpt / "actor").is_dir():
        return find_verl_actor(ckpt / "actor")
    marker = ckpt / "latest_checkpointed_iteration.txt"
    if marker.is_file():
        return find_verl_actor(ckpt / f"global_step_{marker.read_text().strip()}")
    steps = sorted(ckpt.glob("global_step_*"), key=lambda p: int(p.name.rsplit("_", 1)[-1]))
    if steps:
        return find_verl_actor(steps[-1])
    raise ExportError(f"{ckpt}: not a verl FSDP checkpoint (no model_world_size_*_rank_0.pt)")


def _copy_tokenizer(src: Path, dst: Path) -> None:
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(src, trust_remote_code=False).save_pretrained(dst)


def merge_adapter(base: Path, adapter: Path, dst: Path) -> Path:
    """Merge the LoRA ``adapter`` into ``base`` and save the full model to ``dst`` (safetensors)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, trust_remote_code=False)
    merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    dst.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(dst, safe_serialization=True)
    return dst


def prepare_target(src: Path, dst: Path, overwrite: bool = False) -> Path:
    """Check the export target against the checkpoint; with ``overwrite``, remove what it holds.

    Args:
        src: The checkpoint (folder) being exported.
        dst: The folder the export writes.
        overwrite: Replace a non-empty ``dst`` instead of refusing.

    Returns:
        ``dst`` (absent or an empty folder afterwards).

    Raises:
        ExportError: When ``dst`` is ``src``, lies inside it or holds it (always: the export
            would mix the model into the checkpoint, or an overwrite would delete it); when
            ``dst`` is not empty and ``overwrite`` is off.
    """
    source, target = src.resolve(), dst.resolve()
    if target == source or source in target.parents:
        raise ExportError(f"target {dst} is the source checkpoint {src} or lies inside it; "
                          "export to a folder of its own")
    if target in source.parents:
        raise ExportError(f"target {dst} holds the source checkpoint {src}; export to a folder "
                          "of its own")
    if not dst.exists() and not dst.is_symlink():
        return dst
    if dst.is_dir() and not dst.is_symlink() and not any(dst.iterdir()):
        return dst
    if not overwrite:
        what = "is not empty" if dst.is_dir() else "exists and is not a folder"
        raise ExportError(f"target {dst} {what}; pass --overwrite to replace it")
    if dst.is_dir() and not dst.is_symlink():
        shutil.rmtree(dst)
    else:
        dst.unlink()
    return dst


def export_local(src: Path, dst: Path, base: Path | None = None, overwrite: bool = False) -> Path:
    """Export a local-backend output to a plain HF folder at ``dst``.

    Args:
        src: ``outputs/<run>`` or a model folder inside it.
        dst: Target folder (created; see :func:`prepare_target` for what is refused).
        base: Base model for a LoRA adapter (default: the adapter's ``base_model_name_or_path``).
        overwrite: Replace a non-empty ``dst``.

    Raises:
        ExportError: On a refused target or a source without a model.
    """
    from transformers import AutoModelForCausalLM

    model_dir = latest_local_model(src)
    prepare_target(src, dst, overwrite)
    dst.mkdir(parents=True, exist_ok=True)
    if (model_dir / ADAPTER_CONFIG).is_file():
        config = json.loads((model_dir / ADAPTER_CONFIG).read_text(encoding="utf-8"))
        base = base or Path(str(config.get("base_model_name_or_path") or ""))
        if not base or not Path(base).is_dir():
            raise ExportError(f"{model_dir}: LoRA adapter without a local base; pass --base")
        merge_adapter(Path(base), model_dir, dst)
    else:
        model = AutoModelForCausalLM.from_pretrained(model_dir, trust_remote_code=False)
        model.save_pretrained(dst, safe_serialization=True)
    _copy_tokenizer(model_dir, dst)
    for name in ("local_config.json", "generation_config.json"):
        if (model_dir / name).is_file() and not (dst / name).exists():
            shutil.copy2(model_dir / name, dst / name)
    plain_file_modes(dst)
    verify_export(dst)
    return dst


def merge_verl_lora(target: Path) -> bool:
    """Merge ``target/lora_adapter`` (left by verl's merger) into the base weights in ``target``.

    Returns:
        Whether an adapter was found and merged.
    """
    adapter = target / "lora_adapter"
    if not (adapter / ADAPTER_CONFIG).is_file():
        return False
    tmp = target.with_name(target.name + ".merging")
    merge_adapter(target, adapter, tmp)
    _copy_tokenizer(target, tmp)
    shutil.rmtree(adapter)
    for item in tmp.iterdir():
        shutil.move(str(item), target / item.name)
    tmp.rmdir()
    return True


def verify_export(path: Path) -> dict[str, Any]:
    """Load ``path`` with ``AutoModelForCausalLM``/``AutoTokenizer``; check the chat template.

    Raises:
        ExportError: When the tokenizer has no chat template.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    if not getattr(tokenizer, "chat_template", None):
        raise ExportError(f"{path}: exported tokenizer has no chat template")
    model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=False)
    return {"path": str(path), "parameters": sum(p.numel() for p in model.parameters())}


def main(argv: Sequence[str] | None = None) -> int:
    """CLI; one-line errors with exit status 2."""
    parser = new_parser("python -m verl_recipes.local.export", __doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    local = add_command(sub, "local", "export a local-backend output")
    local.add_argument("src", type=Path, help="local-backend output (or its final/checkpoint-N)")
    local.add_argument("dst", type=Path, help="Hugging Face folder to write")
    add_flag(local, "--base", type=Path, default=None, metavar="PATH",
             help="base model of a LoRA adapter (default: the adapter's own base_model_name_or_path)")
    add_overwrite_flag(local, "replace a non-empty target folder")
    target = add_command(sub, "prepare-target",
                         "refuse a target that is, holds or lies in the checkpoint, or is not "
                         "empty (unless --overwrite, which empties it)")
    target.add_argument("src", type=Path, help="the checkpoint being exported")
    target.add_argument("dst", type=Path, help="Hugging Face folder to write")
    add_overwrite_flag(target, "remove what a non-empty target holds")
    lora = add_command(sub, "merge-lora", "merge <dst>/lora_adapter left by verl's merger "
                       "(and give the folder's files plain modes)")
    lora.add_argument("dst", type=Path, help="folder verl.model_merger wrote")
    find = add_command(sub, "find-verl", "print the verl actor folder to merge")
    find.add_argument("ckpt", type=Path, help="verl checkpoint folder")
    verify = add_command(sub, "verify", "load an exported folder")
    verify.add_argument("dst", type=Path, help="exported Hugging Face folder")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "local":
            export_local(args.src, args.dst, args.base, args.overwrite)
            print(f"exported {args.dst}")
        elif args.cmd == "prepare-target":
            prepare_target(args.src, args.dst, args.overwrite)
        elif args.cmd == "merge-lora":
            merged = merge_verl_lora(args.dst)
            plain_file_modes(args.dst)
            print(f"merged LoRA adapter into {args.dst}" if merged else "no LoRA adapter")
        elif args.cmd == "find-verl":
            print(find_verl_actor(args.ckpt))
        else:
            print(json.dumps(verify_export(args.dst)))
    except (ExportError, OSError, ValueError) as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
