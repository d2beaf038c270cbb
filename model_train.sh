#!/usr/bin/env bash
# Train with a verl recipe on a GPU cluster, or with the local (TRL) backend on CPU / one GPU.
#
#   bash model_train.sh [RECIPE] [--dry-run] [hydra overrides...]
#
#   RECIPE      rationanomaly_grpo (default), ppo_gae, sft_lora, any folder in verl_recipes/,
#               or `local` (GRPO) / `local_sft` (CoT-SFT) for the local backend
#   --dry-run   print the composed, validated configuration and exit (no Ray, no GPU)
#   overrides   key=value, e.g. trainer.nnodes=2 logrl.dataset=spirit data.train_batch_size=64
#
# Relative paths (data files, reward file, checkpoint folder) are made absolute; output is tee'd
# to logs/<recipe>-<timestamp>.log; wandb runs offline unless WANDB_MODE or WANDB_API_KEY is set.
# Multi-node: start Ray yourself (see verl_recipes/rationanomaly_grpo/README.md), then run this on the head node with
# trainer.nnodes=N; it attaches to the running cluster (RAY_ADDRESS).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [[ -x "$ROOT/.venv/bin/python" ]]; then PY="$ROOT/.venv/bin/python"; else PY="python"; fi

usage() { sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

RECIPE="rationanomaly_grpo"
RECIPE_SET=0
DRY_RUN=0
OVERRIDES=()
for arg in "$@"; do
  case "$arg" in
    -h|--help) usage; exit 0 ;;
    --dry-run) DRY_RUN=1 ;;
    -*) echo "error: unknown option $arg (try --help)" >&2; exit 2 ;;
    *=*) OVERRIDES+=("$arg") ;;
    *) if [[ $RECIPE_SET -eq 0 && ${#OVERRIDES[@]} -eq 0 ]]; then
         RECIPE="$arg"; RECIPE_SET=1
       else
         echo "error: unexpected argument '$arg' (overrides are key=value)" >&2; exit 2
       fi ;;
  esac
done

export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export TOKENIZERS_PARALLELISM="${TOKENIZERS_PARALLELISM:-false}"
if [[ -z "${WANDB_MODE:-}" && -z "${WANDB_API_KEY:-}" ]]; then export WANDB_MODE=offline; fi

mkdir -p "$ROOT/logs"
LOG="$ROOT/logs/${RECIPE}-$(date +%Y%m%d-%H%M%S).log"

# Local backend: TRL on CPU or one GPU, same parquet and reward.
case "$RECIPE" in
  local|local_sft)
    MODE="grpo"; [[ "$RECIPE" == "local_sft" ]] && MODE="sft"
    if [[ $DRY_RUN -eq 1 ]]; then
      exec "$PY" -m verl_recipes.local "$MODE" --dry-run "${OVERRIDES[@]}"
    fi
    echo "[model_train] local $MODE backend; log: $LOG" >&2
    "$PY" -m verl_recipes.local "$MODE" "${OVERRIDES[@]}" 2>&1 | tee "$LOG"
    exit "${PIPESTATUS[0]}"
    ;;
esac

if [[ $DRY_RUN -eq 1 ]]; then
  exec "$PY" -m verl_recipes.compose "$RECIPE" --validate "${OVERRIDES[@]}"
fi

# A real verl run needs CUDA GPUs (verl has no CPU platform; rollouts are vLLM/SGLang).
if ! command -v nvidia-smi >/dev/null 2>&1 || \
   ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "error: no CUDA GPU found; verl recipes need GPUs. On CPU or one small GPU use the local" \
       "backend: bash model_train.sh local [overrides]  (or local_sft for CoT-SFT)." >&2
  exit 3
fi

# Validate, then pin every path to an absolute value for the Ray workers.
"$PY" -m verl_recipes.compose "$RECIPE" --validate "${OVERRIDES[@]}" >/dev/null
mapfile -t FIXES < <("$PY" -m verl_recipes.compose "$RECIPE" --print-overrides "${OVERRIDES[@]}")
read -r KIND RUNNER MODULE NGPUS NNODES < <("$PY" -m verl_recipes.compose "$RECIPE" --kind "${OVERRIDES[@]}")
CONFIG_DIR="$ROOT/verl_recipes/$RECIPE"
echo "[model_train] recipe $RECIPE ($KIND, $NNODES node(s) x $NGPUS GPU(s)); log: $LOG" >&2

if [[ "$RUNNER" == "torchrun" ]]; then
  CMD=("$PY" -m torch.distributed.run --standalone --nnodes=1 --nproc_per_node="$NGPUS" -m "$MODULE")
else
  CMD=("$PY" -m "$MODULE")
fi
"${CMD[@]}" --config-path="$CONFIG_DIR" --config-name="$RECIPE" "${OVERRIDES[@]}" "${FIXES[@]}" 2>&1 | tee "$LOG"
exit "${PIPESTATUS[0]}"
