#!/usr/bin/env bash
# Train with a verl recipe on a GPU cluster (or on this machine's CPU, for debugging), or with the
# local (TRL) backend on CPU / one GPU.
#
#   bash model_train.sh [RECIPE] [--dry-run] [--cpu [--cpu-ranks N]] [hydra overrides...]
#
#   RECIPE        rationanomaly_grpo (default), ppo_gae, sft_lora, any folder in verl_recipes/,
#                 or `local` (GRPO) / `local_sft` (CoT-SFT) for the local backend, or
#                 `local_logneo` (next-key RL: input=DIR model=DIR out=DIR algorithm=ppo ...)
#   --dry-run     print the composed, validated configuration and exit (no Ray, no GPU)
#   --cpu         run the verl recipe on this machine's CPU with verl's real trainer (debugging,
#                 CI): exports the CPU platform's environment and applies its config overlay
#                 (python -m verl_recipes.cpu); your overrides still win over the overlay
#   --cpu-ranks N CPU training processes for --cpu (default 1; implies --cpu)
#   overrides     key=value, e.g. trainer.nnodes=2 logrl.dataset=spirit data.train_batch_size=64
#
# Runs from any folder. Paths are pinned before the run: a relative path you type here is relative
# to your working directory, one from the recipe yaml to the repository root; a model path that is
# no existing local folder is a hub id (Qwen/Qwen2.5-7B-Instruct) and kept as written. Output is
# tee'd to logs/<recipe>-<timestamp>.log, Hydra's run folder is logs/hydra/<recipe>-<timestamp>,
# wandb writes under logs/ (offline unless WANDB_MODE or WANDB_API_KEY is set). LOGRL_PYTHON picks
# the interpreter (default: .venv/bin/python, else python).
# Multi-node: start Ray yourself (see verl_recipes/rationanomaly_grpo/README.md), then run this on
# the head node with RAY_ADDRESS=HEAD:6379 trainer.nnodes=N; it attaches to that cluster and skips
# the local GPU check (the head node needs no GPU).
set -euo pipefail
# Arrays are expanded as ${NAME[@]+"${NAME[@]}"}: before bash 4.4, "${NAME[@]}" of an empty array
# is an "unbound variable" error under set -u (tests/test_model_train_sh.py checks every expansion).

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [[ -n "${LOGRL_PYTHON:-}" ]]; then PY="$LOGRL_PYTHON"
elif [[ -x "$ROOT/.venv/bin/python" ]]; then PY="$ROOT/.venv/bin/python"
else PY="python"; fi

usage() { awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "${BASH_SOURCE[0]}"; }
die() { echo "error: $1" >&2; exit "${2:-2}"; }

RECIPE="rationanomaly_grpo"
RECIPE_SET=0
DRY_RUN=0
CPU=0
CPU_RANKS=1
HAVE_OVERRIDES=0
OVERRIDES=()
while [[ $# -gt 0 ]]; do
  arg="$1"; shift
  case "$arg" in
    -h|--help) usage; exit 0 ;;
    --dry-run) DRY_RUN=1 ;;
    --cpu) CPU=1 ;;
    --cpu-ranks) [[ $# -gt 0 ]] || die "--cpu-ranks needs a number"
                 CPU=1; CPU_RANKS="$1"; shift ;;
    --cpu-ranks=*) CPU=1; CPU_RANKS="${arg#*=}" ;;
    -*) die "unknown option $arg (try --help)" ;;
    *=*|"~"*) OVERRIDES+=("$arg"); HAVE_OVERRIDES=1 ;;
    *) if [[ $RECIPE_SET -eq 0 && $HAVE_OVERRIDES -eq 0 ]]; then
         RECIPE="$arg"; RECIPE_SET=1
       else
         die "unexpected argument '$arg' (overrides are key=value)"
       fi ;;
  esac
