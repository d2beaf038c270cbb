"""model_export.sh: verl FSDP checkpoints (PPO actor, SFT trainer; written on CPU, gloo) and local outputs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from verl_recipes.cpu import cpu_env, cpu_overrides
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


def _free_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


def _sft_messages(path: Path, rows: int = 8) -> Path:
    labels = ("normal", "abnormal")
    pd.DataFrame({"messages": [[
        {"role": "system", "content": "Classify the log line."},
        {"role": "user", "content": f"node {i} kernel {'panic' if i % 2 else 'heartbeat ok'}"},
        {"role": "assistant", "content": f"<think>line {i}</think><answer>{labels[i % 2]}</answer>"},
    ] for i in range(rows)]}).to_parquet(path)
    return path


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


@pytest.mark.slow
def test_export_verl_sft_lora_checkpoint(tiny_chat_model, tmp_path):
    """verl's SFT trainer, run with the sft_lora recipe for one step, exports to a merged HF model.

    Layout written (no ``actor/``): ``<run>/latest_checkpointed_iteration.txt`` and
    ``<run>/global_step_1/{model,optim,extra_state}_world_size_1_rank_0.pt, fsdp_config.json,
    lora_train_meta.json, data_0.pt, huggingface/`` (config + tokenizer, no weights). The model
    shard holds the peft-wrapped state dict (``base_model.model.…base_layer.weight`` and
    ``lora_A/lora_B.default.weight``); the merger splits it into base weights and ``lora_adapter``.
    """
    run_dir = tmp_path / "checkpoints" / "logrl" / "sft_lora_test"
    overrides = [
        f"--config-path={REPO / 'verl_recipes' / 'sft_lora'}", "--config-name=sft_lora",
        *cpu_overrides("sft"),  # verl's trainer on CPU through the project's platform plugin
        f"model.path={tiny_chat_model}", f"data.train_files={_sft_messages(tmp_path / 'sft.parquet')}",
        "data.train_batch_size=4", "data.micro_batch_size_per_gpu=2",
        "data.max_length=128", "trainer.logger=[console]",
        "trainer.total_training_steps=1", f"trainer.default_local_dir={run_dir}",
        "model.enable_gradient_checkpointing=false", f"hydra.run.dir={tmp_path / 'hydra'}",
        # one visible step: no warm-up (lr would be 0 at step 1) and a large lr moves lora_B off 0
        "optim.lr=0.1", "optim.lr_warmup_steps_ratio=0",
    ]
    env = {**os.environ, **cpu_env(), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled",
           "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
         "-m", "verl.trainer.sft_trainer", *overrides],
        capture_output=True, text=True, timeout=240, cwd=tmp_path, env=env,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]

    step = run_dir / "global_step_1"
    assert (run_dir / "latest_checkpointed_iteration.txt").read_text().strip() == "1"
    for name in ("model_world_size_1_rank_0.pt", "fsdp_config.json", "lora_train_meta.json",
                 "huggingface/config.json", "huggingface/tokenizer_config.json"):
        assert (step / name).is_file(), name
    assert not (step / "actor").exists()
    assert export.find_verl_actor(run_dir) == step

    shard = torch.load(step / "model_world_size_1_rank_0.pt", map_location="cpu", weights_only=False)
    prefix = "base_model.model.model.layers.0.self_attn.q_proj."
    base_w, lora_a, lora_b = (shard[prefix + k].to_local().float() for k in
                              ("base_layer.weight", "lora_A.default.weight", "lora_B.default.weight"))
    assert lora_b.abs().max() > 0  # the step trained the adapter (lora_B starts at zero)
    scale = 32 / 16  # sft_lora.yaml: lora_alpha / lora_rank
    want = base_w + scale * lora_b @ lora_a

    out = tmp_path / "hf"
    result = _export(run_dir, out)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "verl FSDP checkpoint" in result.stderr and "merged LoRA adapter" in result.stdout
    assert not (out / "lora_adapter").exists() and not (out / export.ADAPTER_CONFIG).exists()
    got = _check_loadable(out).model.layers[0].self_attn.q_proj.weight.float()
    assert (want - base_w).abs().max() > 0.01  # the adapter's change is well above bf16 rounding
    assert torch.allclose(got, want, atol=2e-3)


# ---------------------------------------------------------------------------------------------
# Target folder checks and file modes (issue 11, item 5.3 and 5.4)
# ---------------------------------------------------------------------------------------------


def _local_run(tiny_chat_model: Path, run: Path) -> Path:
    """A local-backend output folder with a full model in final/."""
    final = run / "final"
    AutoModelForCausalLM.from_pretrained(tiny_chat_model).save_pretrained(final)
    AutoTokenizer.from_pretrained(tiny_chat_model).save_pretrained(final)
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    return run


def _tree(path: Path) -> dict[str, int]:
    return {str(p.relative_to(path)): p.stat().st_size for p in sorted(path.rglob("*"))}


def _module_export(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "verl_recipes.local.export", *args],
                          capture_output=True, text=True, timeout=300, cwd=REPO,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})


def _one_line_error(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    lines = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert all(w in lines[0] for w in words), lines[0]


def test_export_never_writes_into_its_source(tiny_chat_model, tmp_path):
    run = _local_run(tiny_chat_model, tmp_path / "run")
    before = _tree(run)
    for dst in (run, run / "final", run / "exported", tmp_path):  # itself, inside, holding it
        for extra in ((), ("--overwrite",)):
            _one_line_error(_export(run, dst, *extra), "source")
            _one_line_error(_module_export("local", str(run), str(dst), *extra), "source")
    assert _tree(run) == before
    assert not (run / "exported").exists()


def test_export_refuses_a_non_empty_target(tiny_chat_model, tmp_path):
    run = _local_run(tiny_chat_model, tmp_path / "run")
    data = tmp_path / "data"
    data.mkdir()
    pd.DataFrame({"x": [1]}).to_parquet(data / "train.parquet")
    _one_line_error(_export(run, data), "not empty", "--overwrite")
    _one_line_error(_module_export("local", str(run), str(data)), "not empty", "--overwrite")
    assert sorted(p.name for p in data.iterdir()) == ["train.parquet"]

    result = _export(run, data, "--overwrite")
    assert result.returncode == 0, result.stderr[-2000:]
    assert not (data / "train.parquet").exists()
    _check_loadable(data)
    (tmp_path / "empty").mkdir()  # an empty folder is fine without --overwrite
    assert _export(run, tmp_path / "empty").returncode == 0


def test_exported_files_have_plain_modes(tiny_chat_model, tmp_path):
    """Files land with the mode a plain open() gives (umask applied), not mkstemp's 0600."""
    run = _local_run(tiny_chat_model, tmp_path / "run")
    result = _module_export("local", str(run), str(tmp_path / "hf"))
    assert result.returncode == 0, result.stderr[-2000:]
    plain = tmp_path / "plain"
    with open(plain, "w"):
        pass
    want = plain.stat().st_mode & 0o777
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "hf").iterdir()}
    assert "model.safetensors" in modes
    assert modes == {name: want for name in modes}


def test_export_verl_checkpoint_target_checks(tmp_path):
    """The verl path checks the target before verl's merger writes anything."""
    ckpt = tmp_path / "checkpoints" / "exp"
    actor = ckpt / "global_step_3" / "actor"
    actor.mkdir(parents=True)
    (actor / "model_world_size_1_rank_0.pt").write_bytes(b"")  # found, never read: refused first
    (ckpt / "latest_checkpointed_iteration.txt").write_text("3")
    before = _tree(ckpt)
    for dst in (ckpt, actor, ckpt / "hf"):
        _one_line_error(_export(ckpt, dst, "--overwrite"), "source")
    full = tmp_path / "full"
    full.mkdir()
    (full / "notes.txt").write_text("keep me")
    _one_line_error(_export(ckpt, full), "not empty")
    assert (full / "notes.txt").read_text() == "keep me"
    assert _tree(ckpt) == before
