"""model_export.sh: a verl FSDP checkpoint (written on CPU with gloo) and local-backend outputs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from verl_recipes.local import export

REPO = Path(__file__).resolve().parents[1]

# Writes a real verl FSDP actor checkpoint: world size 1 on gloo, FSDP2 on CPU, verl's own
# FSDPCheckpointManager (the class the GPU trainer uses).
FSDP_WRITER = r"""
import os, sys
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[3], RANK="0", WORLD_SIZE="1",
                  LOCAL_RANK="0")
import torch, torch.distributed as dist
from omegaconf import OmegaConf
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from transformers import AutoModelForCausalLM, AutoTokenizer
from verl.utils.checkpoint.fsdp_checkpoint_manager import FSDPCheckpointManager

model_dir, out = sys.argv[1], sys.argv[2]
dist.init_process_group("gloo", rank=0, world_size=1)
torch.manual_seed(0)
model = AutoModelForCausalLM.from_pretrained(model_dir)
with torch.no_grad():
    model.model.embed_tokens.weight.add_(1.0)   # a trained-looking change the export must keep
fully_shard(model, mesh=init_device_mesh("cpu", (1,), mesh_dim_names=("fsdp",)))
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
cfg = OmegaConf.create({"save_contents": ["model", "optimizer", "extra"], "load_contents": ["model"]})
FSDPCheckpointManager(model=model, optimizer=opt, lr_scheduler=None,
                      processing_class=AutoTokenizer.from_pretrained(model_dir),
                      checkpoint_config=cfg).save_checkpoint(out, global_step=3)
dist.destroy_process_group()
"""


def _export(src: Path, dst: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(REPO / "model_export.sh"), str(src), str(dst), *extra],
                          capture_output=True, text=True, timeout=300, cwd=REPO,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})


def _check_loadable(path: Path) -> AutoModelForCausalLM:
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template
    return AutoModelForCausalLM.from_pretrained(path)


@pytest.mark.slow
def test_export_verl_fsdp_checkpoint(tiny_chat_model, tmp_path):
    run_dir = tmp_path / "checkpoints" / "logrl" / "exp"
    actor = run_dir / "global_step_3" / "actor"
    writer = tmp_path / "write_fsdp.py"
    writer.write_text(FSDP_WRITER)
    port = str(29500 + os.getpid() % 400)
    proc = subprocess.run([sys.executable, str(writer), str(tiny_chat_model), str(actor), port],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (actor / "model_world_size_1_rank_0.pt").is_file()
    (run_dir / "latest_checkpointed_iteration.txt").write_text("3")

    out = tmp_path / "hf"
    result = _export(run_dir, out)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "verl FSDP checkpoint" in result.stderr
    model = _check_loadable(out)
    base = AutoModelForCausalLM.from_pretrained(tiny_chat_model)
    got = model.model.embed_tokens.weight.float()
    want = base.model.embed_tokens.weight.float() + 1.0
    assert torch.allclose(got, want, atol=2e-2)  # the merger saves bf16


def test_export_local_full_checkpoint(tiny_chat_model, tmp_path):
    run = tmp_path / "run"
    final = run / "final"
    model = AutoModelForCausalLM.from_pretrained(tiny_chat_model)
    with torch.no_grad():
        model.lm_head.weight.mul_(0.5)
    model.save_pretrained(final)
    AutoTokenizer.from_pretrained(tiny_chat_model).save_pretrained(final)
    result = _export(run, tmp_path / "hf")
    assert result.returncode == 0, result.stderr[-2000:]
    exported = _check_loadable(tmp_path / "hf")
    assert torch.equal(exported.lm_head.weight, model.lm_head.weight)
    assert not list((tmp_path / "hf").glob("*.bin"))


def test_export_local_lora_is_merged(tiny_chat_model, tmp_path):
    from peft import LoraConfig, get_peft_model

    base = AutoModelForCausalLM.from_pretrained(tiny_chat_model)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                 init_lora_weights=False))
    adapter = tmp_path / "run" / "final"
    peft_model.save_pretrained(adapter)
    AutoTokenizer.from_pretrained(tiny_chat_model).save_pretrained(adapter)
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        want = peft_model(ids).logits
    out = export.export_local(tmp_path / "run", tmp_path / "hf", base=Path(tiny_chat_model))
    merged = _check_loadable(out)
    assert not (out / export.ADAPTER_CONFIG).exists()
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, want, atol=1e-4)


def test_export_errors(tmp_path):
    result = _export(tmp_path / "missing", tmp_path / "hf")
    assert result.returncode == 2 and "not found" in result.stderr
    (tmp_path / "empty").mkdir()
    result = _export(tmp_path / "empty", tmp_path / "hf")
    assert result.returncode == 2 and "error:" in result.stderr and "Traceback" not in result.stderr