done
[[ "$CPU_RANKS" =~ ^[1-9][0-9]*$ ]] || die "--cpu-ranks needs a whole number >= 1, got '$CPU_RANKS'"

export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export TOKENIZERS_PARALLELISM="${TOKENIZERS_PARALLELISM:-false}"
export WANDB_DIR="${WANDB_DIR:-$ROOT/logs}"
if [[ -z "${WANDB_MODE:-}" && -z "${WANDB_API_KEY:-}" ]]; then export WANDB_MODE=offline; fi

mkdir -p "$ROOT/logs"
STAMP="$(date +%Y%m%d-%H%M%S)"
LOG="$ROOT/logs/${RECIPE}-${STAMP}.log"

# Local backend: TRL on CPU or one GPU, same parquet and reward.
case "$RECIPE" in
  local|local_sft)
    [[ $CPU -eq 0 ]] || die "--cpu is for verl recipes; the local backend runs on CPU already"
    MODE="grpo"; [[ "$RECIPE" == "local_sft" ]] && MODE="sft"
    if [[ $DRY_RUN -eq 1 ]]; then
      exec "$PY" -m verl_recipes.local "$MODE" --dry-run ${OVERRIDES[@]+"${OVERRIDES[@]}"}
    fi
    echo "[model_train] local $MODE backend; log: $LOG" >&2
    "$PY" -m verl_recipes.local "$MODE" ${OVERRIDES[@]+"${OVERRIDES[@]}"} 2>&1 | tee "$LOG"
    exit "${PIPESTATUS[0]}"
    ;;
  local_logneo)
    # next-key RL in plain PyTorch (python -m verl_recipes.local.keyseq.rl): key=value becomes
    # --key value, and key= a bare --key flag
    [[ $CPU -eq 0 ]] || die "--cpu is for verl recipes; the local backend runs on CPU already"
    ARGS=()
    for ov in ${OVERRIDES[@]+"${OVERRIDES[@]}"}; do
      [[ "$ov" == *=* && "$ov" != "~"* ]] || die "local_logneo takes key=value settings, got '$ov'"
      if [[ -z "${ov#*=}" ]]; then ARGS+=("--${ov%%=*}"); else ARGS+=("--${ov%%=*}" "${ov#*=}"); fi
    done
    if [[ $DRY_RUN -eq 1 ]]; then
      echo "$PY" -m verl_recipes.local.keyseq.rl ${ARGS[@]+"${ARGS[@]}"}; exit 0
    fi
    echo "[model_train] local next-key RL; log: $LOG" >&2
    "$PY" -m verl_recipes.local.keyseq.rl ${ARGS[@]+"${ARGS[@]}"} 2>&1 | tee "$LOG"
    exit "${PIPESTATUS[0]}"
    ;;
esac

# compose RECIPE --kind prints: kind runner module n_gpus_per_node nnodes
kind_line() { "$PY" -m verl_recipes.compose "$RECIPE" --kind ${OVERRIDES[@]+"${OVERRIDES[@]}"}; }

# --cpu: the CPU platform's environment, and its overlay BEFORE the user's overrides (Hydra applies
# overrides in order and the last one for a key wins, so what the user typed beats the overlay).
if [[ $CPU -eq 1 ]]; then
  CPU_ENV_TEXT="$("$PY" -m verl_recipes.cpu env --recipe "$RECIPE")"
  while IFS= read -r line; do
    if [[ -n "$line" ]]; then export "$line"; fi
  done <<< "$CPU_ENV_TEXT"
  KIND_LINE="$(kind_line)"
  read -r KIND RUNNER MODULE _ <<< "$KIND_LINE"
  ATTACH=()  # attaching to a running Ray cluster: its raylets declare the resources
  if [[ -n "${RAY_ADDRESS:-}" ]]; then ATTACH=(--attach); fi
  OVERLAY_TEXT="$("$PY" -m verl_recipes.cpu overrides "$KIND" --ranks "$CPU_RANKS" --recipe "$RECIPE" \
    ${ATTACH[@]+"${ATTACH[@]}"})"
  mapfile -t OVERLAY <<< "$OVERLAY_TEXT"
  OVERRIDES=(${OVERLAY[@]+"${OVERLAY[@]}"} ${OVERRIDES[@]+"${OVERRIDES[@]}"})
fi

if [[ $DRY_RUN -eq 1 ]]; then
  exec "$PY" -m verl_recipes.compose "$RECIPE" --validate ${OVERRIDES[@]+"${OVERRIDES[@]}"}
fi

if [[ $CPU -eq 1 ]]; then
  NGPUS="$CPU_RANKS"; NNODES=1; UNIT="CPU rank(s)"
else
  KIND_LINE="$(kind_line)"
  read -r KIND RUNNER MODULE NGPUS NNODES <<< "$KIND_LINE"
  UNIT="GPU(s)"
fi

# Where the trainer runs: this CPU (--cpu), an existing Ray cluster (RAY_ADDRESS, Ray recipes
# only: torchrun recipes run here), or this machine's CUDA GPUs. verl has no CPU platform of its
# own and its rollouts are vLLM/SGLang, so without any of these there is nothing to run on.
if [[ $CPU -eq 1 ]]; then
  echo "[model_train] --cpu: $CPU_RANKS CPU rank(s), VERL_PLATFORM=${VERL_PLATFORM:-}" >&2
elif [[ -n "${RAY_ADDRESS:-}" && "$RUNNER" != "torchrun" ]]; then
  echo "[model_train] attaching to the Ray cluster at RAY_ADDRESS=$RAY_ADDRESS (no local GPU check)" >&2
elif ! command -v nvidia-smi >/dev/null 2>&1 || \
     ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  if [[ "$RUNNER" == "torchrun" ]]; then WHERE="$RECIPE runs with torchrun on this machine and needs its GPUs"
  else WHERE="set RAY_ADDRESS=HEAD:6379 to run $RECIPE on a Ray cluster with GPUs"; fi
  die "no CUDA GPU found; verl recipes need GPUs ($WHERE). On this machine use the CPU: \
bash model_train.sh $RECIPE --cpu [overrides]  (verl on CPU, for debugging), or the local backend: \
bash model_train.sh local [overrides]  (or local_sft for CoT-SFT)." 3
fi

# Validate, then pin every path to an absolute value for the Ray workers.
"$PY" -m verl_recipes.compose "$RECIPE" --validate ${OVERRIDES[@]+"${OVERRIDES[@]}"} >/dev/null
FIX_TEXT="$("$PY" -m verl_recipes.compose "$RECIPE" --print-overrides ${OVERRIDES[@]+"${OVERRIDES[@]}"})"
FIXES=()
if [[ -n "$FIX_TEXT" ]]; then mapfile -t FIXES <<< "$FIX_TEXT"; fi
CONFIG_DIR="$ROOT/verl_recipes/$RECIPE"
HYDRA_DIR="$ROOT/logs/hydra/${RECIPE}-${STAMP}"
echo "[model_train] recipe $RECIPE ($KIND, $NNODES node(s) x $NGPUS $UNIT); log: $LOG" >&2

if [[ "$RUNNER" == "torchrun" ]]; then
  CMD=("$PY" -m torch.distributed.run --standalone --nnodes=1 --nproc_per_node="$NGPUS" -m "$MODULE")
else
  CMD=("$PY" -m "$MODULE")
fi
# Hydra's run folder (its .hydra/ and job log) goes under logs/, never into the caller's folder.
${CMD[@]+"${CMD[@]}"} --config-path="$CONFIG_DIR" --config-name="$RECIPE" "hydra.run.dir='$HYDRA_DIR'" \
  ${OVERRIDES[@]+"${OVERRIDES[@]}"} ${FIXES[@]+"${FIXES[@]}"} 2>&1 | tee "$LOG"
exit "${PIPESTATUS[0]}"
